/**
 * How a policy reports its server's budget and memory ceiling: the BudgetWithinLimits and
 * MemoryWithinLimits conditions and the status.budget field. The numbers themselves come from
 * the server model (src/server/model.ts, src/server/memory.ts).
 */
import type { PoolPolicyStatus } from "../api/schema.js";
import type { Budget } from "../budget/budget.js";
import { formatBytes } from "../server/memory.js";
import type { ServerMemory, ServerSettings } from "../server/model.js";
import type { ConditionUpdate } from "./conditions.js";

/** What to do when the connections the apps want do not fit the server's memory (issue 16). */
const MEMORY_ADVICE = "lower the pools, give PostgreSQL more memory, or put a connection pooler in front";

/**
 * status.budget: the server's totals once, and this policy's own targets only. Listing every
 * peer's targets made each of 200 policies on one server 112 KB, and listing them 22.5 MB
 * (issue 13); `poolpolicy diagnose` shows the whole server.
 */
export function budgetStatus(
  budget: Budget,
  policyKey: string,
  policies: number,
  memory?: ServerMemory,
): NonNullable<PoolPolicyStatus["budget"]> {
  return {
    demand: budget.demand,
    capacity: budget.capacity,
    reserve: budget.reserve,
    policies,
    ...(memory?.known ? { memoryCeiling: memory.ceiling.ceiling } : {}),
    targets: budget.targets.filter((t) => t.policy === policyKey),
  };
}

/** The bounds on max_connections besides the budget, to say which one holds it. */
export interface CapacityBounds {
  memory?: ServerMemory;
  settings?: ServerSettings;
}

export function budgetCondition(
  budget: Budget | undefined,
  bounds: CapacityBounds = {},
): Omit<ConditionUpdate, "type"> {
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
    message: `worst-case demand ${budget.demand} > max_connections ${budget.capacity} (${detail}): ${overCommittedAdvice(budget, bounds)}`,
  };
}

/**
 * Which bound keeps max_connections below the demand, and what to do about it: the lower of
 * what fits in the container's memory and spec.budget.ceiling (with "auto"), when the demand
 * exceeds it; else nothing but max_connections itself.
 */
function overCommittedAdvice(budget: Budget, { memory, settings }: CapacityBounds): string {
  const known = memory?.known ? memory : undefined;
  const memoryCeiling = known?.ceiling.ceiling ?? Number.POSITIVE_INFINITY;
  const specCeiling = settings?.ceiling ?? Number.POSITIVE_INFINITY;
  if (known && budget.demand > memoryCeiling && memoryCeiling <= specCeiling) {
    const need = formatBytes(bytesFor(known.ceiling, budget.demand));
    return `the binding bound is memory: ${memoryCeiling} connections fit in ${known.source}, and ${budget.demand} would need ${need}; ${MEMORY_ADVICE}`;
  }
  if (budget.demand > specCeiling) {
    if (known && budget.demand > memoryCeiling) {
      return `the binding bound is spec.budget.ceiling (${specCeiling}), and memory after it: raising the ceiling gains up to the ${memoryCeiling} connections that fit in ${known.source}; ${MEMORY_ADVICE}`;
    }
    return `the binding bound is spec.budget.ceiling (${specCeiling}): raise it to at least ${budget.demand}, or lower the pools`;
  }
  return `raise max_connections to at least ${budget.demand}, or lower the pools`;
}

/** The container memory `connections` need: the fixed costs and the per-connection cost of each. */
function bytesFor(c: { fixedBytes: number; perConnectionBytes: number }, connections: number): number {
  return c.fixedBytes + connections * c.perConnectionBytes;
}

/**
 * MemoryWithinLimits: whether `maxConnections` (the value the policies ask for, else the one in
 * force) fits in the PostgreSQL container's memory. An explicit value above the ceiling is still
 * applied (the user said so); this condition is the warning that names the numbers.
 */
export function memoryCondition(
  memory: ServerMemory | undefined,
  maxConnections: number | undefined,
): Omit<ConditionUpdate, "type"> {
  if (!memory || maxConnections === undefined) {
    return {
      status: "Unknown",
      reason: "PostgresUnreachable",
      message: "cannot compute the memory ceiling: the server's settings are not known (PostgreSQL is not reachable)",
    };
  }
  if (!memory.known) return { status: "Unknown", reason: memory.reason, message: memory.message };
  const c = memory.ceiling;
  const how = `${formatBytes(c.fixedBytes)} for shared_buffers, autovacuum workers and the server's own processes, then ${formatBytes(c.perConnectionBytes)} per connection (spec.postgres.memory.perConnection + work_mem)`;
  if (c.ceiling < memory.minimum) {
    return {
      status: "False",
      reason: "MemoryTooSmall",
      message: `${memory.source} does not carry even the ${memory.minimum} connections PostgreSQL needs to start (${how}): give PostgreSQL more memory or lower shared_buffers`,
    };
  }
  if (maxConnections > c.ceiling) {
    return {
      status: "False",
      reason: "AboveMemoryCeiling",
      message: `max_connections ${maxConnections} > ${c.ceiling} that fit in ${memory.source} (${how}); ${maxConnections} connections would need ${formatBytes(bytesFor(c, maxConnections))} and may get PostgreSQL OOM-killed: ${MEMORY_ADVICE}`,
    };
  }
  return {
    status: "True",
    reason: "WithinMemory",
    message: `max_connections ${maxConnections} ≤ ${c.ceiling} that fit in ${memory.source} (${how})`,
  };
}
