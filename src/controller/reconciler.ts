/**
 * One level-triggered reconcile of one PoolPolicy, read fresh from the cache by key.
 *
 *   deleted?      → finalize: remove the env we injected, drop the finalizer (max_connections stays)
 *   no finalizer? → add it, then go on with the object the API server returned
 *   invalid spec? → Ready=False/InvalidSpec naming the field; nothing is applied
 *   otherwise     → Postgres facts → max_connections plan (ALTER SYSTEM, restart, verify)
 *                 → pool env on the targets → reaper → extension and Redis checks
 *                 → status (written only when it changed) and Events for what was done
 *
 * Every step reports a condition instead of throwing, so one broken dependency (a missing
 * Secret, Redis down) neither hides the others nor crash-loops. Errors that are worth a retry
 * with backoff (the API server failing) are thrown to the controller's rate-limited queue.
 */
import {
  AppsV1Api,
  AutoscalingV2Api,
  CoreV1Api,
  CustomObjectsApi,
  PatchStrategy,
  setHeaderOptions,
  type KubeConfig,
  type V1Deployment,
  type V2HorizontalPodAutoscaler,
} from "@kubernetes/client-node";
import type { Logger } from "../log.js";
import {
  GROUP,
  PLURAL,
  VERSION,
  validateSpec,
  type PoolPolicy,
  type PoolPolicySpec,
  type PoolPolicyStatus,
} from "../api/schema.js";
import { PostgresError, type PostgresPools, describeTarget, type PostgresTarget } from "../postgres/connection.js";
import { inspectServer, type ServerFacts } from "../postgres/inspect.js";
import { alterMaxConnections, AlterSystemError } from "../postgres/settings.js";
import { findCondition, setCondition, summarizeReady, type ConditionType, type ConditionUpdate } from "./conditions.js";
import { APPROVAL_ANNOTATION, planMaxConnections } from "./max-connections.js";
import { isReplicationGroup, readWorkload, requestRestart, type WorkloadState } from "./workload.js";
import { planTopologyRestart } from "./topology.js";
import { carryOut, readGroup } from "./topology-restart.js";
import { parseDuration } from "../api/duration.js";
import { applyPoolEnv, deploymentsOwnedBy, removePoolEnv, type TargetsOutcome } from "./targets.js";
import {
  budgetCondition,
  gatherBudgetTargets,
  policiesOnServer,
  resolveDesiredMaxConnections,
  serverBudget,
  type DesiredMaxConnections,
  type TargetReader,
} from "./server-budget.js";
import { windowState } from "./maintenance-window.js";
import { fieldManagerFor, labelSelectorString } from "./env-injection.js";
import { ReaperSchedule, applyServerTimeout, describeSessions, reaperIntervalMs, runReaper } from "./reaper.js";
import { checkExtensions, checkRedisDependency } from "./checks.js";
import { readSecretKeys, type CachedSecretReader } from "./secrets.js";
import { changedFields, statusChanged, withUsage } from "./status.js";
import { ensureFinalizer, removeFinalizer, FINALIZER } from "./finalizer.js";
import { operatorMetrics, serverLabel } from "./metrics.js";
import { httpStatus, isNotFound } from "./kube-errors.js";
import { RequeueError } from "../runtime/controller.js";

export interface ReconcileResult {
  requeueAfter?: number;
}

export interface PolicyEvent {
  type: "Normal" | "Warning";
  reason: string;
  action: string;
  note: string;
  /** Set for actions that must have exactly one Event, even across a crash (see actionEventName). */
  name?: string;
}

export interface EventSink {
  record(event: {
    regarding: { apiVersion: string; kind: string; name: string; namespace: string; uid?: string };
    type: "Normal" | "Warning";
    reason: string;
    action: string;
    note: string;
    name?: string;
  }): Promise<void> | void;
}

