/**
 * The finalizer: while it is on a PoolPolicy, deleting the policy waits until the operator
 * removed the env it injected. Patches carry the resourceVersion, so a concurrent edit makes
 * them fail with 409 (retried with a fresh object) instead of silently dropping someone's
 * finalizer.
 */
import { PatchStrategy, setHeaderOptions, type CustomObjectsApi } from "@kubernetes/client-node";
import { GROUP, PLURAL, VERSION, type PoolPolicy } from "../api/schema.js";

export const FINALIZER = `${GROUP}/cleanup`;

async function patchFinalizers(
  custom: CustomObjectsApi,
  policy: PoolPolicy,
  finalizers: string[],
): Promise<PoolPolicy> {
  return (await custom.patchNamespacedCustomObject(
    {
      group: GROUP,
      version: VERSION,
      plural: PLURAL,
      namespace: policy.metadata.namespace,
      name: policy.metadata.name,
      body: { metadata: { finalizers, resourceVersion: policy.metadata.resourceVersion } },
    },
    setHeaderOptions("Content-Type", PatchStrategy.MergePatch),
  )) as PoolPolicy;
}

/** Returns the policy as the API server stored it, finalizer included. */
export function ensureFinalizer(custom: CustomObjectsApi, policy: PoolPolicy): Promise<PoolPolicy> {
  return patchFinalizers(custom, policy, [...(policy.metadata.finalizers ?? []), FINALIZER]);
}

export async function removeFinalizer(custom: CustomObjectsApi, policy: PoolPolicy): Promise<void> {
  await patchFinalizers(
    custom,
    policy,
    (policy.metadata.finalizers ?? []).filter((f) => f !== FINALIZER),
  );
}
