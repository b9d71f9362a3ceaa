/**
 * Deciding what to do about max_connections, as a pure function of what we observed.
 *
 * The durable record of a requested restart lives on the Postgres workload itself, in the pod
 * template annotation RESTART_ANNOTATION = "<value>@<postmaster start time it must replace>".
 * Writing that annotation IS the restart request (the template change rolls the pods), and it
 * is written once per desired value: after a crash, the next reconcile finds it and waits
 * instead of restarting again. Comparing the recorded start time with the server's current
 * pg_postmaster_start_time() tells whether the requested restart has happened.
 */
import type { ServerFacts } from "../postgres/inspect.js";
import type { ConditionUpdate } from "./conditions.js";
import { GROUP } from "../api/schema.js";
import type { WindowState } from "./maintenance-window.js";

export const RESTART_ANNOTATION = `${GROUP}/restart-for-max-connections`;
export const APPROVAL_ANNOTATION = `${GROUP}/approve-restart`;

export interface RestartRecord {
  value: number;
  /** The postmaster start time the restart must move past. */
  after: Date;
}

export function formatRestartRecord(r: RestartRecord): string {
  return `${r.value}@${r.after.toISOString()}`;
}

export function parseRestartRecord(text: string | undefined): RestartRecord | undefined {
  const match = text?.match(/^(\d+)@(.+)$/);
  if (!match) return undefined;
  const after = new Date(match[2]!);
  return Number.isNaN(after.getTime()) ? undefined : { value: Number(match[1]), after };
}

export interface MaxConnectionsInput {
  desired: number | "auto" | undefined;
  /** undefined when PostgreSQL could not be reached. */
  facts: ServerFacts | undefined;
  workload: {
    configured: boolean;
    found: boolean;
    rolledOut: boolean;
    record: RestartRecord | undefined;
    description: string;
  };
  restartPolicy: "Automatic" | "Manual";
  /** Value of the approval annotation on the PoolPolicy, if any. */
  approval: string | undefined;
  /** Whether the maintenance window is open now, when the policy has one. */
  window?: WindowState;
}

export interface MaxConnectionsPlan {
  /** Run ALTER SYSTEM SET max_connections = value + pg_reload_conf(). */
  alterTo?: number;
  /** Write this record to the workload's pod template: that starts the rolling restart. */
  requestRestart?: RestartRecord;
  /** A restart is under way: the reaper pauses and the reconcile polls the rollout. */
  restarting: boolean;
  condition: Omit<ConditionUpdate, "type">;
  /** Outside the maintenance window: when the next one opens (the reconcile comes back then). */
  nextWindow?: Date;
  /** The value is in force after the restart the operator requested for it. */
  verifiedRestart?: boolean;
}

const RESTART_POLL_HINT = "waiting for the rollout to replace the PostgreSQL pods";

