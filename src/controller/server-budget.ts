/**
 * How a policy reports its server's budget: the BudgetWithinLimits condition and the
 * status.budget field. The budget itself is computed by the server model (src/server/model.ts).
 */
import type { PoolPolicyStatus } from "../api/schema.js";
import type { Budget } from "../budget/budget.js";
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
): NonNullable<PoolPolicyStatus["budget"]> {
  return {
    demand: budget.demand,
    capacity: budget.capacity,
    reserve: budget.reserve,
    policies,
    targets: budget.targets.filter((t) => t.policy === policyKey),
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
