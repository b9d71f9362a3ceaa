/**
 * The pooler of the server (issue 17), as the PoolerSized condition of every policy that takes
 * part in a pooler (the one declaring it, and those whose spec.pool.via is Pooler), and its
 * objects applied by the declaring policy's pass. Policies that have nothing to do with a pooler
 * get no such condition (and lose a stale one), so that servers without a pooler read exactly as
 * before.
 *
 * Who applies: the first declaring policy (server/pooler.ts sorts them), with its own
 * credentials for the auth_file; it owns the objects (pooler/pooler-objects.ts says what its
 * deletion does). Other policies of the server compute the same sizes and report them.
 *
 * A pooler that does not fit is never rolled out: on a refusal nothing is applied and the objects
 * already there are left as they are (their sizes were proven for the budget they were applied
 * under; the refusal says what to change). A shrink of the per-pod cap rolls the pods, a growth
 * does not (pooler-objects.ts, POOLER_CAP_ANNOTATION). The apps of via: Pooler policies are
 * pointed at it once it has an available pod (poolerRouting; targets.ts applies the route). Not
 * done yet (docs/pooler.md): deleting the objects when spec.pooler is removed or renamed.
 *
 * The max_connections the pooler is sized against is the lower of the value in force and the
 * value the policies ask for: a pooler sized for a raise not yet applied would exceed the
 * server until the restart, and one sized for the current value would exceed it after a lowering.
 */
import { statusCodeOf } from "../kube/errors.js";
import { renderPgBouncerConfig } from "../pooler/pgbouncer-config.js";
import {
  liveTemplateCap,
  POOLER_AUTH_FILE,
  podTemplateCap,
  poolerObjects,
  poolerSecretName,
} from "../pooler/pooler-objects.js";
import { type PoolerSpec, poolerAddress, poolerPlanInput, poolerProblem, serverPooler } from "../server/pooler.js";
import { explainSizing, planPooler } from "../server/pooler-plan.js";
import { type ConditionUpdate, findCondition } from "./conditions.js";
import { type PoolerRoute, routeIsCurrent } from "./env-injection.js";
import type { Pass, ServerView } from "./pass.js";
import { PoolerObjectConflict } from "./pooler-apply.js";
import type { KubernetesPort } from "./ports.js";

export const POOLER_CONDITION = "PoolerSized" as const;

/** What the pooler consists of, in the words of its condition (names and shape, never the auth_file). */
function objectsPhrase(namespace: string, spec: PoolerSpec): string {
  return (
    `Deployment ${namespace}/${spec.name} (${spec.replicas} replicas, maxSurge ${spec.maxSurge}, image ${spec.image}), ` +
    `Service ${spec.name}:${spec.port}, ConfigMap ${spec.name}, Secret ${poolerSecretName(spec.name)}`
  );
}

/** Where this policy's apps connect: through the pooler (`route`), or directly while it is `waiting`. */
export interface PoolerRouting {
  route?: PoolerRoute;
  /** Why a via: Pooler policy's apps are not pointed at the pooler (yet); undefined when they are or need not be. */
  waiting?: string;
  /** With a route: the pooler has no available pod at the moment. */
  unavailable?: string;
}

/**
 * The route of a via: Pooler policy's apps: the pooler's Service, once its Deployment has had an
 * available pod. Before that (just declared, refused before it ever ran) the apps keep their own
 * configuration, the server: pointed at a Service with no PgBouncer behind it, every new
 * connection would fail, which is worse than the over-commit the pooler exists to prevent (the
 * budget still counts these apps at their full worst case, docs/pooler.md). Once routed, the apps
 * stay on it while its Deployment exists, available or not: rolling every pooled app back to the
 * server and forth again each time PgBouncer's pods come and go (an eviction, a crash loop) would
 * be a restart loop of the apps. Withdrawn when the pooler is no longer declared or its Deployment
 * is gone. Costs one GET of the pooler's Deployment, for via: Pooler policies only.
 */
export async function poolerRouting(
  kube: Pick<KubernetesPort, "readPoolerDeployment" | "deployments">,
  pass: Pick<Pass, "key" | "spec" | "policy" | "selector">,
  view: Pick<ServerView, "peers">,
): Promise<PoolerRouting> {
  if (pass.spec.pool.via !== "Pooler") return {};
  const pooler = serverPooler(view.peers);
  if (pooler.kind !== "declared") return {};
  const live = await kube.readPoolerDeployment(pooler.namespace, pooler.spec.name);
  const where = `Deployment ${pooler.namespace}/${pooler.spec.name}`;
  if (!live) return { waiting: `the apps connect directly until ${where} exists and has an available pod` };
  const route = poolerAddress(pooler);
  if ((live.status?.availableReplicas ?? 0) > 0) return { route };
  const targets = await kube.deployments(pass.key, pass.policy.metadata.namespace, pass.selector);
  if (targets.some((d) => routeIsCurrent(d, route))) {
    return { route, unavailable: `${where} has no available pod now: the apps stay pointed at it and wait` };
  }
  return { waiting: `the apps connect directly until ${where} has an available pod` };
}

