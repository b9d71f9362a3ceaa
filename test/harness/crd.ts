/**
 * Installs a CRD and waits until the API serves it: the PoolPolicy CRD (the committed, generated
 * file), and the Postgres operators' CRDs as their projects publish them (tools/fetch-crds.sh):
 * CloudNativePG's Cluster, Zalando's postgresql.
 */
import { execFileSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import {
  ApiextensionsV1Api,
  loadYaml,
  type KubeConfig,
  type V1CustomResourceDefinition,
} from "@kubernetes/client-node";
import { waitFor } from "./processes.js";
import { repoRoot } from "./tools.js";

export function installPoolPolicyCrd(kc: KubeConfig): Promise<void> {
  return installCrd(kc, join(repoRoot, "crds/pooling.dbops.io_poolpolicies.yaml"));
}

/** CloudNativePG's published Cluster CRD (postgresql.cnpg.io/v1), the version tools/versions.env pins. */
export function installCloudNativePgCrd(kc: KubeConfig): Promise<void> {
  return installCrd(kc, fetchedCrd("cnpg", "CloudNativePG's Cluster CRD"));
}

/** Zalando's published postgresql CRD (acid.zalan.do/v1), the version tools/versions.env pins. */
export function installZalandoCrd(kc: KubeConfig): Promise<void> {
  return installCrd(kc, fetchedCrd("zalando", "Zalando's postgresql CRD"));
}

function fetchedCrd(name: "cnpg" | "zalando", what: string): string {
  const path = execFileSync("bash", [join(repoRoot, "tools/fetch-crds.sh"), "--print-path", name], {
    encoding: "utf8",
  }).trim();
  if (!existsSync(path)) throw new Error(`${what} is not fetched (looked for ${path}); run \`make tools\` first`);
  return path;
}

async function installCrd(kc: KubeConfig, path: string): Promise<void> {
  // loadYaml maps the YAML's JSON names (x-kubernetes-validations, …) to the client's property
  // names; a plain YAML object would have them silently dropped by the client's serializer.
  const crd = loadYaml<V1CustomResourceDefinition>(readFileSync(path, "utf8"));
  const api = kc.makeApiClient(ApiextensionsV1Api);
  const name = crd.metadata!.name!;
  // Test files run in parallel and each installs the CRD: a 409 (it exists, or someone replaced
  // it between our read and our write) means read again and replace.
  await waitFor(`CRD ${name} to be installed`, async () => {
    try {
      await api.createCustomResourceDefinition({ body: crd });
      return true;
    } catch (err) {
      if ((err as { code?: number }).code !== 409) throw err;
    }
    const existing = await api.readCustomResourceDefinition({ name });
    try {
      await api.replaceCustomResourceDefinition({
        name,
        body: { ...crd, metadata: { ...crd.metadata, resourceVersion: existing.metadata?.resourceVersion } },
      });
      return true;
    } catch (err) {
      if ((err as { code?: number }).code === 409) return false;
      throw err;
    }
  });
  await waitFor(`CRD ${name} to be established`, async () => {
    const current = await api.readCustomResourceDefinition({ name });
    return current.status?.conditions?.some((c) => c.type === "Established" && c.status === "True") ?? false;
  });
}
