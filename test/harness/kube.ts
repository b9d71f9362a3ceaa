/**
 * Small helpers over @kubernetes/client-node that tests and the demo share: namespaces per
 * test, rollout waits, and reading the admin kubeconfig the control plane wrote.
 */
import { randomBytes } from "node:crypto";
import { AppsV1Api, CoreV1Api, KubeConfig, type V1Deployment, type V1StatefulSet } from "@kubernetes/client-node";
import { waitFor } from "./processes.js";
import { deploymentRolledOut, statefulSetRolledOut } from "../../src/controller/rollout.js";

export function loadKubeConfig(path: string): KubeConfig {
  const kc = new KubeConfig();
  kc.loadFromFile(path);
  return kc;
}

/** Creates a namespace with a unique name; each test gets its own, so tests cannot see each other. */
export async function createNamespace(
  kc: KubeConfig,
  prefix = "t",
  labels: Record<string, string> = {},
): Promise<string> {
  const name = `${prefix}-${randomBytes(3).toString("hex")}`;
  await kc.makeApiClient(CoreV1Api).createNamespace({ body: { metadata: { name, labels } } });
  return name;
}

export async function deleteNamespace(kc: KubeConfig, name: string): Promise<void> {
  await kc
    .makeApiClient(CoreV1Api)
    .deleteNamespace({ name })
    .catch(() => undefined);
}

export async function waitForDeployment(
  kc: KubeConfig,
  namespace: string,
  name: string,
  timeoutMs = 120_000,
): Promise<V1Deployment> {
  const apps = kc.makeApiClient(AppsV1Api);
  let latest: V1Deployment | undefined;
  await waitFor(
    `Deployment ${namespace}/${name} to roll out`,
    async () => {
      latest = await apps.readNamespacedDeployment({ name, namespace });
      return deploymentRolledOut(latest);
    },
    { timeoutMs },
  );
  return latest!;
}

export async function waitForStatefulSet(
  kc: KubeConfig,
  namespace: string,
  name: string,
  timeoutMs = 120_000,
): Promise<V1StatefulSet> {
  const apps = kc.makeApiClient(AppsV1Api);
  let latest: V1StatefulSet | undefined;
  await waitFor(
    `StatefulSet ${namespace}/${name} to roll out`,
    async () => {
      latest = await apps.readNamespacedStatefulSet({ name, namespace });
      return statefulSetRolledOut(latest);
    },
    { timeoutMs },
  );
  return latest!;
}
