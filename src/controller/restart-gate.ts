/**
 * Whether PostgreSQL may be restarted now for a max_connections change: the one gate that the
 * single-instance restart and the primary-with-replicas restart both pass through, so that they
 * say the same thing in the same words.
 *
 * Gates, in order:
 *   1. restarts held by the restart limit (until a person releases them);
 *   2. `restart.policy: Manual` without the approval annotation for this value;
 *   3. outside the maintenance window;
 *   4. the restart limit: at most `max` restarts requested by the operator per server per hour.
 *      Whatever asks for the restart (a bug of ours, two policies that disagree, a GitOps tool
 *      that rewrites the policy every minute), past the limit the operator stops restarting the
 *      server, records the hold on the workload and says so, until a person removes the hold.
 *
 * The history lives on the workload (annotations, see workload.ts), so an operator restart or a
 * new leader neither forgets it nor resets the count.
 */
import { describeWorkload, kubectlResource, type WorkloadRef } from "../kube/workloads.js";
import { GROUP } from "../api/schema.js";
import type { WindowState } from "./maintenance-window.js";

export const APPROVAL_ANNOTATION = `${GROUP}/approve-restart`;
/** On the workload: ISO times of the restarts the operator requested in the last window. */
export const RESTART_HISTORY_ANNOTATION = `${GROUP}/restart-history`;
/** On the workload: set when the restart limit was reached; restarts wait until it is removed. */
export const RESTARTS_HELD_ANNOTATION = `${GROUP}/restarts-held`;

export const RESTART_LIMIT_WINDOW_MS = 60 * 60 * 1000;

export interface RestartLimit {
  /** Restarts per server per hour (operator setting MAX_RESTARTS_PER_HOUR). */
  max: number;
  /** Restarts the operator requested, as recorded on the workload. */
  history: readonly Date[];
  /** When the limit was reached, if restarts are held. */
  heldSince?: Date;
}

export type { WorkloadRef } from "../kube/workloads.js";

export interface RestartGateInput {
  desired: number;
  /** max_connections in force now. */
  current: number;
  policyName: string;
  workload: WorkloadRef;
  restartPolicy: "Automatic" | "Manual";
  /** The policy's approval annotation, if any. */
  approval: string | undefined;
  window?: WindowState;
  limit: RestartLimit;
  now: Date;
}

export type RestartGate =
  | { open: true }
  | {
      open: false;
      reason: "AwaitingApproval" | "OutsideMaintenanceWindow" | "RestartLimitReached";
      message: string;
      /** When the maintenance window opens next (the reconcile comes back then). */
      nextWindow?: Date;
      /** The limit was reached just now: record the hold on the workload and warn once. */
      hold?: boolean;
    };

/** Restarts within the limit's window that ends at `now`. */
export function recentRestarts(history: readonly Date[], now: Date): Date[] {
  return history.filter((t) => now.getTime() - t.getTime() < RESTART_LIMIT_WINDOW_MS && t <= now);
}

export function releaseCommand(w: WorkloadRef): string {
  return (
    `kubectl annotate ${kubectlResource(w)} ${w.name} -n ${w.namespace} ` +
    `${RESTARTS_HELD_ANNOTATION}- ${RESTART_HISTORY_ANNOTATION}-`
  );
}

export function restartGate(g: RestartGateInput): RestartGate {
  const what = `max_connections = ${g.desired} needs a restart of ${describeWorkload(g.workload)} (now ${g.current})`;
  const recent = recentRestarts(g.limit.history, g.now);
  if (g.limit.heldSince) {
    return {
      open: false,
      reason: "RestartLimitReached",
      message:
        `${what}, but restarts of this server are held since ${g.limit.heldSince.toISOString()}: ` +
        `the operator reached its limit of ${g.limit.max} restarts per hour. Find out why it kept restarting ` +
        `(kubectl describe on every PoolPolicy of this server, the operator's log), then release the hold with: ` +
        releaseCommand(g.workload),
    };
  }
  if (g.restartPolicy === "Manual" && g.approval !== String(g.desired)) {
    return {
      open: false,
      reason: "AwaitingApproval",
      message:
        `${what}; nothing is changed until it is approved (restart.policy Manual): ` +
        `kubectl annotate poolpolicy ${g.policyName} --overwrite ${APPROVAL_ANNOTATION}=${g.desired}`,
    };
  }
  if (g.window && !g.window.open) {
    return {
      open: false,
      reason: "OutsideMaintenanceWindow",
      nextWindow: g.window.nextStart,
      message:
        `${what}; nothing is changed until the next maintenance window opens at ` +
        (g.window.nextStart?.toISOString() ?? "an unknown time"),
    };
  }
  if (recent.length >= g.limit.max) {
    return {
      open: false,
      reason: "RestartLimitReached",
      hold: true,
      message:
        `${what}, but the operator already restarted it ${recent.length} times in the last hour ` +
        `(limit ${g.limit.max}, MAX_RESTARTS_PER_HOUR): restarts are held until a person acts. Find out why ` +
        `(kubectl describe on every PoolPolicy of this server, the operator's log), then release the hold with: ` +
        releaseCommand(g.workload),
    };
  }
  return { open: true };
}
