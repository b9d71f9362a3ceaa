/**
 * The budget of the PostgreSQL server a policy points at, across every policy that points at
 * the same server (host:port), and the max_connections those policies together ask for.
 */
import type { V1Deployment, V2HorizontalPodAutoscaler } from "@kubernetes/client-node";
import type { PoolPolicy, PoolPolicySpec } from "../api/schema.js";
import { validateSpec } from "../api/schema.js";
import { autoSizeMaxConnections, computeBudget, type Budget, type BudgetTarget } from "../budget/budget.js";
import type { ServerFacts } from "../postgres/inspect.js";
import { OPERATOR_POOL_SIZE } from "../postgres/connection.js";
import { labelSelectorString } from "./env-injection.js";
import type { ConditionUpdate } from "./conditions.js";

export interface PolicyOnServer {
  key: string;
  namespace: string;
  spec: PoolPolicySpec;
}

export function serverOf(spec: PoolPolicySpec): string {
  return `${spec.postgres.host}:${spec.postgres.port}`;
}

/** Every valid, live policy that points at the same server as `spec`, sorted by key. */
export function policiesOnServer(all: readonly PoolPolicy[], spec: PoolPolicySpec): PolicyOnServer[] {
  const server = serverOf(spec);
  const found: PolicyOnServer[] = [];
  for (const p of all) {
    if (p.metadata.deletionTimestamp) continue;
    const v = validateSpec(p.spec);
    if (v.ok && serverOf(v.spec) === server)
      found.push({ key: `${p.metadata.namespace}/${p.metadata.name}`, namespace: p.metadata.namespace, spec: v.spec });
  }
  return found.sort((a, b) => a.key.localeCompare(b.key));
}

/** Where a reconcile reads Deployments and HPAs from: the watch caches when synced, else a LIST. */
export interface TargetReader {
  deployments(policyKey: string, namespace: string, labelSelector: string): Promise<V1Deployment[]>;
  hpas(namespace: string): Promise<V2HorizontalPodAutoscaler[]>;
}

export async function gatherBudgetTargets(
  read: TargetReader,
  policies: readonly PolicyOnServer[],
): Promise<BudgetTarget[]> {
  const hpasByNamespace = new Map<string, V2HorizontalPodAutoscaler[]>();
  const targets: BudgetTarget[] = [];
  for (const p of policies) {
    if (!hpasByNamespace.has(p.namespace)) hpasByNamespace.set(p.namespace, await read.hpas(p.namespace));
    const hpas = hpasByNamespace.get(p.namespace)!;
    const deployments = await read.deployments(p.key, p.namespace, labelSelectorString(p.spec.targets.selector));
    for (const d of deployments) {
      const name = d.metadata!.name!;
      const hpa = hpas.find((h) => h.spec?.scaleTargetRef.kind === "Deployment" && h.spec.scaleTargetRef.name === name);
      targets.push({
        policy: p.key,
        deployment: `${p.namespace}/${name}`,
        poolMax: p.spec.pool.maxSize,
        replicas: d.spec?.replicas ?? 1,
        hpaMaxReplicas: hpa?.spec?.maxReplicas,
        strategy: d.spec?.strategy as BudgetTarget["strategy"],
      });
    }
  }
  return targets;
}

export function serverBudget(targets: readonly BudgetTarget[], facts: ServerFacts, selfSpec: PoolPolicySpec): Budget {
  return computeBudget(
    targets,
    {
      superuserReserved: facts.superuserReservedConnections,
      reserved: facts.reservedConnections,
      operator: OPERATOR_POOL_SIZE,
      extra: selfSpec.budget.reserve,
    },
    facts.maxConnections,
  );
}

export type DesiredMaxConnections =
  | { kind: "value"; value: number; source: string }
  | { kind: "unmanaged" }
  | { kind: "conflict"; message: string }
  | { kind: "unknown"; message: string };

/**
 * What max_connections the policies of one server ask for together. Different explicit values
 * are a conflict (reported on every policy involved; nothing is applied, so nothing flaps); an
 * explicit value wins over "auto"; "auto" sizes from the budget with the settings of the first
 * auto policy by key, so that every policy computes the same number.
 */
export function resolveDesiredMaxConnections(
  self: PolicyOnServer,
  peers: readonly PolicyOnServer[],
  budget: Budget | undefined,
  facts: ServerFacts | undefined,
): DesiredMaxConnections {
  if (self.spec.postgres.maxConnections === undefined) return { kind: "unmanaged" };
  const explicit = peers.filter((p) => typeof p.spec.postgres.maxConnections === "number");
  const values = [...new Set(explicit.map((p) => p.spec.postgres.maxConnections as number))];
  if (values.length > 1) {
    const who = explicit.map((p) => `${p.key} (${p.spec.postgres.maxConnections})`).join(", ");
    return {
      kind: "conflict",
      message: `policies ask different max_connections of ${serverOf(self.spec)}: ${who}; nothing is applied until they agree`,
    };
  }
  if (values.length === 1) {
    const owner = explicit[0]!;
    return {
      kind: "value",
      value: values[0]!,
      source: owner.key === self.key ? "spec" : `${owner.key}'s explicit value`,
    };
  }
  if (!budget || !facts)
    return {
      kind: "unknown",
      message: "maxConnections: auto needs the server's numbers, and PostgreSQL is not reachable",
    };
  const leader = peers.find((p) => p.spec.postgres.maxConnections === "auto") ?? self;
  const value = autoSizeMaxConnections(budget.demand, {
    headroomPercent: leader.spec.budget.headroomPercent,
    ceiling: leader.spec.budget.ceiling,
    currentUsage: facts.connections.total + budget.reserve,
  });
  return {
    kind: "value",
    value,
    source: `auto: demand ${budget.demand} + ${leader.spec.budget.headroomPercent}% headroom`,
  };
}

export function budgetCondition(budget: Budget | undefined): Omit<ConditionUpdate, "type"> {
  if (!budget)
    return {
      status: "Unknown",
      reason: "PostgresUnreachable",
      message: "cannot compute the budget: PostgreSQL is not reachable",
    };
  const biggest = [...budget.targets]
    .sort((a, b) => b.connections - a.connections)
    .slice(0, 3)
    .map((t) => `${t.deployment} ${t.podsWorstCase} pods × ${t.poolMax}`)
    .join(", ");
  const detail = `${budget.targets.length} Deployment(s)${biggest ? `: ${biggest}` : ""}; reserve ${budget.reserve}`;
  if (budget.withinLimits) {
    return {
      status: "True",
      reason: "WithinLimits",
      message: `worst-case demand ${budget.demand} ≤ max_connections ${budget.capacity} (${detail})`,
    };
  }
  return {
    status: "False",
    reason: "OverCommitted",
    message: `worst-case demand ${budget.demand} > max_connections ${budget.capacity} (${detail}): raise max_connections to at least ${budget.demand}, or lower the pools`,
  };
}