export interface ReconcilerDeps {
  kc: KubeConfig;
  /** The latest PoolPolicy from the informer cache, by "namespace/name". */
  getPolicy(key: string): PoolPolicy | undefined;
  /** Every PoolPolicy in the cache: the budget of a server spans all policies that point at it. */
  listPolicies?(): PoolPolicy[];
  pools: PostgresPools;
  events: EventSink;
  log: Logger;
  /** Called with the policy's target selector so the wiring can watch its Deployments; null to stop. */
  watchTargets?(key: string, namespace: string, labelSelector: string | null): void;
  /**
   * The policy's Deployments as its watch holds them; undefined when no watch with this selector
   * has synced. Reading the caches instead of listing kept the API server's load and the
   * operator's memory flat as Deployments grow (docs/benchmarks.md).
   */
  cachedTargets?(key: string, namespace: string, labelSelector: string): Promise<V1Deployment[] | undefined>;
  /** The namespace's HorizontalPodAutoscalers as the operator's watch holds them; undefined until synced. */
  cachedHpas?(namespace: string): Promise<V2HorizontalPodAutoscaler[] | undefined>;
  /** The credentials Secret from its watch; undefined (not watched or not synced) reads it with a GET. */
  cachedSecret?: CachedSecretReader;
  now?: () => Date;
  /** How often a converged policy re-reads its server's statistics. */
  statsRefreshMs?: number;
}

/** The state one reconcile pass carries from step to step. */
interface Pass {
  key: string;
  policy: PoolPolicy;
  spec: PoolPolicySpec;
  previous: PoolPolicyStatus;
  status: PoolPolicyStatus;
  now: Date;
  log: Logger;
  events: PolicyEvent[];
  set: (type: ConditionType, c: Omit<ConditionUpdate, "type">) => void;
}

type PostgresConnection = { ok: true; target: PostgresTarget } | { ok: false; reason: string; message: string };

interface MaxConnectionsStep {
  restarting: boolean;
  condition: Omit<ConditionUpdate, "type">;
  /** When closed out by a maintenance window: when the next one opens. */
  nextWindow?: Date;
}

/**
 * The name of the one Event of an action on a server: the policy, the action and the value,
 * and the postmaster start time it acted upon (the same action after a later restart is a new
 * one). Recorded again after a crash, the Event already exists and nothing is added.
 */
function actionEventName(policy: PoolPolicy, action: string, postmasterStart: Date): string {
  return `${policy.metadata.name}.${action}-${postmasterStart.getTime().toString(36)}`.slice(0, 253);
}

/** ReaperHealthy reasons that a reaper pass itself sets. */
const REAPER_VERDICTS = new Set(["Running", "DryRun", "ReapFailed"]);

/** After a 409, come back soon: by then the watch has most likely delivered the newer object. */
const STALE_RETRY_MS = 250;

/** While something is moving (a restart, a rollout), poll it this often. */
const PROGRESS_POLL_MS = 2_000;

/**
 * While PostgreSQL restarts, poll faster: nothing watched tells us it is back, and every poll
 * is one connection attempt. At 2 s, the restart benchmark saw the change verified about 2 s
 * after clients already had it (docs/benchmarks.md).
 */
const RESTART_POLL_MS = 500;

/** The soonest a pass asks to come back, whatever is due. */
const MIN_REQUEUE_MS = 500;

export class PoolPolicyReconciler {
  private readonly apps: AppsV1Api;
  private readonly autoscaling: AutoscalingV2Api;
  private readonly core: CoreV1Api;
  private readonly custom: CustomObjectsApi;
  private readonly reaper = new ReaperSchedule();
  /** Restarts already verified (policy/value/postmaster start): counted and announced once. */
  private readonly verified = new Set<string>();
  private readonly lastStatusWrite = new Map<string, { basedOn: string | undefined; status: PoolPolicyStatus }>();
  private readonly now: () => Date;
  private readonly read: TargetReader = {
    deployments: async (key, namespace, labelSelector) =>
      (await this.deps.cachedTargets?.(key, namespace, labelSelector)) ??
      (await this.apps.listNamespacedDeployment({ namespace, labelSelector })).items,
    hpas: async (namespace) =>
      (await this.deps.cachedHpas?.(namespace)) ??
      (await this.autoscaling.listNamespacedHorizontalPodAutoscaler({ namespace })).items,
  };

  constructor(private readonly deps: ReconcilerDeps) {
    this.apps = deps.kc.makeApiClient(AppsV1Api);
    this.autoscaling = deps.kc.makeApiClient(AutoscalingV2Api);
    this.core = deps.kc.makeApiClient(CoreV1Api);
    this.custom = deps.kc.makeApiClient(CustomObjectsApi);
    this.now = deps.now ?? (() => new Date());
  }

