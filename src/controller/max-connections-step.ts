/**
 * Carrying out a max_connections change: the planner's decision (max-connections.ts, for one
 * instance and for a primary with replicas alike) turned into actions through the ports.
 *
 * Every action that changes the server (ALTER SYSTEM, a restart request, a pod deletion, a
 * hold) is announced by a named Event before it runs: a crash right after the action must not
 * leave it without its Event, and since the next pass sees the action done and does not repeat
 * it, the Event is not repeated either.
 */
import { apiErrorMessage, statusCodeOf } from "../kube/errors.js";
import {
  describeWorkload,
  isOwnedKind,
  kubectlResource,
  POSTGRES_OPERATORS,
  type WorkloadRef,
} from "../kube/workloads.js";
import { PostgresError } from "../postgres/connection.js";
import type { ServerFacts } from "../postgres/inspect.js";
import { AlterSystemError } from "../postgres/settings.js";
import type { PostgresTarget } from "../postgres/connection.js";
import { restartWorkloadRef, type ServerDesire } from "../server/model.js";
import { type ConditionUpdate, findCondition } from "./conditions.js";
import { isOwnerWorkload, ownerSuggestion, SUGGEST_ON, serverOwner } from "./discovery.js";
import { windowState } from "./maintenance-window.js";
import { planMaxConnections } from "./max-connections.js";
import { operatorMetrics } from "./metrics.js";
import { actionEventName, type Pass, type PolicyEvent } from "./pass.js";
import type { KubernetesPort, PostgresPort } from "./ports.js";
import { APPROVAL_ANNOTATION, type RestartGateInput } from "./restart-gate.js";
import { type GroupMember, readGroup } from "./topology-restart.js";
import { isReplicationGroup, OwnerParameterConflict, type WorkloadState, workloadRef } from "./workload.js";

export interface MaxConnectionsDeps {
  kube: KubernetesPort;
  postgres: PostgresPort;
  maxRestartsPerHour: number;
  /** Restarts already verified (policy/value/postmaster start): counted and announced once. */
  verified: Set<string>;
}

export interface MaxConnectionsResult {
  /** A restart is under way: the reaper pauses and the pass polls fast. */
  restarting: boolean;
  condition: Omit<ConditionUpdate, "type">;
  /** Closed out by a maintenance window: when the next one opens. */
  nextWindow?: Date;
  /** Events of what was found (not announced before an action). */
  events: PolicyEvent[];
}

type GateInput = Omit<RestartGateInput, "desired" | "current">;

/**
 * ALTER SYSTEM, restart through the workload (or pod by pod in a group), verify; or, for a
 * CloudNativePG Cluster or a Zalando postgresql, set its parameter and let its operator restart,
 * verify; or say why not. Where the answer is "cannot" and the server's Service belongs to a
 * Postgres operator, the message says which resource owns it and which workload to name
 * (discovery.ts).
 */
/** What requestRestart adds to a StatefulSet that names no rollingUpdate (workload.ts says why). */
const PARTITION_NOTE =
  ", with spec.updateStrategy.rollingUpdate.partition 0 (the same as unset; without it the StatefulSet controller may restart the pod twice)";

export async function applyMaxConnections(
  deps: MaxConnectionsDeps,
  pass: Pass,
  target: PostgresTarget | undefined,
  facts: ServerFacts | undefined,
  desired: ServerDesire,
): Promise<MaxConnectionsResult> {
  const result = await planAndApply(deps, pass, target, facts, desired);
  if (!SUGGEST_ON.has(result.condition.reason)) return result;
  const found = await serverOwner(deps.kube, pass.spec.postgres.host, pass.policy.metadata.namespace);
  const restart = pass.spec.postgres.restart;
  const workload = restart && restartWorkloadRef(restart, pass.policy.metadata.namespace);
  if (!found || isOwnerWorkload(found.owner, workload)) return result;
  const message = `${result.condition.message}. ${ownerSuggestion(found)}`;
  return { ...result, condition: { ...result.condition, message } };
}

