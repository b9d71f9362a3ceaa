/**
 * Where the control-plane binaries built by `make tools` live. The folder name is keyed by
 * the versions pinned in tools/versions.env, so the harness always runs what was pinned.
 */
import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

export const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), "../..");

export type Tool =
  | "etcd"
  | "kube-apiserver"
  | "kube-controller-manager"
  | "kube-scheduler"
  | "kubectl"
  | "kwok"
  | "helm";

let cachedDir: string | undefined;

export function toolsDir(): string {
  cachedDir ??= execFileSync("bash", [join(repoRoot, "tools/build-tools.sh"), "--print-dir"], {
    encoding: "utf8",
  }).trim();
  return cachedDir;
}

export function toolPath(tool: Tool): string {
  const path = join(toolsDir(), tool);
  if (!existsSync(path)) {
    throw new Error(`${tool} is not built (looked for ${path}); run \`make tools\` first`);
  }
  return path;
}
