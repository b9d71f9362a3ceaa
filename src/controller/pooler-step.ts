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
 * pointed at it once it has an available pod (poolerRouting; targets.ts applies the route).
 *
 * The declaring policy remembers the pooler its pass applied (status.pooler). Once its spec no
 * longer declares that pooler (spec.pooler removed, or another name), its pass deletes the
 * objects it owns, and only those: an object with the pooler's name that another policy or a
 * person owns is left, and an Event says so. This runs before anything else here, and costs
 * nothing (no API call) to a policy that has no such record.
 *
 * The max_connections the pooler is sized against: planDeclaredPooler (server/pooler.ts), which
 * `poolpolicy diagnose` calls too.
 */
import type { V1Deployment } from "@kubernetes/client-node";
import { statusCodeOf } from "../kube/errors.js";
import { renderPgBouncerConfig } from "../pooler/pgbouncer-config.js";
import {
  liveTemplateCap,
  POOLER_AUTH_FILE,
  podTemplateCap,
  type PoolerObjectRef,
  poolerObjects,
  poolerSecretName,
} from "../pooler/pooler-objects.js";
import { type PoolerSpec, planDeclaredPooler, poolerAddress, poolerProblem, serverPooler } from "../server/pooler.js";
import { explainSizing } from "../server/pooler-plan.js";
import { type ConditionUpdate, findCondition } from "./conditions.js";
import type { PoolPolicyStatus } from "../api/schema.js";
import { type PoolerRoute, routeIsCurrent } from "./env-injection.js";
import type { Pass, PolicyEvent, ServerView } from "./pass.js";
import { PoolerObjectConflict } from "./pooler-apply.js";
import type { KubernetesPort } from "./ports.js";
import { operatorMetrics } from "./metrics.js";

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
  /** The pooler's Deployment as this pass read it (undefined inside: not there); absent when not read. */
  read?: { deployment: V1Deployment | undefined };
}

/**
 * The route of a via: Pooler policy's apps: the pooler's Service, once its Deployment has had an
 * available pod (Ready for the Deployment's minReadySeconds, time for kube-proxy to program the
 * endpoint: pooler-objects.ts). Before that (just declared, refused before it ever ran) the apps
 * keep their own configuration, the server: pointed at a Service with no PgBouncer behind it, every
 * new connection would fail, which is worse than the over-commit the pooler exists to prevent (the
 * budget still counts these apps at their full worst case, docs/pooler.md). Once routed, the apps
 * stay on it while its Deployment exists, available or not: rolling every pooled app back to the
 * server and forth again each time PgBouncer's pods come and go (an eviction, a crash loop) would
 * be a restart loop of the apps. Withdrawn when the pooler is no longer declared or its Deployment
 * is gone. While the apps wait, or the pooler they go through has no available pod, PoolerSized is
 * False (routedState), so Ready is too. Costs one GET of the pooler's Deployment, for via: Pooler
 * policies only.
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
  const read = { deployment: live };
  const where = `Deployment ${pooler.namespace}/${pooler.spec.name}`;
  if (!live) return { read, waiting: `the apps connect directly until ${where} exists and has an available pod` };
  const route = poolerAddress(pooler);
  if ((live.status?.availableReplicas ?? 0) > 0) return { read, route };
  const targets = await kube.deployments(pass.key, pass.policy.metadata.namespace, pass.selector);
  if (targets.some((d) => routeIsCurrent(d, route))) {
    return { read, route, unavailable: `${where} has no available pod now: the apps stay pointed at it and wait` };
  }
  return { read, waiting: `the apps connect directly until ${where} has an available pod` };
}

/**
 * Sized, and whether this policy's apps get through: True only when they do or need not, so that
 * Ready's Converged always means the apps connect where the spec says. WaitingForPooler: they
 * connect directly until the pooler's first available pod (under way). PoolerUnavailable: they
 * are pointed at it and it has no available pod now (their new connections fail: a Warning).
 */
function routedState({ waiting, unavailable }: PoolerRouting): Pick<ConditionUpdate, "status" | "reason"> {
  if (waiting) return { status: "False", reason: "WaitingForPooler" };
  if (unavailable) return { status: "False", reason: "PoolerUnavailable" };
  return { status: "True", reason: "Sized" };
}

/** What the Sized message adds about this policy's apps: where they connect. */
function routeNote(spec: Pass["spec"], { route, waiting, unavailable }: PoolerRouting): string {
  if (!route) return waiting ? `; ${waiting}` : "";
  const { host, port } = spec.pool.env;
  const through = `; this policy's apps connect through it (${host}=${route.host}, ${port}=${route.port})`;
  return unavailable ? `${through}; ${unavailable}` : through;
}

