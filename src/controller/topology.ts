/**
 * Restarting a PostgreSQL StatefulSet that holds a primary and streaming replicas, one pod at
 * a time, in the order the hot-standby rule demands: a replica's max_connections must never be
 * below the primary's, or its replay pauses (PostgreSQL 14+) or it stops.
 *
 *   raising  → replicas first, the primary last;
 *   lowering → the primary first, then each replica once it has replayed past the primary's
 *              current WAL position (so it has seen the primary's new, lower setting).
 *
 * The plan is a pure function of what every pod reports now, so it is level-triggered and safe
 * across crashes: a pod "needs a restart" exactly while its max_connections differs from the
 * desired value; the operator deletes one such pod (the StatefulSet recreates it) and does
 * nothing else while any pod is not Ready. No pod is ever restarted twice for one change.
 */

export interface PodState {
  name: string;
  ordinal: number;
  /** Ready and not terminating. */
  ready: boolean;
  /** undefined when the pod's PostgreSQL could not be asked. */
  role?: "primary" | "replica";
  maxConnections?: number;
  /** What postgresql.auto.conf holds (ALTER SYSTEM is not replicated: every pod needs it). */
  alterSystemValue?: number;
  postmasterStartTime?: Date;
  lsn?: bigint;
}

export type TopologyStep =
  | { kind: "done"; message: string }
  | { kind: "wait"; reason: string; message: string; untilMs?: number }
  | { kind: "alter"; pods: string[] }
  | { kind: "restart"; pod: string; message: string };

export function planTopologyRestart(
  pods: readonly PodState[],
  desired: number,
  now: Date,
  delayMs: number,
): TopologyStep {
  const notReady = pods.filter((p) => !p.ready || p.role === undefined || p.maxConnections === undefined);
  if (notReady.length > 0) {
    return {
      kind: "wait",
      reason: "RestartInProgress",
      message: `waiting for ${notReady.map((p) => p.name).join(", ")} to be Ready and answer`,
    };
  }
  const primaries = pods.filter((p) => p.role === "primary");
  if (primaries.length !== 1) {
    return {
      kind: "wait",
      reason: "TopologyUnclear",
      message: `expected one primary among ${pods.map((p) => p.name).join(", ")}, found ${primaries.length}`,
    };
  }
  const stale = pods.filter((p) => p.maxConnections !== desired);
  if (stale.length === 0) return { kind: "done", message: `max_connections is ${desired} on all ${pods.length} pods` };
  const unaltered = stale.filter((p) => p.alterSystemValue !== desired);
  if (unaltered.length > 0) return { kind: "alter", pods: unaltered.map((p) => p.name) };

  const lastStart = Math.max(...pods.map((p) => p.postmasterStartTime?.getTime() ?? 0));
  if (stale.length < pods.length && now.getTime() < lastStart + delayMs) {
    return {
      kind: "wait",
      reason: "RestartInProgress",
      message: `pausing ${Math.round(delayMs / 1000)}s between pods`,
      untilMs: lastStart + delayMs - now.getTime(),
    };
  }
  const primary = primaries[0]!;
  const byOrdinal = (a: PodState, b: PodState) => b.ordinal - a.ordinal;
  const replicas = stale.filter((p) => p.role === "replica").sort(byOrdinal);
  const raising =
    desired > primary.maxConnections! ||
    (primary.maxConnections === desired && replicas.every((r) => r.maxConnections! < desired));
  const progress = `${pods.length - stale.length}/${pods.length} pods done`;

  if (raising) {
    const next = replicas[0] ?? primary;
    const what = next === primary ? "the primary, last" : `replica ${next.name} first`;
    return {
      kind: "restart",
      pod: next.name,
      message: `raising max_connections to ${desired}: restarting ${what} (${progress})`,
    };
  }
  if (primary.maxConnections !== desired) {
    return {
      kind: "restart",
      pod: primary.name,
      message: `lowering max_connections to ${desired}: restarting the primary ${primary.name} first (${progress})`,
    };
  }
  const replayed = replicas.find((r) => (r.lsn ?? -1n) >= (primary.lsn ?? 0n));
  if (!replayed) {
    return {
      kind: "wait",
      reason: "WaitingForReplay",
      message: `lowering max_connections to ${desired}: waiting for ${replicas.map((r) => r.name).join(", ")} to replay the primary's change`,
    };
  }
  return {
    kind: "restart",
    pod: replayed.name,
    message: `lowering max_connections to ${desired}: restarting replica ${replayed.name} (${progress})`,
  };
}
