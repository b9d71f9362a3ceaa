/**
 * How a policy reports its server's budget and memory ceiling: the BudgetWithinLimits and
 * MemoryWithinLimits conditions and the status.budget field. The numbers themselves come from
 * the server model (src/server/model.ts, src/server/memory.ts).
 */
import type { PoolPolicyStatus } from "../api/schema.js";
import type { Budget } from "../budget/budget.js";
import { formatBytes } from "../server/memory.js";
import { bytesFor, MEMORY_ADVICE, type ServerMemory, type ServerSettings } from "../server/model.js";
import type { ConditionUpdate } from "./conditions.js";

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
