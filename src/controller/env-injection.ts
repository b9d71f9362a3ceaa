/**
 * Injecting the pool settings into target Deployments with server-side apply.
 *
 * Each PoolPolicy applies with a field manager of its own (fieldManagerFor). The apply
 * configuration names only the env entries it sets, so SSA records exactly those fields as
 * ours; applying an empty configuration with the same manager later removes exactly them and
 * nothing another manager owns. `force` takes the two entries over from whoever set them
 * before (the operator is their declared owner). The pod-template change rolls the Deployment.
 */
import type { V1Deployment, V1EnvVar } from "@kubernetes/client-node";
import type { PoolPolicySpec } from "../api/schema.js";

export const FIELD_MANAGER_PREFIX = "poolpolicy-operator";

export function fieldManagerFor(policyName: string): string {
  return `${FIELD_MANAGER_PREFIX}/${policyName}`.slice(0, 128);
}

export function desiredEnv(pool: PoolPolicySpec["pool"]): V1EnvVar[] {
  return [
    { name: pool.env.min, value: String(pool.minSize) },
    { name: pool.env.max, value: String(pool.maxSize) },
  ];
}

/** The containers to inject into: the named ones that exist, or every container when none is named. */
export function selectContainers(deployment: V1Deployment, wanted: readonly string[]): string[] {
  const present = (deployment.spec?.template.spec?.containers ?? []).map((c) => c.name);
  return wanted.length === 0 ? present : present.filter((name) => wanted.includes(name));
}

export function isInjected(deployment: V1Deployment, containers: readonly string[], env: readonly V1EnvVar[]): boolean {
  const byName = new Map((deployment.spec?.template.spec?.containers ?? []).map((c) => [c.name, c]));
  return containers.every((name) => {
    const current = byName.get(name)?.env ?? [];
    return env.every((want) =>
      current.some((have) => have.name === want.name && have.value === want.value && !have.valueFrom),
    );
  });
}

/** The SSA body that sets our env entries in the given containers, and the annotations given (ours too). */
export function injectionApplyConfig(
  deployment: V1Deployment,
  containers: readonly string[],
  env: readonly V1EnvVar[],
  annotations?: Record<string, string>,
): object {
  return {
    apiVersion: "apps/v1",
    kind: "Deployment",
    metadata: { name: deployment.metadata!.name, namespace: deployment.metadata!.namespace, annotations },
    spec: { template: { spec: { containers: containers.map((name) => ({ name, env })) } } },
  };
}

/** The SSA body that owns nothing: applying it removes every field this manager set before. */
export function removalApplyConfig(name: string, namespace: string): object {
  return { apiVersion: "apps/v1", kind: "Deployment", metadata: { name, namespace } };
}

/** Whether `manager` owns any field of the Deployment (then a removal apply has work to do). */
export function ownsFields(deployment: V1Deployment, manager: string): boolean {
  return (deployment.metadata?.managedFields ?? []).some((f) => f.manager === manager && f.operation === "Apply");
}
