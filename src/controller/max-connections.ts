/**
 * Deciding what to do about max_connections, as a pure function of what we observed: the one
 * planner for a single instance and for a primary with streaming replicas (a single instance is
 * a group of one, restarted through its pod template; a group is restarted pod by pod in the
 * order topology.ts works out), and for a server a Postgres operator owns (planOwned: a
 * CloudNativePG Cluster's or a Zalando postgresql's parameter instead of ALTER SYSTEM, and that
 * operator restarts). The gates (not managed, unreachable, settings ALTER SYSTEM cannot change,
 * permissions, the workload, approval, window and restart limit) are written here once; those
 * about ALTER SYSTEM do not concern an owned server.
 *
 * For a single instance, the durable record of a requested restart lives on the Postgres workload itself, in the pod
 * template annotation RESTART_ANNOTATION = "<value>@<postmaster start time it must replace>".
 * Writing that annotation IS the restart request (the template change rolls the pods), and it
 * is written once per desired value: after a crash, the next reconcile finds it and waits
 * instead of restarting again. Comparing the recorded start time with the server's current
 * pg_postmaster_start_time() tells whether the requested restart has happened.
 */
import type { ServerFacts } from "../postgres/inspect.js";
import type { ConditionUpdate } from "./conditions.js";
import { GROUP } from "../api/schema.js";
import { isOwnedKind, type PostgresOperator, type WorkloadRef } from "../kube/workloads.js";
import { type RestartGate, restartGate, type RestartGateInput } from "./restart-gate.js";
import { type PodState, planTopologyRestart } from "./topology.js";

export const RESTART_ANNOTATION = `${GROUP}/restart-for-max-connections`;

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

/**
 * A server whose max_connections its Postgres operator owns (a CloudNativePG Cluster, a Zalando
 * postgresql): what the resource holds and what the operator reports.
 */
export interface OwnerState {
  operator: PostgresOperator;
  /** spec.postgresql.parameters.max_connections, as the resource holds it (a string there, in both). */
  maxConnections: string | undefined;
  /** What the operator reports it is doing: CloudNativePG's status.phase, Zalando's status.PostgresClusterStatus. */
  phase: string | undefined;
  /** CloudNativePG's status.phaseReason (Zalando's operator reports no reason). */
  phaseReason: string | undefined;
}

export interface MaxConnectionsInput {
  /** The value the server's policies ask for together; undefined: not managed. */
  desired: number | undefined;
  /** undefined when PostgreSQL could not be reached. */
  facts: ServerFacts | undefined;
  workload: {
    configured: boolean;
    found: boolean;
    rolledOut: boolean;
    record: RestartRecord | undefined;
    description: string;
    /** "Cluster", "postgresql": a Postgres operator owns max_connections and restarts (planOwned). */
    kind?: WorkloadRef["kind"];
    /** A found Cluster or postgresql: its parameter and what its operator reports. */
    owner?: OwnerState;
  };
  /** Everything the restart gate needs except the values, which come from `desired` and `facts`. */
  gate: Omit<RestartGateInput, "desired" | "current">;
  /**
   * A StatefulSet of a primary and streaming replicas: what each pod reports, and the pause
   * between two pod restarts. Absent: one instance, answering through the Service (`facts`).
   */
  group?: { pods: readonly PodState[]; delayMs: number };
}

export interface MaxConnectionsPlan {
  /** Run ALTER SYSTEM SET max_connections = value + pg_reload_conf()… */
  alterTo?: number;
  /** …on each of these pods of a group (ALTER SYSTEM is not replicated); absent: through the Service. */
  alterOn?: string[];
  /** One instance: write this record to the workload's pod template; that starts the rolling restart. */
  requestRestart?: RestartRecord;
  /** A group: delete this pod (its StatefulSet recreates it); `first`: the first restart of this change. */
  restartPod?: { name: string; first: boolean; message: string };
  /** A restart is under way: the reaper pauses and the reconcile polls the rollout. */
  restarting: boolean;
  condition: Omit<ConditionUpdate, "type">;
  /** Outside the maintenance window: when the next one opens (the reconcile comes back then). */
  nextWindow?: Date;
  /** The value is in force after a restart the operator requested. */
  verifiedRestart?: boolean;
  /** The restart limit was reached by this plan: record the hold on the workload. */
  holdRestarts?: boolean;
  /** An owned server: set spec.postgresql.parameters.max_connections to this (after requestRestart, if any). */
  ownerMaxConnections?: number;
}