/** The decision (max-connections.ts) and its actions, before discovery adds to a refusal. */
async function planAndApply(
  deps: MaxConnectionsDeps,
  pass: Pass,
  target: PostgresTarget | undefined,
  facts: ServerFacts | undefined,
  desired: ServerDesire,
): Promise<MaxConnectionsResult> {
  const { spec, policy, previous } = pass;
  if (desired.kind === "conflict") {
    const message = `${desired.message}; nothing is applied until they agree`;
    return { restarting: false, events: [], condition: { status: "False", reason: "Conflict", message } };
  }
  if (desired.kind === "unknown") {
    const condition = { status: "Unknown" as const, reason: "AutoSizingUnavailable", message: desired.message };
    return { restarting: false, events: [], condition };
  }
  let workload: WorkloadState;
  try {
    workload = await pass.readWorkload(spec.postgres.restart, policy.metadata.namespace);
  } catch (err) {
    const ref = spec.postgres.restart && restartWorkloadRef(spec.postgres.restart, policy.metadata.namespace);
    if (!ref || !isForbidden(err)) throw err;
    return { restarting: false, events: [], condition: forbidden(ref, "read", err) };
  }
  if (workload.found) {
    operatorMetrics.observeRestartsHeld(workload.description, workload.restarts.heldSince !== undefined);
  }
  const value = desired.kind === "value" ? desired.value : undefined;
  // A primary with replicas: every pod is asked, through its own address.
  const members =
    value !== undefined && facts && target && isReplicationGroup(workload)
      ? await readGroup(deps.kube, deps.postgres, workload, target)
      : undefined;
  const plan = planMaxConnections({
    desired: value,
    facts,
    workload,
    gate: gateInput(deps, pass, workload),
    group: members && { pods: members.map((m) => m.state), delayMs: pass.durations.delayBetweenPodsMs },
  });
  let condition = plan.condition;
  if (plan.holdRestarts) await holdRestarts(deps, pass, workload, plan.condition.message);
  if (plan.alterTo !== undefined && target) {
    const on = plan.alterOn ? ` on ${plan.alterOn.join(", ")}` : "";
    try {
      await pass.announce([
        {
          type: "Normal",
          reason: "MaxConnectionsAltered",
          action: "AlterSystem",
          note: `ALTER SYSTEM SET max_connections = ${plan.alterTo}${on}; configuration reloaded, restart pending`,
          name: actionEventName(policy, `alter-${plan.alterTo}`, facts!.postmasterStartTime),
        },
      ]);
      for (const each of alterTargets(plan.alterOn, members, target)) {
        await deps.postgres.alterMaxConnections(each, plan.alterTo);
      }
    } catch (err) {
      return { events: [], ...alterFailed(err) };
    }
  }
  if (plan.requestRestart && isOwnedKind(workload.kind)) {
    // Before the first change of an operator's resource: if the server's Service belongs to
    // another one, setting this one's parameter would restart a database that is not the
    // policy's, and the restart the policy waits for would never come.
    const found = await serverOwner(deps.kube, spec.postgres.host, policy.metadata.namespace);
    if (found && !isOwnerWorkload(found.owner, workloadRef(workload))) {
      const message = `spec.postgres.restart.workload names ${workload.description}, but PostgreSQL at ${spec.postgres.host} is another one's; nothing was changed. ${ownerSuggestion(found)}`;
      return { restarting: false, events: [], condition: { status: "False", reason: "WorkloadMismatch", message } };
    }
  }
  if (plan.requestRestart) {
    const owner = isOwnedKind(workload.kind) ? POSTGRES_OPERATORS[workload.kind] : undefined;
    await pass.announce([
      {
        type: "Normal",
        reason: "RestartRequested",
        action: owner ? "SetClusterParameter" : "RollingRestart",
        note: owner
          ? `spec.postgresql.parameters.max_connections = ${plan.requestRestart.value} on ${workload.description}; ${owner.name} restarts the instances`
          : `Rolling restart of ${workload.description} to apply max_connections = ${plan.requestRestart.value}${workload.partitionUnset ? PARTITION_NOTE : ""}`,
        name: actionEventName(policy, `restart-${plan.requestRestart.value}`, plan.requestRestart.after),
      },
    ]);
    try {
      await deps.kube.requestRestart(workload, plan.requestRestart, pass.now);
    } catch (err) {
      if (!isForbidden(err)) throw err;
      return { restarting: false, events: [], condition: forbidden(workloadRef(workload), "patch", err) };
    }
    operatorMetrics.restartsRequested.inc();
  }
  if (plan.ownerMaxConnections !== undefined) {
    try {
      await deps.kube.setOwnerMaxConnections(workload, plan.ownerMaxConnections);
    } catch (err) {
      if (isForbidden(err)) {
        return { restarting: false, events: [], condition: forbidden(workloadRef(workload), "patch", err) };
      }
      if (!(err instanceof OwnerParameterConflict)) throw err;
      const condition = { status: "False" as const, reason: "ParameterConflict", message: err.message };
      return { restarting: false, events: [], condition };
    }
  }
  if (plan.restartPod) {
    const pod = plan.restartPod;
    await pass.announce([
      {
        type: "Normal",
        reason: "RestartingPod",
        action: "DeletePod",
        note: `${pod.message}: deleting pod ${pod.name}`,
        name: actionEventName(policy, `restart-${value}-${pod.name}`, facts!.postmasterStartTime),
      },
    ]);
    // The restart limit counts changes, not pods: the first pod of a change is its restart.
    if (pod.first) await deps.kube.recordRestart(workload, pass.now);
    await deps.kube.deletePod(workload.namespace!, pod.name);
    operatorMetrics.restartsRequested.inc();
  }
  const events: PolicyEvent[] = [];
  // Once per restart: a lagging cache can show the old condition to two passes in a row.
  const verification = `${pass.key}/${value}/${facts?.postmasterStartTime.getTime()}`;
  if (
    condition.reason === "Applied" &&
    plan.verifiedRestart &&
    findCondition(previous.conditions, "MaxConnectionsApplied")?.reason === "RestartInProgress" &&
    !deps.verified.has(verification)
  ) {
    deps.verified.add(verification);
    events.push({
      type: "Normal",
      reason: "MaxConnectionsVerified",
      action: "Verify",
      note: condition.message,
      name: actionEventName(policy, `verified-${value}`, facts!.postmasterStartTime),
    });
    operatorMetrics.restartsVerified.inc();
  }
  if (condition.status === "True" && desired.kind === "value") {
    condition = { ...condition, message: `${condition.message} (${desired.source})` };
  }
  return { restarting: plan.restarting, condition, nextWindow: plan.nextWindow, events };
}

