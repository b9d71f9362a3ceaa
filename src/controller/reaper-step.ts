/**
 * The reaper's step of a pass: PostgreSQL's own timeout where the spec asks for it, and a reap
 * of sessions idle in transaction when one is due (reaper.ts holds the statement and schedule).
 */
import type { PostgresTarget } from "../postgres/connection.js";
import { findCondition } from "./conditions.js";
import { operatorMetrics } from "./metrics.js";
import { outcome, type Pass, PROGRESS_POLL_MS, type StepOutcome } from "./pass.js";
import type { PostgresPort } from "./ports.js";
import { describeSessions, type ReaperSchedule } from "./reaper.js";

/** ReaperHealthy reasons that a reaper pass itself sets. */
const REAPER_VERDICTS = new Set(["Running", "DryRun", "ReapFailed"]);

export async function reapStep(
  deps: { postgres: PostgresPort; schedule: ReaperSchedule },
  pass: Pass,
  target: PostgresTarget | undefined,
  restarting: boolean,
): Promise<StepOutcome> {
  const { spec, key, now, previous } = pass;
  const { reaperIntervalMs: interval, idleInTransactionTimeoutMs } = pass.durations;
  const verdict = (status: "True" | "False" | "Unknown", reason: string, message: string, requeueAfterMs: number) =>
    outcome({ conditions: [{ type: "ReaperHealthy", status, reason, message }], requeueAfterMs });
  if (!spec.reaper.enabled) return verdict("True", "Disabled", "the reaper is disabled", Number.POSITIVE_INFINITY);
  if (restarting) return verdict("True", "Paused", "paused while PostgreSQL restarts", PROGRESS_POLL_MS);
  if (!target) return verdict("Unknown", "PostgresUnreachable", "cannot reap: PostgreSQL is not reachable", interval);

  const events: StepOutcome["events"] = [];
  if (spec.reaper.mode !== "Terminate") {
    let serverTimeout: string;
    try {
      const note = await deps.postgres.applyServerTimeout(
        target,
        spec.reaper.serverTimeout,
        idleInTransactionTimeoutMs,
      );
      if (note) events.push({ type: "Normal", reason: "ServerTimeoutSet", action: "AlterSystem", note });
      const scope =
        spec.reaper.serverTimeout.scope === "Server"
          ? "server-wide"
          : `roles ${spec.reaper.serverTimeout.roles.join(", ")}`;
      serverTimeout = `PostgreSQL ends sessions idle in transaction for more than ${spec.reaper.idleInTransactionTimeout} (${scope})`;
    } catch (err) {
      const message = `cannot set idle_in_transaction_session_timeout: ${(err as Error).message}`;
      return { ...verdict("False", "ServerTimeoutFailed", message, interval), events };
    }
    if (spec.reaper.mode === "ServerTimeout") {
      return { ...verdict("True", "ServerTimeout", serverTimeout, Number.POSITIVE_INFINITY), events };
    }
  }
  // Between passes the last pass's verdict stands; any other state (a pause, PostgreSQL
  // having been away) is stale now that PostgreSQL answers, so a pass runs right away.
  const dueIn = deps.schedule.dueIn(key, interval, now.getTime());
  const last = findCondition(previous.conditions, "ReaperHealthy");
  if (dueIn > 0 && last && REAPER_VERDICTS.has(last.reason)) {
    return { ...verdict(last.status, last.reason, last.message, dueIn), events };
  }
  try {
    const reaped = await deps.postgres.runReaper(target, spec, idleInTransactionTimeoutMs, previous.reaper, now);
    deps.schedule.markRun(key, now.getTime());
    const terminated = reaped.sessions.filter((s) => s.terminated);
    operatorMetrics.sessionsReaped.inc({ namespace: pass.policy.metadata.namespace }, terminated.length);
    if (terminated.length > 0) {
      events.push({
        type: "Normal",
        reason: "SessionsReaped",
        action: "TerminateBackend",
        note: `Terminated ${terminated.length} session(s) idle in transaction: ${describeSessions(terminated)}`,
      });
    } else if (spec.reaper.dryRun && reaped.sessions.length > 0) {
      events.push({
        type: "Normal",
        reason: "ReapDryRun",
        action: "TerminateBackend",
        note: `Dry run: would terminate ${reaped.sessions.length} session(s): ${describeSessions(reaped.sessions)}`,
      });
    }
    const conditions = [{ type: "ReaperHealthy" as const, ...reaped.condition }];
    return outcome({ conditions, events, status: { reaper: reaped.status }, requeueAfterMs: interval });
  } catch (err) {
    deps.schedule.markRun(key, now.getTime());
    return { ...verdict("False", "ReapFailed", (err as Error).message, interval), events };
  }
}
