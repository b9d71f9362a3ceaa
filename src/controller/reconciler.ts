/**
 * One level-triggered reconcile of one PoolPolicy, read fresh from the cache by key.
 *
 *   deleted?      → finalize: remove the env we injected, drop the finalizer (max_connections stays)
 *   no finalizer? → add it and stop; the update event brings us back
 *   invalid spec? → Ready=False/InvalidSpec naming the field; nothing is applied
 *   otherwise     → Postgres facts → max_connections plan (ALTER SYSTEM, restart, verify)
 *                 → pool env on the targets → reaper → extension and Redis checks
 *                 → status (written only when it changed) and Events for what was done
 *
 * Every step reports a condition instead of throwing, so one broken dependency (a missing
 * Secret, Redis down) neither hides the others nor crash-loops. Errors that are worth a retry
 * with backoff (the API server failing) are thrown to the controller's rate-limited queue.
 */
import { AppsV1Api, CoreV1Api, CustomObjectsApi, type KubeConfig } from "@kubernetes/client-node";
import type { Logger } from "../log.js";
import { GROUP, PLURAL, VERSION, validateSpec, type PoolPolicy, type PoolPolicySpec, type PoolPolicyStatus } from "../api/schema.js";
import { PostgresError, PostgresPools, describeTarget, type PostgresTarget } from "../postgres/connection.js";
import { inspectServer, type ServerFacts } from "../postgres/inspect.js";
import { alterMaxConnections, AlterSystemError } from "../postgres/settings.js";
import { findCondition, setCondition, summarizeReady, type ConditionType, type ConditionUpdate } from "./conditions.js";
import { APPROVAL_ANNOTATION, planMaxConnections } from "./max-connections.js";
import { readWorkload, requestRestart } from "./workload.js";
import { applyPoolEnv, deploymentsOwnedBy, removePoolEnv } from "./targets.js";
import { fieldManagerFor, labelSelectorString } from "./env-injection.js";
import { ReaperSchedule, describeSessions, reaperIntervalMs, runReaper } from "./reaper.js";
import { checkExtensions, checkRedisDependency } from "./checks.js";
import { readSecretKeys } from "./secrets.js";
import { statusChanged, withUsage } from "./status.js";
import { ensureFinalizer, removeFinalizer, FINALIZER } from "./finalizer.js";
import { operatorMetrics } from "./metrics.js";

export interface ReconcileResult {
  requeueAfter?: number;
}

export interface PolicyEvent {
  type: "Normal" | "Warning";
  reason: string;
  action: string;
  note: string;
}

export interface EventSink {
  record(event: {
    regarding: { apiVersion: string; kind: string; name: string; namespace: string; uid?: string };
    type: "Normal" | "Warning";
    reason: string;
    action: string;
    note: string;
  }): Promise<void> | void;
}

export interface ReconcilerDeps {
  kc: KubeConfig;
  /** The latest PoolPolicy from the informer cache, by "namespace/name". */
  getPolicy(key: string): PoolPolicy | undefined;
  pools: PostgresPools;
  events: EventSink;
  log: Logger;
  /** Called with the policy's target selector so the wiring can watch its Deployments; null to stop. */
  watchTargets?(key: string, namespace: string, labelSelector: string | null): void;
  now?: () => Date;
  /** How often a converged policy re-reads its server's statistics. */
  statsRefreshMs?: number;
}

/** While something is moving (a restart, a rollout), poll it this often. */
const PROGRESS_POLL_MS = 2_000;

export class PoolPolicyReconciler {
  private readonly apps: AppsV1Api;
  private readonly core: CoreV1Api;
  private readonly custom: CustomObjectsApi;
  private readonly reaper = new ReaperSchedule();
  private readonly now: () => Date;

  constructor(private readonly deps: ReconcilerDeps) {
    this.apps = deps.kc.makeApiClient(AppsV1Api);
    this.core = deps.kc.makeApiClient(CoreV1Api);
    this.custom = deps.kc.makeApiClient(CustomObjectsApi);
    this.now = deps.now ?? (() => new Date());
  }

  async reconcile(key: string): Promise<ReconcileResult> {
    const policy = this.deps.getPolicy(key);
    if (!policy) {
      this.forget(key);
      return {};
    }
    if (policy.metadata.deletionTimestamp) return this.finalize(key, policy);
    if (!(policy.metadata.finalizers ?? []).includes(FINALIZER)) {
      await ensureFinalizer(this.custom, policy);
      return {};
    }
    const validation = validateSpec(policy.spec);
    if (!validation.ok) return this.reportInvalidSpec(policy, validation.message);
    return this.converge(key, policy, validation.spec);
  }