  async reconcile(key: string): Promise<ReconcileResult> {
    let policy = this.deps.getPolicy(key);
    if (!policy) {
      this.forget(key);
      return {};
    }
    if (policy.metadata.deletionTimestamp) return this.finalize(key, policy);
    if (!(policy.metadata.finalizers ?? []).includes(FINALIZER)) {
      // Nothing is changed before the finalizer is on. Going on in this pass rather than
      // waiting for the watch to bring the update back saves a round trip before a new policy's
      // first Deployment is touched (the fan-out benchmark, docs/benchmarks.md).
      policy = await ensureFinalizer(this.custom, policy);
    }
    const validation = validateSpec(policy.spec);
    if (!validation.ok) return this.reportInvalidSpec(policy, validation.message);
    return this.converge(key, policy, validation.spec);
  }

  private async converge(key: string, policy: PoolPolicy, spec: PoolPolicySpec): Promise<ReconcileResult> {
    const { namespace } = policy.metadata;
    const previous: PoolPolicyStatus = policy.status ?? {};
    const updates: ConditionUpdate[] = [];
    const pass: Pass = {
      key,
      policy,
      spec,
      previous,
      now: this.now(),
      log: this.deps.log.child({ policy: key }),
      events: [],
      status: { ...previous },
      set: (type, c) => updates.push({ type, ...c }),
    };
    const { now, events, status, set } = pass;

    this.deps.watchTargets?.(key, namespace, labelSelectorString(spec.targets.selector));

    // 1. PostgreSQL: credentials, then one round of read-only facts.
    const connection = await this.postgresTarget(namespace, spec);
    let facts: ServerFacts | undefined;
    if (!connection.ok) {
      set("PostgresReachable", { status: "False", reason: connection.reason, message: connection.message });
    } else {
      try {
        facts = await this.deps.pools.withClient(connection.target, inspectServer);
        set("PostgresReachable", {
          status: "True",
          reason: "Connected",
          message: `connected to ${describeTarget(connection.target)}: PostgreSQL ${facts.version}`,
        });
        status.postgres = withUsage(previous.postgres, facts);
        operatorMetrics.observeServer(connection.target, facts);
      } catch (err) {
        const pgErr = err instanceof PostgresError ? err : new PostgresError("QueryFailed", String(err));
        set("PostgresReachable", { status: "False", reason: pgErr.reason, message: pgErr.message });
      }
    }

    // 2. The budget of the server, across every policy that points at it, and the
    //    max_connections those policies ask for together.
    const peers = policiesOnServer(this.deps.listPolicies?.() ?? [policy], spec);
    const self = peers.find((p) => p.key === key) ?? { key, namespace, spec };
    const budget = facts ? serverBudget(await gatherBudgetTargets(this.read, peers), facts, spec) : undefined;
    if (budget && connection.ok) {
      status.budget = {
        demand: budget.demand,
        capacity: budget.capacity,
        reserve: budget.reserve,
        targets: budget.targets,
      };
      operatorMetrics.observeBudget(serverLabel(connection.target), budget);
    }
    const desired = resolveDesiredMaxConnections(self, peers, budget, facts);

    // 3. max_connections and the pool env, ordered by direction: when the server's limit goes
    //    up, raise it (restart) before any pool grows; when it goes down, let the apps roll out
    //    with their smaller pools first, then lower it.
    const current = facts?.maxConnections;
    const lowering = desired.kind === "value" && current !== undefined && desired.value < current;
    let maxConnections: MaxConnectionsStep;
    let targets: TargetsOutcome;
    if (lowering) {
      targets = await this.injectEnv(pass, false);
      maxConnections =
        targets.condition.status === "True"
          ? await this.applyMaxConnections(pass, connection, facts, desired)
          : {
              restarting: false,
              condition: {
                status: "False",
                reason: "WaitingForApps",
                message: `lowering max_connections to ${desired.value} once the apps run with their new pools (${targets.condition.message})`,
              },
            };
    } else {
      maxConnections = await this.applyMaxConnections(pass, connection, facts, desired);
      // Pools may grow only once the server is known to allow it: while PostgreSQL is down
      // (e.g. restarting to raise max_connections) the current value is unknown, so hold.
      const raisePending = desired.kind === "value" && (current === undefined || desired.value > current);
      targets = await this.injectEnv(pass, raisePending ? desired.value : false);
    }
    set("MaxConnectionsApplied", maxConnections.condition);
    set("PoolEnvInjected", targets.condition);
    set("BudgetWithinLimits", budgetCondition(budget));

    // 4. Reaper.
    const reaperDueIn = await this.reap(
      key,
      spec,
      connection,
      facts,
      maxConnections.restarting,
      status,
      set,
      events,
      now,
    );

    // 5. Extensions and Redis.
    set("ExtensionsReady", checkExtensions(spec, facts));
    const redis = await checkRedisDependency(this.core, namespace, spec);
    set("RedisAvailable", redis.condition);
    status.redis = redis.status ?? previous.redis;
    if (!spec.redis) delete status.redis;

    // 6. Status.
    const forReady = updates.filter((u) => u.type !== "RedisAvailable" || redis.required);
    updates.push(summarizeReady(forReady));
    let conditions = previous.conditions ?? [];
    for (const u of updates) conditions = setCondition(conditions, u, now, policy.metadata.generation ?? 0);
    status.conditions = conditions;
    status.observedGeneration = policy.metadata.generation;
    events.push(...transitionEvents(previous, updates));

    // Events first: they record actions already taken, so they must not wait for (or be lost
    // with) a status write that may fail; and whoever sees the new status finds its Events.
    await this.emit(policy, events);
    if (statusChanged(previous, status) && !this.cacheLagsOurWrite(policy, status)) {
      pass.log.debug({ action: "WriteStatus", changed: changedFields(previous, status) }, "status changed");
      await this.writeStatus(policy, status);
    }

    const poll = maxConnections.restarting
      ? RESTART_POLL_MS
      : targets.rollingOut
        ? PROGRESS_POLL_MS
        : (this.deps.statsRefreshMs ?? 30_000);
    const untilWindow = maxConnections.nextWindow
      ? maxConnections.nextWindow.getTime() - now.getTime()
      : Number.POSITIVE_INFINITY;
    const next = Math.min(poll, reaperDueIn, untilWindow);
    return { requeueAfter: Math.max(next, MIN_REQUEUE_MS) };
  }

