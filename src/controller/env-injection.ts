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

/** Where a via: Pooler policy's apps connect: the pooler's Service (server/pooler.ts poolerAddress). */
export interface PoolerRoute {
  host: string;
  port: number;
}

/**
 * Marks a Deployment whose apps this policy pointed at a pooler: "host:port", set by the same
 * server-side apply as the env entries, so it goes with them. Why it exists: when the route is
 * withdrawn (the pooler is gone, or via is Direct again), the entries that remain wanted (min,
 * max) are all still there, and only this tells that the apply that removes host and port is due.
 * It lives on the Deployment, not in the policy's status, so that a crash between the apply and
 * the status write cannot lose it.
 */
export const POOLER_ROUTE_ANNOTATION = "pooling.dbops.io/pooler-route";

/** The pool env of a policy; with a route, also where its apps connect (spec.pool.env.host and .port). */
export function desiredEnv(pool: PoolPolicySpec["pool"], route?: PoolerRoute): V1EnvVar[] {
  const env = [
    { name: pool.env.min, value: String(pool.minSize) },
    { name: pool.env.max, value: String(pool.maxSize) },
  ];
  if (route) env.push({ name: pool.env.host, value: route.host }, { name: pool.env.port, value: String(route.port) });
  return env;
}

/** The annotation value for a route, undefined for none. */
export function routeAnnotationValue(route: PoolerRoute | undefined): string | undefined {
  return route && `${route.host}:${route.port}`;
}

/** Whether the Deployment's pooler route (the annotation) is the one wanted, none included. */
export function routeIsCurrent(deployment: V1Deployment, route: PoolerRoute | undefined): boolean {
  return deployment.metadata?.annotations?.[POOLER_ROUTE_ANNOTATION] === routeAnnotationValue(route);
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
