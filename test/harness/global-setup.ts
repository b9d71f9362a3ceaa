/**
 * vitest global setup of the integration project: one control plane per test run, shared by
 * every test file (each test works in namespaces of its own). Torn down when the run ends,
 * whether tests passed or failed; the process registry kills anything left on Ctrl-C.
 */
import type { TestProject } from "vitest/node";
import { ControlPlane } from "./controlplane.js";

declare module "vitest" {
  export interface ProvidedContext {
    kubeconfigPath: string;
  }
}

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const controlPlane = new ControlPlane();
  const stopOnSignal = () => void controlPlane.stop().finally(() => process.exit(130));
  process.once("SIGINT", stopOnSignal);
  process.once("SIGTERM", stopOnSignal);
  try {
    await controlPlane.start();
  } catch (err) {
    await controlPlane.stop();
    throw err;
  }
  project.provide("kubeconfigPath", controlPlane.kubeconfigPath);
  return async () => {
    process.off("SIGINT", stopOnSignal);
    process.off("SIGTERM", stopOnSignal);
    await controlPlane.stop();
  };
}