  /** ALTER SYSTEM, restart through the workload, verify; or say why not. */
  private async applyMaxConnections(
    pass: Pass,
    connection: PostgresConnection,
    facts: ServerFacts | undefined,
    desired: DesiredMaxConnections,
  ): Promise<MaxConnectionsStep> {
    const { spec, policy, previous, events } = pass;
    if (desired.kind === "conflict")
      return { restarting: false, condition: { status: "False", reason: "Conflict", message: desired.message } };
    if (desired.kind === "unknown")
      return {
        restarting: false,
        condition: { status: "Unknown", reason: "AutoSizingUnavailable", message: desired.message },
      };
    const workload = await readWorkload(this.apps, spec.postgres.restart, policy.metadata.namespace);
    if (isReplicationGroup(workload) && desired.kind === "value" && facts && connection.ok) {
      return this.applyAcrossGroup(pass, connection.target, facts, desired.value, workload);
    }
    const window = spec.postgres.restart?.maintenanceWindow;
    const plan = planMaxConnections({
      desired: desired.kind === "value" ? desired.value : undefined,
      facts,
      workload,
      restartPolicy: spec.postgres.restart?.policy ?? "Automatic",
      approval: policy.metadata.annotations?.[APPROVAL_ANNOTATION],
      window: window ? windowState(pass.now, window) : undefined,
    });
    let condition = plan.condition;
    // The two actions that change the server are announced by their Event before they run:
    // a crash right after the action must not leave it without its Event, and the action is
    // not repeated after a crash (the next pass sees it done), so the Event is not repeated either.
    if (plan.alterTo !== undefined && connection.ok) {
      try {
        await this.emit(policy, [
          {
            type: "Normal",
            reason: "MaxConnectionsAltered",
            action: "AlterSystem",
            note: `ALTER SYSTEM SET max_connections = ${plan.alterTo}; configuration reloaded, restart pending`,
            name: actionEventName(policy, `alter-${plan.alterTo}`, facts!.postmasterStartTime),
          },
        ]);
        await this.deps.pools.withClient(connection.target, (c) => alterMaxConnections(c, plan.alterTo!));
      } catch (err) {
        if (err instanceof AlterSystemError)
          return { restarting: false, condition: { status: "False", reason: err.failure, message: err.message } };
        // The server went away under us (e.g. a restart began): not a verdict, try again soon.
        const failure = err instanceof PostgresError ? err : undefined;
        const transient = failure?.reason === "ServerShuttingDown" || failure?.reason === "ConnectionRefused";
        return transient
          ? {
              restarting: true,
              condition: { status: "Unknown", reason: "PostgresUnreachable", message: failure.message },
            }
          : {
              restarting: false,
              condition: { status: "False", reason: "AlterSystemFailed", message: (err as Error).message },
            };
      }
    }
    if (plan.requestRestart) {
      await this.emit(policy, [
        {
          type: "Normal",
          reason: "RestartRequested",
          action: "RollingRestart",
          note: `Rolling restart of ${workload.description} to apply max_connections = ${plan.requestRestart.value}`,
          name: actionEventName(policy, `restart-${plan.requestRestart.value}`, plan.requestRestart.after),
        },
      ]);
      await requestRestart(this.apps, workload, plan.requestRestart);
      operatorMetrics.restartsRequested.inc();
    }
    // Once per restart: a lagging cache can show the old condition to two passes in a row.
    const verification = `${pass.key}/${desired.kind === "value" ? desired.value : ""}/${facts?.postmasterStartTime.getTime()}`;
    if (
      condition.reason === "Applied" &&
      plan.verifiedRestart &&
      findCondition(previous.conditions, "MaxConnectionsApplied")?.status !== "True" &&
      !this.verified.has(verification)
    ) {
      this.verified.add(verification);
      events.push({
        type: "Normal",
        reason: "MaxConnectionsVerified",
        action: "Verify",
        note: condition.message,
        name: actionEventName(
          policy,
          `verified-${desired.kind === "value" ? desired.value : 0}`,
          facts!.postmasterStartTime,
        ),
      });
      operatorMetrics.restartsVerified.inc();
    }
    if (condition.status === "True" && desired.kind === "value" && desired.source !== "spec") {
      condition = { ...condition, message: `${condition.message} (${desired.source})` };
    }
    return { restarting: plan.restarting, condition, nextWindow: plan.nextWindow };
  }