export function planMaxConnections(input: MaxConnectionsInput): MaxConnectionsPlan {
  const { desired, facts, workload } = input;
  if (desired === undefined) {
    return done(
      "True",
      "NotManaged",
      "spec.postgres.maxConnections is not set: the operator leaves max_connections alone",
    );
  }
  if (desired === "auto") {
    return done(
      "False",
      "AutoSizingUnavailable",
      'maxConnections: "auto" needs the connection budget, which this operator version does not compute yet; set an integer',
    );
  }
  const pending = workload.record?.value === desired ? workload.record : undefined;
  if (!facts) {
    return pending
      ? {
          restarting: true,
          condition: {
            status: "Unknown",
            reason: "RestartInProgress",
            message: `restart for max_connections = ${desired} under way; PostgreSQL is not reachable yet`,
          },
        }
      : done("Unknown", "PostgresUnreachable", "cannot read max_connections: PostgreSQL is not reachable");
  }
  if (facts.maxConnections === desired) {
    const verified = pending !== undefined && facts.postmasterStartTime.getTime() > pending.after.getTime();
    const detail = verified ? ` (verified after the restart at ${facts.postmasterStartTime.toISOString()})` : "";
    return { ...done("True", "Applied", `max_connections is ${desired}${detail}`), verifiedRestart: verified };
  }
  if (facts.settingSource === "command line") {
    return done(
      "False",
      "CommandLineOverride",
      `max_connections is set on the postgres command line (${facts.maxConnections}), so ALTER SYSTEM cannot change it; ` +
        "change it where the server is started (e.g. Patroni's or the operator's parameters)",
    );
  }
  if (!facts.allowAlterSystem) {
    return done("False", "AlterSystemDisabled", "ALTER SYSTEM is disabled on this server (allow_alter_system = off)");
  }
  const alterTo = needsAlterSystem(facts, desired) ? desired : undefined;
  if (alterTo !== undefined && !facts.mayAlterMaxConnections) {
    // Known before trying: no failed ALTER (and no Event) on every pass.
    return done(
      "False",
      "PermissionDenied",
      `the operator's role may not change max_connections: grant it with \`GRANT ALTER SYSTEM ON PARAMETER max_connections TO <role>\` (PostgreSQL 15+) or use a superuser`,
    );
  }
  if (!workload.configured) {
    return {
      alterTo,
      restarting: false,
      condition: {
        status: "False",
        reason: "RestartRequired",
        message: `max_connections = ${desired} is set with ALTER SYSTEM but needs a PostgreSQL restart (currently ${facts.maxConnections}); set spec.postgres.restart.workload to let the operator restart it`,
      },
    };
  }
  if (!workload.found) {
    return {
      alterTo,
      restarting: false,
      condition: {
        status: "False",
        reason: "WorkloadNotFound",
        message: `${workload.description} does not exist, so PostgreSQL cannot be restarted to apply max_connections = ${desired}`,
      },
    };
  }
  if (pending) {
    const restarted = facts.postmasterStartTime.getTime() > pending.after.getTime();
    if (!restarted || !workload.rolledOut) {
      return {
        alterTo,
        restarting: true,
        condition: {
          status: "False",
          reason: "RestartInProgress",
          message: `restarting ${workload.description} to apply max_connections = ${desired} (now ${facts.maxConnections}): ${RESTART_POLL_HINT}`,
        },
      };
    }
    return {
      restarting: false,
      condition: {
        status: "False",
        reason: "VerificationFailed",
        message:
          `PostgreSQL restarted at ${facts.postmasterStartTime.toISOString()} but max_connections is ${facts.maxConnections}, not ${desired} ` +
          `(source: ${facts.settingSource}); not restarting again`,
      },
    };
  }
  if (input.restartPolicy === "Manual" && input.approval !== String(desired)) {
    return {
      alterTo,
      restarting: false,
      condition: {
        status: "False",
        reason: "AwaitingApproval",
        message:
          `max_connections = ${desired} needs a PostgreSQL restart (now ${facts.maxConnections}); approve it with ` +
          `kubectl annotate poolpolicy <name> ${APPROVAL_ANNOTATION}=${desired}`,
      },
    };
  }
  if (input.window && !input.window.open) {
    const next = input.window.nextStart;
    return {
      alterTo,
      restarting: false,
      nextWindow: next,
      condition: {
        status: "False",
        reason: "OutsideMaintenanceWindow",
        message: `max_connections = ${desired} needs a PostgreSQL restart (now ${facts.maxConnections}); the next maintenance window opens at ${next?.toISOString() ?? "an unknown time"}`,
      },
    };
  }
  return {
    alterTo,
    requestRestart: { value: desired, after: facts.postmasterStartTime },
    restarting: true,
    condition: {
      status: "False",
      reason: "RestartInProgress",
      message: `restarting ${workload.description} to apply max_connections = ${desired} (now ${facts.maxConnections})`,
    },
  };
}

function done(status: ConditionUpdate["status"], reason: string, message: string): MaxConnectionsPlan {
  return { restarting: false, condition: { status, reason, message } };
}

/**
 * Whether ALTER SYSTEM must (still) run. When our role cannot read pg_file_settings we cannot
 * see what postgresql.auto.conf holds; a pending restart is then taken as our earlier ALTER,
 * so that a reconcile does not rewrite the file every time.
 */
function needsAlterSystem(facts: ServerFacts, desired: number): boolean {
  if (facts.mayReadConfigFiles) return facts.alterSystemValue !== desired;
  return !facts.pendingRestart;
}