type PoolerStatus = NonNullable<PoolPolicyStatus["pooler"]>;
type PoolerKube = Pick<
  KubernetesPort,
  "applyPooler" | "readPoolerDeployment" | "readPoolerObjects" | "deletePoolerObject"
>;
type PoolerPass = Pick<Pass, "key" | "spec" | "server" | "policy" | "previous" | "announce">;

export interface PoolerStepResult {
  /** The PoolerSized condition, undefined when the policy takes no part in a pooler. */
  condition: ConditionUpdate | undefined;
  /** status.pooler after this pass: the pooler this policy applied and owns, if any. */
  applied: PoolerStatus | undefined;
}

/**
 * The PoolerSized condition of this policy (undefined when it takes no part in a pooler), and the
 * pooler it applied: deletes the one it no longer declares, applies the pooler on its declarer's pass.
 */
export async function poolerStep(
  kube: PoolerKube,
  pass: PoolerPass,
  view: ServerView,
  routing: PoolerRouting = {},
): Promise<PoolerStepResult> {
  // Before the early return below: a policy that dropped spec.pooler takes no part any more, and
  // its old pooler must still go. Without a record (every policy that never declared one) this
  // makes no API call.
  const removal = await removeUndeclaredPooler(kube, pass, view);
  if (removal.kind === "blocked") return { condition: removal.condition, applied: pass.previous.pooler };
  const kept = removal.kind === "removed" ? undefined : pass.previous.pooler;
  // Most policies take no part in a pooler: answered before anything about the server's peers is computed.
  if (pass.spec.pooler === undefined && pass.spec.pool.via !== "Pooler") return { condition: undefined, applied: kept };
  const sized = await sizeAndApply(kube, pass, view, routing);
  return { condition: sized.condition, applied: sized.applied ?? kept };
}

type Removal = { kind: "none" } | { kind: "removed" } | { kind: "blocked"; condition: ConditionUpdate };

/**
 * Deletes the pooler this policy applied (status.pooler) once its spec no longer declares it:
 * the objects whose ownerReference is this policy's uid, after a Normal Event naming them.
 * "blocked" keeps the record, so the next pass tries again.
 */
async function removeUndeclaredPooler(kube: PoolerKube, pass: PoolerPass, view: ServerView): Promise<Removal> {
  const before = pass.previous.pooler;
  if (before === undefined || before.name === pass.spec.pooler?.name) return { kind: "none" };
  const { namespace, uid } = pass.policy.metadata;
  const label = `pooler ${namespace}/${before.name}`;
  // Another policy of the server still declares this very pooler: it is the applier now, and its
  // next apply makes the objects its own (the same field manager drops this policy's
  // ownerReference). Deleting them would take the pooler away under the policies going through it;
  // this policy only drops its record.
  const server = serverPooler(view.peers);
  if (server.kind === "declared" && server.namespace === namespace && server.spec.name === before.name) {
    return { kind: "removed" };
  }
  const now = pass.spec.pooler ? `is now named ${pass.spec.pooler.name}` : "was removed";
  try {
    const found = await kube.readPoolerObjects(namespace, before.name);
    const ours = found.filter((o) => o.owners.some((owner) => owner.uid === uid));
    const others = found.filter((o) => !ours.includes(o));
    // One Event per pooler and spec generation: a pass re-run after a crash finds it and adds none.
    const once = `${pass.policy.metadata.name}.pooler-removed-${before.name}-${uid}-${pass.policy.metadata.generation}`;
    const events: PolicyEvent[] = [];
    if (ours.length > 0) {
      events.push({
        type: "Normal",
        reason: "PoolerRemoved",
        action: "DeletePoolerObjects",
        note: `Deleting ${ours.map(describeObject).join(", ")}: spec.pooler ${now}, and this policy applied ${label}`,
        name: once,
      });
    }
    if (others.length > 0) {
      events.push({
        type: "Warning",
        reason: "PoolerObjectKept",
        action: "DeletePoolerObjects",
        note: `Not deleting ${others.map((o) => `${describeObject(o)} (${ownedBy(o)})`).join(", ")}: not owned by this policy`,
        name: `${once}-kept`,
      });
    }
    // Announced before deleting (crash-safe: the Event of an action exists once it was taken).
    await pass.announce(events);
    for (const object of ours) await kube.deletePoolerObject(object);
    return { kind: "removed" };
  } catch (err) {
    if (statusCodeOf(err) !== 403) throw err;
    // The new pooler waits for the old one: both running would each hold the pooler's share of the server.
    const waits = pass.spec.pooler ? `; ${pass.spec.pooler.name} is not applied until it is gone` : "";
    return {
      kind: "blocked",
      condition: {
        type: POOLER_CONDITION,
        status: "False",
        reason: "PoolerDeleteForbidden",
        message:
          `${label} is no longer declared (spec.pooler ${now}) but stays: the operator may not get or delete ` +
          `ConfigMaps, Secrets, Deployments or Services in ${namespace} (install the chart with pooler.enabled=true; ` +
          `with rbac.secretNames set, add ${poolerSecretName(before.name)} to it)${waits}`,
      },
    };
  }
}

