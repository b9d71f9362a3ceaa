/**
 * Conditions with metav1.Condition semantics: one entry per type; lastTransitionTime moves only
 * when the status flips (a new reason or message alone does not); observedGeneration tells
 * which spec the condition speaks about. Ready sums up the others.
 */
import type { Condition } from "../api/schema.js";

export const ConditionTypes = [
  "Ready",
  "PostgresReachable",
  "MaxConnectionsApplied",
  "PoolEnvInjected",
  "BudgetWithinLimits",
  "MemoryWithinLimits",
  "RoleConnectionLimit",
  "PoolerSized",
  "ReaperHealthy",
  "ExtensionsReady",
  "RedisAvailable",
] as const;
export type ConditionType = (typeof ConditionTypes)[number];
export type ConditionStatus = "True" | "False" | "Unknown";

export interface ConditionUpdate {
  type: ConditionType;
  status: ConditionStatus;
  reason: string;
  message: string;
}

/** Returns the list with `update` applied; the input is not modified. */
export function setCondition(
  conditions: readonly Condition[],
  update: ConditionUpdate,
  now: Date,
  generation: number,
): Condition[] {
  const existing = conditions.find((c) => c.type === update.type);
  const lastTransitionTime =
    existing && existing.status === update.status
      ? existing.lastTransitionTime
      : now.toISOString().replace(/\.\d{3}Z$/, "Z");
  const next: Condition = {
    type: update.type,
    status: update.status,
    reason: update.reason,
    message: update.message.slice(0, 32768),
    lastTransitionTime,
    observedGeneration: generation,
  };
  const others = conditions.filter((c) => c.type !== update.type);
  return sortConditions([...others, next]);
}

export function findCondition(
  conditions: readonly Condition[] | undefined,
  type: ConditionType,
): Condition | undefined {
  return conditions?.find((c) => c.type === type);
}

/** Ready is True only when every other condition is True; otherwise it carries the first culprit's reason. */
export function summarizeReady(updates: readonly ConditionUpdate[]): ConditionUpdate {
  const blocking = updates.filter((u) => u.type !== "Ready" && u.status !== "True");
  if (blocking.length === 0) {
    return { type: "Ready", status: "True", reason: "Converged", message: "Every condition is True" };
  }
  const first = blocking[0]!;
  const others =
    blocking.length > 1
      ? ` (and ${blocking
          .slice(1)
          .map((b) => b.type)
          .join(", ")})`
      : "";
  return {
    type: "Ready",
    status: blocking.some((b) => b.status === "False") ? "False" : "Unknown",
    reason: first.reason,
    message: `${first.type}: ${first.message}${others}`,
  };
}

function sortConditions(conditions: Condition[]): Condition[] {
  const order = (t: string) => {
    const i = ConditionTypes.indexOf(t as ConditionType);
    return i < 0 ? ConditionTypes.length : i;
  };
  return conditions.sort((a, b) => order(a.type) - order(b.type));
}