  /**
   * max_connections on a primary with streaming replicas: every pod altered, then restarted one
   * at a time in hot-standby order (see topology.ts), each verified before the next.
   */
  private async applyAcrossGroup(
    pass: Pass,
    target: PostgresTarget,
    facts: ServerFacts,
    desired: number,
    workload: WorkloadState,
  ): Promise<MaxConnectionsStep> {
    const { spec, policy, previous, events } = pass;
    if (facts.settingSource === "command line") {
      return {
        restarting: false,
        condition: {
          status: "False",
          reason: "CommandLineOverride",
          message: `max_connections is set on the postgres command line (${facts.maxConnections}), so ALTER SYSTEM cannot change it`,
        },
      };
    }
    const members = await readGroup(this.core, this.deps.pools, workload, target);
    const states = members.map((m) => m.state);
    const untouched = states.every((p) => p.ready && p.maxConnections !== desired);
    if (untouched) {
      // Gates apply before the first pod restarts; a restart under way is finished.
      const restart = spec.postgres.restart!;
      if (restart.policy === "Manual" && policy.metadata.annotations?.[APPROVAL_ANNOTATION] !== String(desired)) {
        return {
          restarting: false,
          condition: {
            status: "False",
            reason: "AwaitingApproval",
            message: `max_connections = ${desired} needs a restart of ${workload.description}; approve it with kubectl annotate poolpolicy ${policy.metadata.name} ${APPROVAL_ANNOTATION}=${desired}`,
          },
        };
      }
      const window = restart.maintenanceWindow ? windowState(pass.now, restart.maintenanceWindow) : undefined;
      if (window && !window.open) {
        return {
          restarting: false,
          nextWindow: window.nextStart,
          condition: {
            status: "False",
            reason: "OutsideMaintenanceWindow",
            message: `max_connections = ${desired} needs a restart of ${workload.description}; the next maintenance window opens at ${window.nextStart?.toISOString()}`,
          },
        };
      }
    }
    const step = planTopologyRestart(
      states,
      desired,
      pass.now,
      parseDuration(spec.postgres.restart?.delayBetweenPods ?? "0s") ?? 0,
    );
    if (step.kind === "done") {
      const condition = { status: "True" as const, reason: "Applied", message: step.message };
      if (findCondition(previous.conditions, "MaxConnectionsApplied")?.reason === "RestartInProgress") {
        events.push({ type: "Normal", reason: "MaxConnectionsVerified", action: "Verify", note: step.message });
        operatorMetrics.restartsVerified.inc();
      }
      return { restarting: false, condition };
    }
    if (step.kind === "wait") {
      return {
        restarting: step.reason !== "TopologyUnclear",
        condition: { status: "False", reason: step.reason, message: step.message },
      };
    }
    const note = await carryOut(step, members, desired, this.core, this.deps.pools, workload.namespace!);
    if (step.kind === "restart") operatorMetrics.restartsRequested.inc();
    events.push({
      type: "Normal",
      reason: step.kind === "alter" ? "MaxConnectionsAltered" : "RestartingPod",
      action: step.kind === "alter" ? "AlterSystem" : "DeletePod",
      note,
    });
    return { restarting: true, condition: { status: "False", reason: "RestartInProgress", message: note } };
  }