/** What the Sized message adds about this policy's apps: where they connect. */
function routeNote(spec: Pass["spec"], { route, waiting, unavailable }: PoolerRouting): string {
  if (!route) return waiting ? `; ${waiting}` : "";
  const { host, port } = spec.pool.env;
  const through = `; this policy's apps connect through it (${host}=${route.host}, ${port}=${route.port})`;
  return unavailable ? `${through}; ${unavailable}` : through;
}

/** The PoolerSized condition of this policy, or undefined when it takes no part in a pooler; applies the pooler on its declarer's pass. */
export async function poolerStep(
  kube: Pick<KubernetesPort, "applyPooler" | "readPoolerDeployment">,
  pass: Pick<Pass, "key" | "spec" | "server" | "policy" | "previous">,
  view: ServerView,
  routing: PoolerRouting = {},
): Promise<ConditionUpdate | undefined> {
  // Most policies take no part in a pooler: answered before anything about the server's peers is computed.
  if (pass.spec.pooler === undefined && pass.spec.pool.via !== "Pooler") return undefined;
  const self = view.peers.find((p) => p.key === pass.key) ?? { key: pass.key, namespace: "", spec: pass.spec };
  const pooler = serverPooler(view.peers);
  const type = POOLER_CONDITION;
  const problem = poolerProblem(self, pooler);
  if (problem) {
    // Went through a pooler a pass ago: its declaring policy was deleted (the garbage collector
    // takes the objects it owns) or no longer declares it. Say so, not just "not declared".
    const before = findCondition(pass.previous.conditions, type);
    const gone =
      problem.reason === "PoolerNotDeclared" && before?.status === "True"
        ? "the pooler this policy went through is no longer declared by any policy of this server (deleting the declaring policy deletes the pooler's objects: it owns them); "
        : "";
    return { type, status: "False", reason: problem.reason, message: gone + problem.message };
  }
  if (pooler.kind !== "declared") return undefined;
  if (!view.budget || !view.facts || !view.connection.ok) {
    return {
      type,
      status: "Unknown",
      reason: "PostgresUnreachable",
      message:
        "cannot size the pooler: the server's max_connections and budget are not known (PostgreSQL is not reachable); nothing is applied",
    };
  }
  const inForce = view.facts.maxConnections;
  const maxConnections = view.desired.kind === "value" ? Math.min(inForce, view.desired.value) : inForce;
  const plan = planPooler(poolerPlanInput(pooler, view.budget, maxConnections), pass.server);
  const name = `pooler ${pooler.namespace}/${pooler.spec.name}`;
  if (plan.kind === "refused") {
    return {
      type,
      status: "False",
      reason: plan.reason,
      message: `${name} is not rolled out (nothing applied, objects already there left as they are): ${plan.message}`,
    };
  }
  const applier = pooler.declaredBy[0]!;
  const sized: ConditionUpdate = {
    type,
    status: "True",
    reason: "Sized",
    message: `${name}: ${objectsPhrase(pooler.namespace, pooler.spec)}, applied by ${applier}; per pod: ${explainSizing(plan)}${routeNote(pass.spec, routing)}`,
  };
  if (pass.key !== applier) return sized;

  const config = renderPgBouncerConfig({
    target: view.connection.target,
    databases: pooler.databases,
    sizing: plan,
    poolMode: pooler.spec.poolMode,
    listen: { address: "*", port: pooler.spec.port },
    authFile: POOLER_AUTH_FILE,
  });
  if (!config.ok) {
    return {
      type,
      status: "False",
      reason: "PoolerConfigInvalid",
      message: `${name} is not rolled out: ${config.message}`,
    };
  }
  const { metadata, apiVersion, kind } = pass.policy;
  const owner = { apiVersion, kind, name: metadata.name, namespace: metadata.namespace, uid: metadata.uid ?? "" };
  try {
    // The declaring policy's pass only: one GET of the pooler's Deployment, for the cap its pods run with.
    const live = liveTemplateCap(await kube.readPoolerDeployment(pooler.namespace, pooler.spec.name));
    await kube.applyPooler(poolerObjects(owner, pooler.spec, config, podTemplateCap(plan.maxDbConnections, live)));
  } catch (err) {
    if (err instanceof PoolerObjectConflict) {
      return { type, status: "False", reason: "PoolerObjectConflict", message: `${name}: ${err.message}` };
    }
    if (statusCodeOf(err) === 403) {
      return {
        type,
        status: "False",
        reason: "PoolerForbidden",
        message:
          `${name} cannot be applied: the operator may not create or patch ConfigMaps, Secrets, Deployments or Services in ${pooler.namespace} ` +
          "(install the chart with pooler.enabled=true)",
      };
    }
    throw err;
  }
  return sized;
}
