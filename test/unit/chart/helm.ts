/**
 * Running the pinned helm (built by tools/build-tools.sh) against charts/poolpolicy-operator,
 * for the chart's unit tests (helm lint / helm template) and its integration test (helm install
 * against the test control plane).
 */
import { execFile } from "node:child_process";
import { readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { loadAll } from "js-yaml";
import { repoRoot, toolPath } from "../../harness/tools.js";

export const chartDir = join(repoRoot, "charts/poolpolicy-operator");

/**
 * The Kubernetes version `helm template` renders for. Needed because the helm we build with
 * `go install` lacks the release build's ldflags that set its default capabilities, so it
 * assumes Kubernetes v1.20.0 and the chart's kubeVersion (>=1.29) would refuse to render.
 * The version pinned for the test control plane is the honest choice.
 */
export const kubeVersion = /^KUBERNETES_VERSION=(\S+)$/m.exec(
  readFileSync(join(repoRoot, "tools/versions.env"), "utf8"),
)![1]!;

/**
 * Helm's config, cache and data under one fixed folder of the temp dir, so that tests never read
 * the user's ~/.config/helm (repositories, plugins). Fixed rather than per run: lint, template
 * and install of a local chart write nothing there, so nothing accumulates and nothing needs
 * cleaning up.
 */
const helmHome = join(tmpdir(), "poolpolicy-operator-helm-home");
const helmEnv = {
  ...process.env,
  HELM_CONFIG_HOME: join(helmHome, "config"),
  HELM_CACHE_HOME: join(helmHome, "cache"),
  HELM_DATA_HOME: join(helmHome, "data"),
};

export interface HelmResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs helm; never throws on a non-zero exit (callers assert on `code` and `stderr`). */
export function runHelm(args: string[], timeoutMs = 120_000): Promise<HelmResult> {
  return new Promise((resolve) => {
    execFile(
      toolPath("helm"),
      args,
      { env: helmEnv, timeout: timeoutMs, maxBuffer: 16 << 20 },
      (err, stdout, stderr) => {
        const code = err ? (typeof err.code === "number" ? err.code : 1) : 0;
        resolve({ code, stdout, stderr });
      },
    );
  });
}

/** Like runHelm, but a failure throws with helm's stderr in the message. */
export async function helmOk(args: string[], timeoutMs?: number): Promise<string> {
  const result = await runHelm(args, timeoutMs);
  if (result.code !== 0) throw new Error(`helm ${args.join(" ")} failed (exit ${result.code}):\n${result.stderr}`);
  return result.stdout;
}

/** A rendered Kubernetes object, loosely typed: tests index into it and assert. */
export type Manifest = Record<string, any>;

export const templateArgs = (extra: string[] = [], release = "ppo", namespace = "ops") => [
  "template",
  release,
  chartDir,
  "--namespace",
  namespace,
  "--kube-version",
  kubeVersion,
  ...extra,
];

/** `helm template` with the given extra arguments (e.g. ["--set", "replicaCount=2"]), parsed. */
export async function renderChart(extra: string[] = [], release = "ppo", namespace = "ops"): Promise<Manifest[]> {
  const yaml = await helmOk(templateArgs(extra, release, namespace));
  return loadAll(yaml).filter((doc): doc is Manifest => doc !== null && typeof doc === "object");
}

export function findObject(objects: Manifest[], kind: string, name?: string): Manifest {
  const found = objects.find((o) => o.kind === kind && (name === undefined || o.metadata?.name === name));
  if (!found)
    throw new Error(
      `no ${kind}${name ? ` ${name}` : ""} in the rendered chart (kinds: ${objects.map((o) => o.kind).join(", ")})`,
    );
  return found;
}
