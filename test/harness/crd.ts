/**
 * Installs the PoolPolicy CRD (the committed, generated file) and waits until the API serves it.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import {
  ApiextensionsV1Api,
  loadYaml,
  type KubeConfig,
  type V1CustomResourceDefinition,
} from "@kubernetes/client-node";
import { waitFor } from "./processes.js";
import { repoRoot } from "./tools.js";

export async function installPoolPolicyCrd(kc: KubeConfig): Promise<void> {
  // loadYaml maps the YAML's JSON names (x-kubernetes-validations, …) to the client's property
  // names; a plain YAML object would have them silently dropped by the client's serializer.
  const crd = loadYaml<V1CustomResourceDefinition>(
    readFileSync(join(repoRoot, "crds/pooling.dbops.io_poolpolicies.yaml"), "utf8"),
  );
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