  /** The pool env on the target Deployments; `holdGrowthUntil` holds back growing pools while max_connections is being raised to that value. */
  private async injectEnv(pass: Pass, holdGrowthUntil: number | false): Promise<TargetsOutcome> {
    const { policy, spec, previous, events, status } = pass;
    const { name, namespace } = policy.metadata;
    const selected = await this.read.deployments(pass.key, namespace, labelSelectorString(spec.targets.selector));
    // The targets our last status write named too: the cache may not show that write yet, and a
    // Deployment that stopped matching meanwhile would otherwise keep the env for good.
    const written = this.lastStatusWrite.get(pass.key)?.status.targets ?? [];
    const known = [
      ...(previous.targets ?? []),
      ...written.filter((w) => !previous.targets?.some((t) => t.name === w.name)),
    ];
    const targets = await applyPoolEnv(this.apps, { name, namespace }, spec, selected, known, {
      holdGrowthUntil,
    });
    for (const a of targets.actions)
      events.push({
        type: a.warning ? "Warning" : "Normal",
        reason: a.reason,
        action: "ServerSideApply",
        note: a.note,
      });
    status.targets = targets.targets;
    status.targetsSummary = targets.summary;
    return targets;
  }

  private async reap(
    key: string,
    spec: PoolPolicySpec,
    connection: PostgresConnection,
    facts: ServerFacts | undefined,
    restarting: boolean,
    status: PoolPolicyStatus,
    set: (type: ConditionType, c: Omit<ConditionUpdate, "type">) => void,
    events: PolicyEvent[],
    now: Date,
  ): Promise<number> {
    const interval = reaperIntervalMs(spec);
    if (!spec.reaper.enabled) {
      set("ReaperHealthy", { status: "True", reason: "Disabled", message: "the reaper is disabled" });
      return Number.POSITIVE_INFINITY;
    }
    if (restarting) {
      set("ReaperHealthy", { status: "True", reason: "Paused", message: "paused while PostgreSQL restarts" });
      return PROGRESS_POLL_MS;
    }
    if (!connection.ok || !facts) {
      set("ReaperHealthy", {
        status: "Unknown",
        reason: "PostgresUnreachable",
        message: "cannot reap: PostgreSQL is not reachable",
      });
      return interval;
    }
    let serverTimeout = "";
    if (spec.reaper.mode !== "Terminate") {
      try {
        const note = await this.deps.pools.withClient(connection.target, (c) => applyServerTimeout(c, spec));
        if (note) events.push({ type: "Normal", reason: "ServerTimeoutSet", action: "AlterSystem", note });
        serverTimeout = `PostgreSQL ends sessions idle in transaction for more than ${spec.reaper.idleInTransactionTimeout} (${spec.reaper.serverTimeout.scope === "Server" ? "server-wide" : `roles ${spec.reaper.serverTimeout.roles.join(", ")}`})`;
      } catch (err) {
        set("ReaperHealthy", {
          status: "False",
          reason: "ServerTimeoutFailed",
          message: `cannot set idle_in_transaction_session_timeout: ${(err as Error).message}`,
        });
        return interval;
      }
      if (spec.reaper.mode === "ServerTimeout") {
        set("ReaperHealthy", { status: "True", reason: "ServerTimeout", message: serverTimeout });
        return Number.POSITIVE_INFINITY;
      }
    }
    // Between passes the last pass's verdict stands; any other state (a pause, PostgreSQL
    // having been away) is stale now that PostgreSQL answers, so a pass runs right away.
    const dueIn = this.reaper.dueIn(key, interval, now.getTime());
    const previousCondition = findCondition(status.conditions, "ReaperHealthy");
    if (dueIn > 0 && previousCondition && REAPER_VERDICTS.has(previousCondition.reason)) {
      set("ReaperHealthy", {
        status: previousCondition.status,
        reason: previousCondition.reason,
        message: previousCondition.message,
      });
      return dueIn;
    }
    try {
      const outcome = await this.deps.pools.withClient(connection.target, (c) =>
        runReaper(c, spec, status.reaper, now),
      );
      this.reaper.markRun(key, now.getTime());
      status.reaper = outcome.status;
      set("ReaperHealthy", outcome.condition);
      const terminated = outcome.sessions.filter((s) => s.terminated);
      operatorMetrics.sessionsReaped.inc({ namespace: key.split("/")[0] }, terminated.length);
      if (terminated.length > 0) {
        events.push({
          type: "Normal",
          reason: "SessionsReaped",
          action: "TerminateBackend",
          note: `Terminated ${terminated.length} session(s) idle in transaction: ${describeSessions(terminated)}`,
        });
      } else if (spec.reaper.dryRun && outcome.sessions.length > 0) {
        events.push({
          type: "Normal",
          reason: "ReapDryRun",
          action: "TerminateBackend",
          note: `Dry run: would terminate ${outcome.sessions.length} session(s): ${describeSessions(outcome.sessions)}`,
        });
      }
    } catch (err) {
      this.reaper.markRun(key, now.getTime());
      set("ReaperHealthy", { status: "False", reason: "ReapFailed", message: (err as Error).message });
    }
    return interval;
  }