const isForbidden = (err: unknown) => statusCodeOf(err) === 403;

/**
 * The operator's RBAC does not cover the workload: a condition saying which right is missing,
 * instead of a pass that fails without a status. A Postgres operator's resource needs the
 * chart's opt-in rule for that operator.
 */
function forbidden(ref: WorkloadRef, verb: "read" | "patch", err: unknown): MaxConnectionsResult["condition"] {
  const grant = isOwnedKind(ref.kind)
    ? `grant the operator get and patch on ${kubectlResource(ref)} (Helm chart: --set ${POSTGRES_OPERATORS[ref.kind].chartValue}=true)`
    : `grant the operator get and patch on ${kubectlResource(ref)}s`;
  return {
    status: "False",
    reason: "WorkloadForbidden",
    message: `the operator may not ${verb} ${describeWorkload(ref)} (${apiErrorMessage(err)}): ${grant}`,
  };
}

/** Where ALTER SYSTEM runs: through the Service, or on each pod of a group the plan names. */
function alterTargets(
  pods: readonly string[] | undefined,
  members: readonly GroupMember[] | undefined,
  service: PostgresTarget,
): PostgresTarget[] {
  if (!pods) return [service];
  // A pod without an address is not Ready: the plan waits for it before it alters anything.
  return pods.flatMap((name) => members?.find((m) => m.state.name === name)?.target ?? []);
}

/** A failed ALTER SYSTEM as a condition; a server that went away under us is not a verdict. */
function alterFailed(err: unknown): Pick<MaxConnectionsResult, "restarting" | "condition"> {
  if (err instanceof AlterSystemError) {
    return { restarting: false, condition: { status: "False", reason: err.failure, message: err.message } };
  }
  const failure = err instanceof PostgresError ? err : undefined;
  if (failure?.reason === "ServerShuttingDown" || failure?.reason === "ConnectionRefused") {
    return {
      restarting: true,
      condition: { status: "Unknown", reason: "PostgresUnreachable", message: failure.message },
    };
  }
  const message = (err as Error).message;
  return { restarting: false, condition: { status: "False", reason: "AlterSystemFailed", message } };
}

/** What the restart gate (restart-gate.ts) needs to know besides the values. */
function gateInput(deps: MaxConnectionsDeps, pass: Pass, workload: WorkloadState): GateInput {
  const restart = pass.spec.postgres.restart;
  const window = restart?.maintenanceWindow;
  return {
    policyName: pass.policy.metadata.name,
    workload: workloadRef(workload),
    restartPolicy: restart?.policy ?? "Automatic",
    approval: pass.policy.metadata.annotations?.[APPROVAL_ANNOTATION],
    window: window ? windowState(pass.now, window, pass.durations.maintenanceWindowMs) : undefined,
    limit: { max: deps.maxRestartsPerHour, ...workload.restarts },
    now: pass.now,
  };
}

/** The restart limit was reached: the hold is recorded on the workload, announced once. */
async function holdRestarts(deps: MaxConnectionsDeps, pass: Pass, workload: WorkloadState, message: string) {
  await pass.announce([
    {
      type: "Warning",
      reason: "RestartsHeld",
      action: "HoldRestarts",
      note: message,
      name: actionEventName(pass.policy, "restart-limit", pass.now),
    },
  ]);
  await deps.kube.holdRestarts(workload, pass.now);
  operatorMetrics.restartLimitReached.inc();
  operatorMetrics.observeRestartsHeld(workload.description, true);
}