  private async converge(key: string, policy: PoolPolicy, spec: PoolPolicySpec): Promise<ReconcileResult> {
    const { name, namespace } = policy.metadata;
    const now = this.now();
    const previous: PoolPolicyStatus = policy.status ?? {};
    const log = this.deps.log.child({ policy: key });
    const events: PolicyEvent[] = [];
    const updates: ConditionUpdate[] = [];
    const set = (type: ConditionType, c: Omit<ConditionUpdate, "type">) => updates.push({ type, ...c });
    const status: PoolPolicyStatus = { ...previous };

    this.deps.watchTargets?.(key, namespace, labelSelectorString(spec.targets.selector));

    // 1. PostgreSQL: credentials, then one round of read-only facts.
    const connection = await this.postgresTarget(namespace, spec);
    let facts: ServerFacts | undefined;
    if (!connection.ok) {
      set("PostgresReachable", { status: "False", reason: connection.reason, message: connection.message });
    } else {
      try {
        facts = await this.deps.pools.withClient(connection.target, inspectServer);
        set("PostgresReachable", { status: "True", reason: "Connected", message: `connected to ${describeTarget(connection.target)}: PostgreSQL ${facts.version}` });
        status.postgres = withUsage(previous.postgres, facts);
        operatorMetrics.observeServer(connection.target, facts);
      } catch (err) {
        const pgErr = err instanceof PostgresError ? err : new PostgresError("QueryFailed", String(err));
        set("PostgresReachable", { status: "False", reason: pgErr.reason, message: pgErr.message });
      }
    }

    // 2. max_connections: ALTER SYSTEM, restart through the workload, verify.
    const workload = await readWorkload(this.apps, spec.postgres.restart, namespace);
    const plan = planMaxConnections({
      desired: spec.postgres.maxConnections,
      facts,
      workload,
      restartPolicy: spec.postgres.restart?.policy ?? "Automatic",
      approval: policy.metadata.annotations?.[APPROVAL_ANNOTATION],
    });
    let maxConnectionsCondition = plan.condition;
    if (plan.alterTo !== undefined && connection.ok) {
      try {
        await this.deps.pools.withClient(connection.target, (c) => alterMaxConnections(c, plan.alterTo!));
        events.push({ type: "Normal", reason: "MaxConnectionsAltered", action: "AlterSystem", note: `ALTER SYSTEM SET max_connections = ${plan.alterTo}; configuration reloaded, restart pending` });
        log.info({ action: "AlterSystem", maxConnections: plan.alterTo }, "ALTER SYSTEM SET max_connections");
      } catch (err) {
        const reason = err instanceof AlterSystemError ? err.failure : "AlterSystemFailed";
        maxConnectionsCondition = { status: "False", reason, message: (err as Error).message };
      }
    }
    const alterFailed = plan.alterTo !== undefined && maxConnectionsCondition !== plan.condition;
    if (plan.requestRestart && !alterFailed) {
      await requestRestart(this.apps, workload, plan.requestRestart);
      operatorMetrics.restartsRequested.inc();
      events.push({ type: "Normal", reason: "RestartRequested", action: "RollingRestart", note: `Rolling restart of ${workload.description} to apply max_connections = ${plan.requestRestart.value}` });
      log.info({ action: "RollingRestart", workload: workload.description, maxConnections: plan.requestRestart.value }, "requested a rolling restart");
    }
    set("MaxConnectionsApplied", maxConnectionsCondition);
    if (maxConnectionsCondition.reason === "Applied" && findCondition(previous.conditions, "MaxConnectionsApplied")?.reason === "RestartInProgress") {
      events.push({ type: "Normal", reason: "MaxConnectionsVerified", action: "Verify", note: maxConnectionsCondition.message });
    }

    // 3. Pool env on the target Deployments.
    const targets = await applyPoolEnv(this.apps, { name, namespace }, spec, previous.targets ?? []);
    for (const a of targets.actions) events.push({ type: a.warning ? "Warning" : "Normal", reason: a.reason, action: "ServerSideApply", note: a.note });
    status.targets = targets.targets;
    status.targetsSummary = targets.summary;
    set("PoolEnvInjected", targets.condition);

    // 4. Reaper.
    const reaperDueIn = await this.reap(key, spec, connection, facts, plan.restarting, status, set, events, now);

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

    if (statusChanged(previous, status)) await this.writeStatus(policy, status);
    await this.emit(policy, events);

    const busy = plan.restarting || targets.rollingOut;
    const next = Math.min(busy ? PROGRESS_POLL_MS : (this.deps.statsRefreshMs ?? 30_000), reaperDueIn);
    return { requeueAfter: Math.max(next, 500) };
  }