  private async postgresTarget(namespace: string, spec: PoolPolicySpec): Promise<PostgresConnection> {
    const s = spec.postgres.credentialsSecret;
    const keys = [s.usernameKey, s.passwordKey];
    const secret = await readSecretKeys(this.core, namespace, s.name, keys, this.deps.cachedSecret);
    if (!secret.ok) return secret;
    return {
      ok: true,
      target: {
        host: spec.postgres.host,
        port: spec.postgres.port,
        database: spec.postgres.database,
        sslMode: spec.postgres.sslMode,
        user: secret.values[s.usernameKey]!,
        password: secret.values[s.passwordKey]!,
      },
    };
  }

  private async reportInvalidSpec(policy: PoolPolicy, message: string): Promise<ReconcileResult> {
    const now = this.now();
    const previous = policy.status ?? {};
    const generation = policy.metadata.generation ?? 0;
    const update: ConditionUpdate = {
      type: "Ready",
      status: "False",
      reason: "InvalidSpec",
      message: `nothing was applied: ${message}`,
    };
    const status: PoolPolicyStatus = {
      ...previous,
      observedGeneration: generation,
      conditions: setCondition(previous.conditions ?? [], update, now, generation),
    };
    if (statusChanged(previous, status)) {
      await this.emit(policy, [{ type: "Warning", reason: "InvalidSpec", action: "Validate", note: message }]);
      await this.writeStatus(policy, status);
    }
    return {};
  }

  private async finalize(key: string, policy: PoolPolicy): Promise<ReconcileResult> {
    const { name, namespace } = policy.metadata;
    if (!(policy.metadata.finalizers ?? []).includes(FINALIZER)) return {};
    const manager = fieldManagerFor(name);
    const owned = await deploymentsOwnedBy(this.apps, namespace, manager);
    const notes: PolicyEvent[] = [];
    for (const deployment of owned) {
      if (await removePoolEnv(this.apps, deployment, namespace, manager)) {
        notes.push({
          type: "Normal",
          reason: "EnvRemoved",
          action: "Finalize",
          note: `Removed the pool env from Deployment ${deployment}: the PoolPolicy is being deleted`,
        });
      }
    }
    await this.emit(policy, notes);
    await removeFinalizer(this.custom, policy);
    this.deps.log.info(
      { policy: key, action: "Finalize", deployments: owned },
      "removed injected env and the finalizer; max_connections left as is",
    );
    this.forget(key);
    return {};
  }

  private forget(key: string): void {
    this.reaper.forget(key);
    this.lastStatusWrite.delete(key);
    this.deps.watchTargets?.(key, "", null);
  }

