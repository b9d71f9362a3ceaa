/**
 * The pooler of a server as its policies declare it (spec.pooler, spec.pool.via): which one it
 * is, which policies go through it, and the planner's input from the server's budget. Like the
 * rest of the server model (model.ts), a function of the SET of policies on the server, never
 * of the policy being reconciled, so that every policy of a server computes the same sizes.
 *
 * The pooler is declared per server: one policy (any of them) carries spec.pooler, and every
 * policy of the same server with spec.pool.via Pooler goes through it. Policies that declare one
 * must declare the same one (same namespace and the same fields), exactly as policies that set
 * maxConnections must agree on it; two different poolers of one server would each be sized as if
 * the server's rest were its own, which is the over-commit this exists to prevent.
 */
import type { PoolPolicySpec } from "../api/schema.js";
import type { Budget } from "../budget/budget.js";
import { byCodePoint } from "../kube/keys.js";
import type { PolicyOnServer } from "./model.js";
import type { ServerDesire } from "./model.js";
import { type PoolerPlan, type PoolerPlanInput, planPooler, splitByRoute } from "./pooler-plan.js";

export type PoolerSpec = NonNullable<PoolPolicySpec["pooler"]>;

export type ServerPooler =
  /** No policy of the server declares a pooler; `pooled` lists the policies that ask for one anyway. */
  | { kind: "none"; pooled: string[] }
  | { kind: "conflict"; message: string; pooled: string[] }
  | {
      kind: "declared";
      /** The declaring policies' keys (several may declare the same pooler), sorted. */
      declaredBy: string[];
      /** Where the pooler runs: the declaring policies' namespace. */
      namespace: string;
      spec: PoolerSpec;
      /** Keys of the policies whose apps go through it (spec.pool.via Pooler), sorted. */
      pooled: string[];
      /** The databases those policies use (spec.postgres.database), sorted: one PgBouncer entry each. */
      databases: string[];
    };

function declaration(p: PolicyOnServer): string {
  return JSON.stringify({ namespace: p.namespace, ...p.spec.pooler });
}

/** The pooler of the server whose policies are `unordered`, in any order. */
export function serverPooler(unordered: readonly PolicyOnServer[]): ServerPooler {
  // policiesOnServer sorts already; sorting here too makes the answer independent of any caller's order.
  const peers = [...unordered].sort((a, b) => byCodePoint(a.key, b.key));
  const pooledPolicies = peers.filter((p) => p.spec.pool.via === "Pooler");
  const pooled = pooledPolicies.map((p) => p.key);
  const declaring = peers.filter((p) => p.spec.pooler !== undefined);
  if (declaring.length === 0) return { kind: "none", pooled };
  const distinct = new Set(declaring.map(declaration));
  if (distinct.size > 1) {
    const who = declaring.map((p) => `${p.key} (${p.namespace}/${p.spec.pooler!.name})`).join(", ");
    return {
      kind: "conflict",
      pooled,
      message: `policies of one server declare different poolers: ${who}; declare it on one policy, or the same spec.pooler on each`,
    };
  }
  const owner = declaring[0]!;
  return {
    kind: "declared",
    declaredBy: declaring.map((p) => p.key),
    namespace: owner.namespace,
    spec: owner.spec.pooler!,
    pooled,
    databases: [...new Set(pooledPolicies.map((p) => p.spec.postgres.database))].sort(),
  };
}

/** The Service address apps with via: Pooler are given (host and port of the pooler). */
export function poolerAddress(pooler: Extract<ServerPooler, { kind: "declared" }>): { host: string; port: number } {
  return { host: `${pooler.spec.name}.${pooler.namespace}.svc`, port: pooler.spec.port };
}

/**
 * What the planner needs, from the server's budget: its reserve, the worst case of the direct
 * and of the pooled apps, and the pooler's pods (an HPA on the pooler's Deployment, if any,
 * gives `hpaMaxReplicas`). A pooler that serves no database yet is sized for one.
 */
export function poolerPlanInput(
  pooler: Extract<ServerPooler, { kind: "declared" }>,
  budget: Budget,
  maxConnections: number,
  hpaMaxReplicas?: number,
): PoolerPlanInput {
  const { direct, throughPooler } = splitByRoute(budget, new Set(pooler.pooled));
  return {
    maxConnections,
    reserved: budget.reserve,
    direct,
    throughPooler,
    pods: {
      replicas: pooler.spec.replicas,
      hpaMaxReplicas,
      strategy: { type: "RollingUpdate", rollingUpdate: { maxSurge: pooler.spec.maxSurge } },
    },
    databases: Math.max(1, pooler.databases.length),
    minServerConnectionsPerPod: pooler.spec.minServerConnectionsPerPod,
    reservePoolSize: pooler.spec.reservePoolSize,
  };
}

/**
 * The declared pooler's plan, as the operator applies it and `poolpolicy diagnose` reports it:
 * sized against the lower of the max_connections in force and the one the policies of the server
 * ask for together (`desired`, never one policy's view of it, so that every policy of the server
 * computes the same sizes). Sized for a raise not yet applied it would exceed the server until the
 * restart; sized for the value in force, after a lowering.
 */
export function planDeclaredPooler(
  pooler: Extract<ServerPooler, { kind: "declared" }>,
  budget: Budget,
  inForce: number,
  desired: ServerDesire,
  server: string,
): PoolerPlan {
  const maxConnections = desired.kind === "value" ? Math.min(inForce, desired.value) : inForce;
  return planPooler(poolerPlanInput(pooler, budget, maxConnections), server);
}

/**
 * What a policy's spec asks of the pooler that the server cannot give: via Pooler with no
 * pooler declared, or with declarations in conflict. Undefined when nothing is wrong.
 */
export function poolerProblem(
  self: PolicyOnServer,
  pooler: ServerPooler,
): { reason: string; message: string } | undefined {
  if (pooler.kind === "conflict") return { reason: "PoolerConflict", message: pooler.message };
  if (pooler.kind === "none" && self.spec.pool.via === "Pooler") {
    return {
      reason: "PoolerNotDeclared",
      message:
        "spec.pool.via is Pooler, but no policy of this server declares spec.pooler: declare one (on this policy or another of the same server), or set via to Direct",
    };
  }
  return undefined;
}