const RESTART_POLL_HINT = "waiting for the rollout to replace the PostgreSQL pods";

/**
 * Decides the next step for max_connections. The rules that matter most:
 *   - ALTER SYSTEM runs only when the restart that applies it may happen now (or is already
 *     under way): a setting written while waiting for an approval or a window would be applied
 *     by any unplanned restart (a node drain, a crash) without them. The exception is a policy
 *     with no restart workload: there the setting is written and the user restarts.
 *   - "Applied" means the workload has rolled out to its latest template AND the value is in
 *     force: a pod that already shows the value while the StatefulSet still replaces it is not
 *     the end of the restart.
 *   - A new value asked for while a restart is rolling is written at once, without a second
 *     restart request: the instances that start from then on read it. Only if the value is
 *     still not in force once the rollout ends is one more restart requested.
 */
export function planMaxConnections(input: MaxConnectionsInput): MaxConnectionsPlan {
  const { desired, facts, workload } = input;
  if (desired === undefined) {
    return done(
      "True",
      "NotManaged",
      "spec.postgres.maxConnections is not set: the operator leaves max_connections alone",
    );
  }
  const record = workload.record;
  if (!facts) {
    // Unreachable while a restart rolls, or right after we asked for one (the workload's status
    // may not show the rollout yet): a restart in progress, polled fast, not a verdict.
    return record && workload.found && (!workload.rolledOut || record.value === desired)
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
  if (isOwnedKind(workload.kind)) return planOwned(input, facts, desired);
  if (input.group) return planGroup(input, facts, desired, input.group);
  const restartedSince = record !== undefined && facts.postmasterStartTime.getTime() > record.after.getTime();
  const rolling = workload.configured && workload.found && !workload.rolledOut;
  if (facts.maxConnections === desired) {
    if (rolling) {
      return {
        restarting: true,
        condition: {
          status: "False",
          reason: "RestartInProgress",
          message: `max_connections is ${desired} on the instance answering, but ${workload.description} is still rolling out: waiting until every pod runs the latest template`,
        },
      };
    }
    const detail = restartedSince ? ` (verified after the restart at ${facts.postmasterStartTime.toISOString()})` : "";
    return { ...done("True", "Applied", `max_connections is ${desired}${detail}`), verifiedRestart: restartedSince };
  }
  const refused = refusal(facts);
  if (refused) return refused;
  const needsAlter = needsAlterSystem(facts, desired);
  const alterTo = needsAlter ? desired : undefined;
  if (!workload.configured) {
    return {
      alterTo,
      restarting: false,
      condition: {
        status: "False",
        reason: "RestartRequired",
        message:
          `max_connections = ${desired} is written with ALTER SYSTEM and takes effect at the next restart of PostgreSQL ` +
          `(now ${facts.maxConnections}); set spec.postgres.restart.workload to let the operator restart it`,
      },
    };
  }
  if (!workload.found) {
    return done(
      "False",
      "WorkloadNotFound",
      `${workload.description} does not exist, so PostgreSQL cannot be restarted to apply max_connections = ${desired}; nothing was changed`,
    );
  }
  const gate = restartGate({ ...input.gate, desired, current: facts.maxConnections });
  if (rolling || (record && !restartedSince)) {
    // A restart is under way, for this value or an earlier one.
    const forThis = record?.value === desired;
    if (!forThis && !gate.open) return closed(gate);
    return {
      alterTo,
      restarting: true,
      condition: {
        status: "False",
        reason: "RestartInProgress",
        message: forThis
          ? `restarting ${workload.description} to apply max_connections = ${desired} (now ${facts.maxConnections}): ${RESTART_POLL_HINT}`
          : `a restart of ${workload.description} is under way; max_connections = ${desired} is written for the instances that start from now on, and one more restart follows only if it is not in force when the rollout ends`,
      },
    };
  }
  if (record?.value === desired && restartedSince) {
    return done(
      "False",
      "VerificationFailed",
      `PostgreSQL restarted at ${facts.postmasterStartTime.toISOString()} but max_connections is ${facts.maxConnections}, ` +
        `not ${desired} (source: ${facts.settingSource}); not restarting again`,
    );
  }
  if (!gate.open) return closed(gate);
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

/**
 * Settings and permissions under which the operator cannot change max_connections: said before
 * trying, so that there is no failed ALTER (and no Event) on every pass.
 */
function refusal(facts: ServerFacts): MaxConnectionsPlan | undefined {
  if (facts.settingSource === "command line") {
    return done(
      "False",
      "CommandLineOverride",
      `max_connections is set on the postgres command line (${facts.maxConnections}), so ALTER SYSTEM cannot change it; ` +
        "change it where the server is started (e.g. Patroni's or the operator's parameters), or remove spec.postgres.maxConnections",
    );
  }
  if (!facts.allowAlterSystem) {
    return done(
      "False",
      "AlterSystemDisabled",
      "ALTER SYSTEM is disabled on this server (allow_alter_system = off): set max_connections where the server is " +
        "configured (postgresql.conf or its operator's parameters) and remove spec.postgres.maxConnections, or set " +
        "allow_alter_system = on",
    );
  }
  // Checked whether or not an ALTER looks needed: a role that may not ALTER cannot have written
  // a pending value itself.
  if (!facts.mayAlterMaxConnections) {
    return done(
      "False",
      "PermissionDenied",
      "the operator's role may not change max_connections: grant it with " +
        "`GRANT ALTER SYSTEM ON PARAMETER max_connections TO <role>` and " +
        "`GRANT EXECUTE ON FUNCTION pg_reload_conf() TO <role>` (PostgreSQL 15+; before 15 only a superuser may)",
    );
  }
  return undefined;
}

/**
 * A primary with streaming replicas. The gates apply before anything is changed (ALTER SYSTEM
 * included); a change under way (some pod already altered or restarted) is finished, so a group
 * is never left with pods on two values because a window closed or an approval was withdrawn.
 */
function planGroup(
  input: MaxConnectionsInput,
  facts: ServerFacts,
  desired: number,
  group: NonNullable<MaxConnectionsInput["group"]>,
): MaxConnectionsPlan {
  const untouched = group.pods.every((p) => p.ready && p.maxConnections !== desired);
  if (group.pods.some((p) => p.maxConnections !== desired)) {
    const refused = refusal(facts);
    if (refused) return refused;
  }
  if (untouched) {
    const gate = restartGate({ ...input.gate, desired, current: facts.maxConnections });
    if (!gate.open) return closed(gate);
  }
  const step = planTopologyRestart(group.pods, desired, input.gate.now, group.delayMs);
  const inProgress = (message: string) => ({ status: "False" as const, reason: "RestartInProgress", message });
  switch (step.kind) {
    case "done":
      return { ...done("True", "Applied", step.message), verifiedRestart: true };
    case "wait":
      return {
        restarting: step.reason !== "TopologyUnclear",
        condition: { status: "False", reason: step.reason, message: step.message },
      };
    case "alter":
      return {
        alterTo: desired,
        alterOn: step.pods,
        restarting: true,
        condition: inProgress(
          `ALTER SYSTEM SET max_connections = ${desired} on ${step.pods.join(", ")}; restarts pending, one pod at a time`,
        ),
      };
    case "restart":
      return {
        restartPod: { name: step.pod, first: untouched, message: step.message },
        restarting: true,
        condition: inProgress(step.message),
      };
  }
}

/**
 * A server a Postgres operator owns (a CloudNativePG Cluster, a Zalando postgresql): the operator
 * decides when (the same gate as every restart), the owner decides how. No ALTER SYSTEM
 * (CloudNativePG disables it and would not keep it; Patroni, under Zalando's operator, pins
 * max_connections on the postgres command line, which beats it): the plan sets
 * spec.postgresql.parameters.max_connections, and the owner restarts the instances in its own
 * order (CloudNativePG: replicas first, then the primary; Zalando: through Patroni, the primary
 * first when the value goes down). The record on the resource says which value the restart was
 * asked for and which postmaster start it replaces, so the verification is the same as for a
 * StatefulSet.
 */
function planOwned(input: MaxConnectionsInput, facts: ServerFacts, desired: number): MaxConnectionsPlan {
  const { workload } = input;
  const owner = workload.owner;
  if (!workload.found || !owner) {
    return done(
      "False",
      "WorkloadNotFound",
      `${workload.description} does not exist, so max_connections = ${desired} cannot be set on it; nothing was changed`,
    );
  }
  const who = owner.operator.name;
  const healthy = `${owner.operator.statusField} "${owner.operator.healthy}"`;
  const record = workload.record;
  const restartedSince = record !== undefined && facts.postmasterStartTime.getTime() > record.after.getTime();
  const reports = ownerReport(owner);
  if (facts.maxConnections === desired) {
    if (!workload.rolledOut) {
      return {
        restarting: true,
        condition: {
          status: "False",
          reason: "RestartInProgress",
          message: `max_connections is ${desired} on the instance answering, but ${who} is still restarting ${workload.description} (${reports}): waiting until it reports ${healthy}`,
        },
      };
    }
    const detail = restartedSince
      ? ` (verified after ${who} restarted it at ${facts.postmasterStartTime.toISOString()})`
      : "";
    return { ...done("True", "Applied", `max_connections is ${desired}${detail}`), verifiedRestart: restartedSince };
  }
  // A request whose value the resource no longer holds (someone changed it back) brings no restart: not waited for.
  const underWay = record && !restartedSince && owner.maxConnections === String(record.value);
  const crashedBetween = record?.value === desired && !restartedSince && owner.maxConnections !== String(desired);
  if (underWay || crashedBetween) {
    const forThis = record.value === desired;
    return {
      ownerMaxConnections: crashedBetween ? desired : undefined,
      restarting: true,
      condition: {
        status: "False",
        reason: "RestartInProgress",
        message: forThis
          ? `${who} restarts ${workload.description} to apply max_connections = ${desired} (now ${facts.maxConnections}); it reports ${reports}`
          : `${who} restarts ${workload.description} for max_connections = ${record.value} (${reports}); max_connections = ${desired} is asked for once that restart is verified`,
      },
    };
  }
  if (record?.value === desired && restartedSince) {
    return done(
      "False",
      "VerificationFailed",
      `${who} restarted PostgreSQL at ${facts.postmasterStartTime.toISOString()} but max_connections is ${facts.maxConnections}, ` +
        `not ${desired} (source: ${facts.settingSource}; ${owner.operator.verificationHint}); not asking again`,
    );
  }
  if (!workload.rolledOut) {
    return done(
      "False",
      "OwnerBusy",
      `${who} is busy with ${workload.description} (${reports}): max_connections = ${desired} (now ${facts.maxConnections}) is asked for once it reports ${healthy}`,
    );
  }
  const gate = restartGate({ ...input.gate, desired, current: facts.maxConnections });
  if (!gate.open) return closed(gate);
  return {
    requestRestart: { value: desired, after: facts.postmasterStartTime },
    ownerMaxConnections: desired,
    restarting: true,
    condition: {
      status: "False",
      reason: "RestartInProgress",
      message: `max_connections = ${desired} (now ${facts.maxConnections}) set on ${workload.description}; ${who} restarts the instances`,
    },
  };
}

/** What the owner reports, in its own words: `phase "Applying configuration": …`, `status "Updating"`. */
function ownerReport(owner: OwnerState): string {
  const field = owner.operator.statusField.replace(/^status\./, "");
  const phase = owner.phase ? `${field} "${owner.phase}"` : `no ${field} yet`;
  return owner.phaseReason ? `${phase}: ${owner.phaseReason}` : phase;
}

function closed(gate: Extract<RestartGate, { open: false }>): MaxConnectionsPlan {
  return {
    restarting: false,
    nextWindow: gate.nextWindow,
    holdRestarts: gate.hold,
    condition: { status: "False", reason: gate.reason, message: gate.message },
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