  private async reap(
    key: string,
    spec: PoolPolicySpec,
    connection: Awaited<ReturnType<PoolPolicyReconciler["postgresTarget"]>>,
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
      set("ReaperHealthy", { status: "Unknown", reason: "PostgresUnreachable", message: "cannot reap: PostgreSQL is not reachable" });
      return interval;
    }
    const dueIn = this.reaper.dueIn(key, interval, now.getTime());
    const previousCondition = findCondition(status.conditions, "ReaperHealthy");
    if (dueIn > 0) {
      if (previousCondition) set("ReaperHealthy", { status: previousCondition.status, reason: previousCondition.reason, message: previousCondition.message });
      else set("ReaperHealthy", { status: "Unknown", reason: "Scheduled", message: "first pass pending" });
      return dueIn;
    }
    try {
      const outcome = await this.deps.pools.withClient(connection.target, (c) => runReaper(c, spec, status.reaper, now));
      this.reaper.markRun(key, now.getTime());
      status.reaper = outcome.status;
      set("ReaperHealthy", outcome.condition);
      const terminated = outcome.sessions.filter((s) => s.terminated);
      operatorMetrics.sessionsReaped.inc({ namespace: key.split("/")[0] }, terminated.length);
      if (terminated.length > 0) {
        events.push({ type: "Normal", reason: "SessionsReaped", action: "TerminateBackend", note: `Terminated ${terminated.length} session(s) idle in transaction: ${describeSessions(terminated)}` });
      } else if (spec.reaper.dryRun && outcome.sessions.length > 0) {
        events.push({ type: "Normal", reason: "ReapDryRun", action: "TerminateBackend", note: `Dry run: would terminate ${outcome.sessions.length} session(s): ${describeSessions(outcome.sessions)}` });
      }
    } catch (err) {
      this.reaper.markRun(key, now.getTime());
      set("ReaperHealthy", { status: "False", reason: "ReapFailed", message: (err as Error).message });
    }
    return interval;
  }

  private async postgresTarget(namespace: string, spec: PoolPolicySpec): Promise<
    { ok: true; target: PostgresTarget } | { ok: false; reason: string; message: string }
  > {
    const s = spec.postgres.credentialsSecret;
    const secret = await readSecretKeys(this.core, namespace, s.name, [s.usernameKey, s.passwordKey]);
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
    const update: ConditionUpdate = { type: "Ready", status: "False", reason: "InvalidSpec", message: `nothing was applied: ${message}` };
    const status: PoolPolicyStatus = { ...previous, observedGeneration: generation, conditions: setCondition(previous.conditions ?? [], update, now, generation) };
    if (statusChanged(previous, status)) {
      await this.writeStatus(policy, status);
      await this.emit(policy, [{ type: "Warning", reason: "InvalidSpec", action: "Validate", note: message }]);
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
        notes.push({ type: "Normal", reason: "EnvRemoved", action: "Finalize", note: `Removed the pool env from Deployment ${deployment}: the PoolPolicy is being deleted` });
      }
    }
    await this.emit(policy, notes);
    await removeFinalizer(this.custom, policy);
    this.deps.log.info({ policy: key, action: "Finalize", deployments: owned }, "removed injected env and the finalizer; max_connections left as is");
    this.forget(key);
    return {};
  }

  private forget(key: string): void {
    this.reaper.forget(key);
    this.deps.watchTargets?.(key, "", null);
  }

  private async writeStatus(policy: PoolPolicy, status: PoolPolicyStatus): Promise<void> {
    const { name, namespace } = policy.metadata;
    await this.custom.replaceNamespacedCustomObjectStatus({
      group: GROUP, version: VERSION, plural: PLURAL, namespace, name,
      body: { apiVersion: policy.apiVersion, kind: policy.kind, metadata: policy.metadata, spec: policy.spec, status },
    });
    operatorMetrics.statusWrites.inc();
  }

  private async emit(policy: PoolPolicy, events: readonly PolicyEvent[]): Promise<void> {
    const regarding = { apiVersion: policy.apiVersion, kind: policy.kind, name: policy.metadata.name, namespace: policy.metadata.namespace, uid: policy.metadata.uid };
    for (const e of events) await this.deps.events.record({ regarding, ...e });
  }
}

/** Reasons that say "under way", not "broken": their Events are Normal, not Warning. */
const PROGRESS_REASONS = new Set(["RestartInProgress", "RollingOut", "AwaitingApproval", "Paused", "Scheduled"]);

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