const describeObject = (o: PoolerObjectRef) => `${o.kind} ${o.namespace}/${o.name}`;

function ownedBy(o: PoolerObjectRef): string {
  if (o.owners.length === 0) return "no owner";
  return `owned by ${o.owners.map((owner) => `${owner.kind} ${owner.name}`).join(", ")}`;
}

/** The pooler's condition for a policy taking part in one, and its objects applied on the declarer's pass. */
async function sizeAndApply(
  kube: PoolerKube,
  pass: PoolerPass,
  view: ServerView,
  routing: PoolerRouting,
): Promise<{ condition: ConditionUpdate | undefined; applied?: PoolerStatus }> {
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
    return { condition: { type, status: "False", reason: problem.reason, message: gone + problem.message } };
  }
  if (pooler.kind !== "declared") return { condition: undefined };
  if (!view.budget || !view.facts || !view.connection.ok) {
    const message =
      "cannot size the pooler: the server's max_connections and budget are not known (PostgreSQL is not reachable); nothing is applied";
    return { condition: { type, status: "Unknown", reason: "PostgresUnreachable", message } };
  }
  const plan = planDeclaredPooler(pooler, view.budget, view.facts.maxConnections, view.serverDesired, pass.server);
  const name = `pooler ${pooler.namespace}/${pooler.spec.name}`;
  operatorMetrics.observePooler(pass.server, `${pooler.namespace}/${pooler.spec.name}`, plan);
  if (plan.kind === "refused") {
    const message = `${name} is not rolled out (nothing applied, objects already there left as they are): ${plan.message}`;
    return { condition: { type, status: "False", reason: plan.reason, message } };
  }
  const applier = pooler.declaredBy[0]!;
  const sizes = `${name}: ${objectsPhrase(pooler.namespace, pooler.spec)}, applied by ${applier}; per pod: ${explainSizing(plan)}${routeNote(pass.spec, routing)}`;
  const sized: ConditionUpdate = { type, ...routedState(routing), message: sizes };
  if (pass.key !== applier) return { condition: sized };

  const config = renderPgBouncerConfig({
    target: view.connection.target,
    databases: pooler.databases,
    sizing: plan,
    poolMode: pooler.spec.poolMode,
    listen: { address: "*", port: pooler.spec.port },
    authFile: POOLER_AUTH_FILE,
  });
  if (!config.ok) {
    const message = `${name} is not rolled out: ${config.message}`;
    return { condition: { type, status: "False", reason: "PoolerConfigInvalid", message } };
  }
  const { metadata, apiVersion, kind } = pass.policy;
  const owner = { apiVersion, kind, name: metadata.name, namespace: metadata.namespace, uid: metadata.uid ?? "" };
  try {
    // The declaring policy's pass only: the cap the pooler's pods run with, off the Deployment
    // poolerRouting read in this pass (a via: Pooler declarer), else one GET.
    const deployment = routing.read
      ? routing.read.deployment
      : await kube.readPoolerDeployment(pooler.namespace, pooler.spec.name);
    const live = liveTemplateCap(deployment);
    await kube.applyPooler(poolerObjects(owner, pooler.spec, config, podTemplateCap(plan.maxDbConnections, live)));
  } catch (err) {
    if (err instanceof PoolerObjectConflict) {
      const message = `${name}: ${err.message}`;
      return { condition: { type, status: "False", reason: "PoolerObjectConflict", message } };
    }
    if (statusCodeOf(err) === 403) {
      const message =
        `${name} cannot be applied: the operator may not create or patch ConfigMaps, Secrets, Deployments or Services in ${pooler.namespace} ` +
        "(install the chart with pooler.enabled=true)";
      return { condition: { type, status: "False", reason: "PoolerForbidden", message } };
    }
    throw err;
  }
  return { condition: sized, applied: { name: pooler.spec.name } };
}
