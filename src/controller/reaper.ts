/**
 * The reaper step: at most once per spec.reaper.interval per policy, terminate the sessions of
 * the policy's database that sat "idle in transaction" longer than the timeout. Paused while a
 * restart is in progress (the sessions are going away anyway, and the server may be down).
 */
import type { PoolPolicySpec, PoolPolicyStatus } from "../api/schema.js";
import { formatDuration } from "../api/duration.js";
import type { ConditionUpdate } from "./conditions.js";
import { reapIdleInTransaction, type ReapedSession } from "../postgres/reap.js";
import { ensureRoleTimeouts, ensureServerTimeout } from "../postgres/timeouts.js";
import type pg from "pg";

export type ServerTimeoutScope = PoolPolicySpec["reaper"]["serverTimeout"];

export interface ReaperOutcome {
  condition: Omit<ConditionUpdate, "type">;
  status: NonNullable<PoolPolicyStatus["reaper"]>;
  /** Sessions terminated (or, in dry-run, that would have been). */
  sessions: ReapedSession[];
  ran: boolean;
}

export class ReaperSchedule {
  private readonly lastRun = new Map<string, number>();

  /** Milliseconds until the policy's next pass is due (0: now). */
  dueIn(key: string, intervalMs: number, nowMs: number): number {
    const last = this.lastRun.get(key);
    return last === undefined ? 0 : Math.max(0, last + intervalMs - nowMs);
  }

  markRun(key: string, nowMs: number): void {
    this.lastRun.set(key, nowMs);
  }

  forget(key: string): void {
    this.lastRun.delete(key);
  }
}

/** `timeoutMs` is spec.reaper.idleInTransactionTimeout, parsed (Pass.durations). */
export async function runReaper(
  client: pg.PoolClient,
  spec: PoolPolicySpec,
  timeoutMs: number,
  previous: PoolPolicyStatus["reaper"],
  now: Date,
): Promise<ReaperOutcome> {
  const sessions = await reapIdleInTransaction(client, {
    database: spec.postgres.database,
    idleLongerThanMs: timeoutMs,
    excludeUsers: spec.reaper.excludeUsers,
    excludeApplicationNames: spec.reaper.excludeApplicationNames,
    dryRun: spec.reaper.dryRun,
  });
  const status = { ...(previous ?? {}) };
  const mode = spec.reaper.dryRun ? "dry run: reporting" : "terminating";
  if (spec.reaper.dryRun) {
    status.lastDryRunCandidates = sessions.length;
  } else if (sessions.length > 0) {
    const terminated = sessions.filter((s) => s.terminated).length;
    status.lastTerminated = terminated;
    status.totalTerminated = (status.totalTerminated ?? 0) + terminated;
    status.lastTerminationTime = now.toISOString().replace(/\.\d{3}Z$/, "Z");
  }
  return {
    ran: true,
    sessions,
    status,
    condition: {
      status: "True",
      reason: spec.reaper.dryRun ? "DryRun" : "Running",
      message: `${mode} sessions idle in transaction for more than ${formatDuration(timeoutMs)} in database ${spec.postgres.database}, every ${spec.reaper.interval}`,
    },
  };
}

export function describeSessions(sessions: readonly ReapedSession[]): string {
  const shown = sessions
    .slice(0, 10)
    .map((s) => `pid ${s.pid} (user ${s.user ?? "?"}, application "${s.applicationName}", idle ${s.idleSeconds}s)`);
  const more = sessions.length > shown.length ? ` and ${sessions.length - shown.length} more` : "";
  return shown.join(", ") + more;
}

/**
 * For modes ServerTimeout and Both: make PostgreSQL end sessions idle in transaction for more than
 * `ms` (spec.reaper.idleInTransactionTimeout, parsed) itself, server-wide or for the given roles.
 * Returns a note for an Event when something was changed.
 */
export async function applyServerTimeout(
  client: pg.PoolClient,
  { scope, roles }: ServerTimeoutScope,
  ms: number,
): Promise<string | undefined> {
  if (scope === "Server") {
    return (await ensureServerTimeout(client, ms))
      ? `ALTER SYSTEM SET idle_in_transaction_session_timeout = ${ms} (ms); configuration reloaded`
      : undefined;
  }
  const changed = await ensureRoleTimeouts(client, roles, ms);
  return changed.length > 0
    ? `ALTER ROLE … SET idle_in_transaction_session_timeout = ${ms} (ms) for ${changed.join(", ")}`
    : undefined;
}