  /**
   * True when the cache still shows the object our last status write was based on and that
   * write already said exactly this: the watch event of our own write has not arrived yet, and
   * writing again would be a no-op round trip (and, counted, a hot loop in disguise).
   */
  private cacheLagsOurWrite(policy: PoolPolicy, status: PoolPolicyStatus): boolean {
    const last = this.lastStatusWrite.get(`${policy.metadata.namespace}/${policy.metadata.name}`);
    return (
      last !== undefined && last.basedOn === policy.metadata.resourceVersion && !statusChanged(last.status, status)
    );
  }

  /**
   * Writes the whole status without a resourceVersion precondition: the status says which spec
   * it describes (observedGeneration), so a spec edit made during this pass does not make it
   * wrong, and the edit's own watch event brings a new pass. With the precondition, a policy
   * edited faster than a pass takes never got its status written (the event-storm benchmark).
   * The uid test keeps a status from landing on a policy deleted and re-created meanwhile.
   */
  private async writeStatus(policy: PoolPolicy, status: PoolPolicyStatus): Promise<void> {
    const { name, namespace, uid } = policy.metadata;
    try {
      await this.custom.patchNamespacedCustomObjectStatus(
        {
          group: GROUP,
          version: VERSION,
          plural: PLURAL,
          namespace,
          name,
          body: [
            { op: "test", path: "/metadata/uid", value: uid },
            { op: "add", path: "/status", value: status },
          ],
        },
        setHeaderOptions("Content-Type", PatchStrategy.JsonPatch),
      );
    } catch (err) {
      // A failed test answers 422, like a status the schema refuses: only the uid tells them apart.
      if (httpStatus(err) === 422 && (await this.uidNow(policy)) !== uid) {
        throw new RequeueError(
          `${namespace}/${name} was deleted or re-created meanwhile; reconciling what is there now`,
          STALE_RETRY_MS,
        );
      }
      throw err;
    }
    // Only a write that happened can be one the cache has not caught up with.
    this.lastStatusWrite.set(`${namespace}/${name}`, { basedOn: policy.metadata.resourceVersion, status });
    operatorMetrics.statusWrites.inc({ namespace });
  }

  private async uidNow(policy: PoolPolicy): Promise<string | undefined> {
    const { name, namespace } = policy.metadata;
    try {
      const current = (await this.custom.getNamespacedCustomObject({
        group: GROUP,
        version: VERSION,
        plural: PLURAL,
        namespace,
        name,
      })) as PoolPolicy;
      return current.metadata.uid;
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw err;
    }
  }

  /** Every Event is also one structured log line, with the policy key and the reason. */
  private async emit(policy: PoolPolicy, events: readonly PolicyEvent[]): Promise<void> {
    const { name, namespace, uid } = policy.metadata;
    const regarding = { apiVersion: policy.apiVersion, kind: policy.kind, name, namespace, uid };
    for (const e of events) {
      this.deps.log[e.type === "Warning" ? "warn" : "info"](
        { policy: `${namespace}/${name}`, action: e.action, reason: e.reason },
        e.note,
      );
      await this.deps.events.record({ regarding, ...e });
    }
  }
}

/** Reasons that say "under way", not "broken": their Events are Normal, not Warning. */
const PROGRESS_REASONS = new Set([
  "RestartInProgress",
  "RollingOut",
  "AwaitingApproval",
  "Paused",
  "Scheduled",
  "WaitingForApps",
  "WaitingForMaxConnections",
  "OutsideMaintenanceWindow",
]);

/** An Event for every condition that changed status or reason: the story `kubectl describe` tells. */
function transitionEvents(previous: PoolPolicyStatus, updates: readonly ConditionUpdate[]): PolicyEvent[] {
  const out: PolicyEvent[] = [];
  for (const u of updates) {
    const before = findCondition(previous.conditions, u.type);
    if (before && before.status === u.status && before.reason === u.reason) continue;
    if (!before && u.status === "True" && u.type !== "Ready") continue; // first report of a healthy dependency: no noise
    out.push({
      type: u.status === "False" && !PROGRESS_REASONS.has(u.reason) ? "Warning" : "Normal",
      reason: u.type === "Ready" ? (u.status === "True" ? "Ready" : "NotReady") : u.reason,
      action: "Reconcile",
      note: `${u.type}=${u.status} (${u.reason}): ${u.message}`,
    });
  }
  return out;
}
