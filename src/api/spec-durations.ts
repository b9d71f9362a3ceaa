/**
 * The durations of a validated spec in milliseconds, parsed once per pass (issue 12.4: the
 * reaper's interval and timeout were parsed three times a pass, in three files). Every step reads
 * these numbers; none parses the spec's text again.
 */
import { parseDuration } from "./duration.js";
import type { PoolPolicySpec } from "./schema.js";

export interface SpecDurations {
  /** spec.reaper.interval: how often the reaper's own pass runs. */
  reaperIntervalMs: number;
  /** spec.reaper.idleInTransactionTimeout: what the reaper and PostgreSQL's own timeout end. */
  idleInTransactionTimeoutMs: number;
  /** spec.postgres.restart.delayBetweenPods; 0 without a restart section (nothing is restarted then). */
  delayBetweenPodsMs: number;
  /** spec.postgres.restart.maintenanceWindow.duration; undefined without a window (no window: any time). */
  maintenanceWindowMs: number | undefined;
}

/** `spec` must come from validateSpec: the schema admits only durations that parse. */
export function specDurations(spec: PoolPolicySpec): SpecDurations {
  const restart = spec.postgres.restart;
  const window = restart?.maintenanceWindow;
  return {
    reaperIntervalMs: validDuration(spec.reaper.interval, "reaper.interval"),
    idleInTransactionTimeoutMs: validDuration(spec.reaper.idleInTransactionTimeout, "reaper.idleInTransactionTimeout"),
    delayBetweenPodsMs: restart ? validDuration(restart.delayBetweenPods, "postgres.restart.delayBetweenPods") : 0,
    maintenanceWindowMs: window
      ? validDuration(window.duration, "postgres.restart.maintenanceWindow.duration")
      : undefined,
  };
}

/**
 * Milliseconds of a duration the schema has already validated. A text that does not parse means
 * a spec reached the controller without validateSpec: a bug, not a user's mistake, so it throws
 * rather than guess a default.
 */
export function validDuration(text: string, field: string): number {
  const ms = parseDuration(text);
  if (ms === undefined) {
    throw new Error(`spec.${field} ${JSON.stringify(text)} is not a duration: the spec was used without validateSpec`);
  }
  return ms;
}
