/**
 * Building the status and deciding whether it must be written. A reconcile that changes
 * nothing writes nothing: an identical status write would still bump resourceVersion and
 * retrigger every watch, a hot loop in disguise. Connection counts move all the time, so
 * they are refreshed only when usage moved by USAGE_STEP_PERCENT or more (metrics carry the
 * exact numbers).
 */
import { isDeepStrictEqual } from "node:util";
import type { PoolPolicyStatus } from "../api/schema.js";
import type { ServerFacts } from "../postgres/inspect.js";

export const USAGE_STEP_PERCENT = 5;

type PostgresStatus = NonNullable<PoolPolicyStatus["postgres"]>;

export function usagePercent(facts: Pick<ServerFacts, "connections" | "maxConnections">): number {
  return facts.maxConnections > 0 ? Math.round((100 * facts.connections.total) / facts.maxConnections) : 0;
}

/** The postgres part of the status, keeping the previous counts while usage stays within a step. */
export function withUsage(previous: PostgresStatus | undefined, facts: ServerFacts): PostgresStatus {
  const percent = usagePercent(facts);
  const keepCounts =
    previous?.usagePercent !== undefined &&
    previous.maxConnections === facts.maxConnections &&
    Math.abs(previous.usagePercent - percent) < USAGE_STEP_PERCENT;
  const counts = keepCounts
    ? { connections: previous.connections, usagePercent: previous.usagePercent, usage: previous.usage }
    : {
        connections: facts.connections,
        usagePercent: percent,
        usage: `${facts.connections.total}/${facts.maxConnections} (${percent}%)`,
      };
  return {
    version: facts.version,
    maxConnections: facts.maxConnections,
    pendingRestart: facts.pendingRestart,
    settingSource: facts.settingSource,
    postmasterStartTime: facts.postmasterStartTime.toISOString(),
    ...counts,
  };
}

export function statusChanged(previous: PoolPolicyStatus, next: PoolPolicyStatus): boolean {
  return !isDeepStrictEqual(normalize(previous), normalize(next));
}

/** Drops undefined fields so that `{a: undefined}` and `{}` compare equal, as they serialize. */
function normalize(value: unknown): unknown {
  return JSON.parse(JSON.stringify(value ?? {}));
}

/** The top-level status fields (and condition types) that differ: for the debug log of a write. */
export function changedFields(previous: PoolPolicyStatus, next: PoolPolicyStatus): string[] {
  const a = normalize(previous) as Record<string, unknown>;
  const b = normalize(next) as Record<string, unknown>;
  const fields = [...new Set([...Object.keys(a), ...Object.keys(b)])].filter(
    (k) => k !== "conditions" && !isDeepStrictEqual(a[k], b[k]),
  );
  const before = new Map((previous.conditions ?? []).map((c) => [c.type, c]));
  for (const c of next.conditions ?? []) {
    if (!isDeepStrictEqual(normalize(before.get(c.type)), normalize(c))) fields.push(`conditions.${c.type}`);
  }
  return fields;
}
