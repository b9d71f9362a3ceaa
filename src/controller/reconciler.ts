/**
 * One level-triggered reconcile of one PoolPolicy, read fresh from the cache by key.
 *
 *   deleted?      → finalize: remove the env we injected, drop the finalizer (max_connections stays)
 *   no finalizer? → add it, then go on with the object the API server returned
 *   invalid spec? → Ready=False/InvalidSpec naming the field; nothing is applied
 *   otherwise     → a fold over steps (pass.ts), in this order:
 *                     1. PostgreSQL: credentials, facts; the server's budget and the
 *                        max_connections its policies ask for together (src/server/model.ts)
 *                     2. max_connections, the app role's CONNECTION LIMIT and the pool env,
 *                        ordered by direction
 *                     3. the reaper
 *                     4. extensions and Redis
 *                     5. the pooler's share, for policies that take part in one, and its
 *                        objects applied by the declaring policy (pooler-step.ts); the
 *                        objects of a pooler it no longer declares deleted
 *                 → status (written only when it changed) and Events for what was done
 *
 * The result, stated once (as controller-runtime's reconcile.Result):
 *   - returns { requeueAfter: ms }  → reconcile this key again after ms (the soonest any step
 *     asked for: a restart polls every 500 ms, a rollout every 2 s, a converged policy at the
 *     stats refresh or its reaper's next run), unless an event brings it back sooner;
 *   - returns {}                    → nothing to come back for (deleted, finalized, invalid spec:
 *     the next edit brings it back);
 *   - throws RequeueError(ms)       → a known, short-lived condition (our write raced a
 *     re-created object): retry after ms, not counted as a failure;
 *   - throws anything else          → retried with the controller's per-key exponential backoff.
 *
 * Every step reports a condition instead of throwing, so one broken dependency (a missing
 * Secret, Redis down) neither hides the others nor crash-loops. Only the API server failing is
 * thrown, to be retried with backoff.
 *
 * The reconciler talks to the world only through its ports (ports.ts): test/unit/controller/
 * reconciler.test.ts runs every branch on in-memory fakes.
 */
import { validateSpec, type PoolPolicy, type PoolPolicySpec, type PoolPolicyStatus } from "../api/schema.js";
import { specDurations } from "../api/spec-durations.js";
import type { Logger } from "../log.js";
import { PostgresError, describeTarget } from "../postgres/connection.js";
import type { ServerFacts } from "../postgres/inspect.js";
import { labelSelectorString } from "../kube/selectors.js";
import { policyTarget } from "../server/credentials.js";
import {
  desireOfPolicy,
  desiredMaxConnections,
  memoryCondition,
  policiesOnServer,
  serverBudget,
  serverMemoryOfPeers,
  serverOfPolicy,
  serverSettings,
} from "../server/model.js";
import { checkExtensions } from "../server/dependencies.js";
import { type ConditionUpdate, findCondition, setCondition, summarizeReady } from "./conditions.js";
import { FINALIZER } from "./finalizer.js";
import { ConnectionLimitStep, restoreLimit } from "./connection-limit-step.js";
import { LIMIT_RECORD_ANNOTATION, limitRecordOf } from "./limit-record.js";
import { applyMaxConnections, type MaxConnectionsResult } from "./max-connections-step.js";
import { operatorMetrics } from "./metrics.js";
import {
  combine,
  outcome,
  type Pass,
  type PolicyEvent,
  PROGRESS_POLL_MS,
  RESTART_POLL_MS,
  type ServerView,
  type StepOutcome,
} from "./pass.js";
import type { KubernetesPort, PostgresPort, RedisPort } from "./ports.js";
import { ReaperSchedule } from "./reaper.js";
import { POOLER_CONDITION, poolerRouting, poolerStep } from "./pooler-step.js";
import type { PoolerRoute } from "./env-injection.js";
import { reapStep } from "./reaper-step.js";
import { BudgetTargets } from "./budget-targets.js";
import { budgetCondition, budgetStatus } from "./server-budget.js";
import { changedFields, statusChanged, withUsage } from "./status.js";
import type { TargetsOutcome } from "./targets.js";
import type { WorkloadState } from "./workload.js";
import { objectKey } from "../kube/keys.js";

export type { PolicyEvent } from "./pass.js";

export interface ReconcileResult {
  requeueAfter?: number;
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
  kube: KubernetesPort;
  postgres: PostgresPort;
  redis: RedisPort;
  events: EventSink;
  log: Logger;
  /** The latest PoolPolicy from the informer cache, by "namespace/name". */
  getPolicy(key: string): PoolPolicy | undefined;
  /** Every PoolPolicy in the cache: the budget of a server spans all policies that point at it. */
  listPolicies(): PoolPolicy[];
  now: () => Date;
  /** How often a converged policy re-reads its server's statistics. */
  statsRefreshMs: number;
  /** The restart limit per server (restart-gate.ts). */
  maxRestartsPerHour: number;
}

/** The soonest a pass asks to come back, whatever is due. */
const MIN_REQUEUE_MS = 500;

/** Reasons that say "under way", not "broken": their Events are Normal, not Warning. */
const PROGRESS_REASONS = new Set([
  "RestartInProgress",
  "RollingOut",
  "AwaitingApproval",
  "Paused",
  "Scheduled",
  "WaitingForApps",
  "WaitingForMaxConnections",
  "WaitingForPooler",
  "OutsideMaintenanceWindow",
  "OwnerBusy",
]);

export class PoolPolicyReconciler {
  private readonly reaper = new ReaperSchedule();
  /** The server's budget targets, gathered once for all its policies' passes while nothing in them changes. */
  private readonly budgetTargets = new BudgetTargets();
  /** Restarts already verified (policy/value/postmaster start): counted and announced once. */
  private readonly verified = new Set<string>();
  private readonly lastStatusWrite = new Map<string, { basedOn: string | undefined; status: PoolPolicyStatus }>();

  constructor(private readonly deps: ReconcilerDeps) {}

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
      policy = await this.deps.kube.addFinalizer(policy);
    }
    const validation = validateSpec(policy.spec);
    if (!validation.ok) return this.reportInvalidSpec(policy, validation.message);
    return this.converge(this.passFor(key, policy, validation.spec));
  }

  private passFor(key: string, policy: PoolPolicy, spec: PoolPolicySpec): Pass {
    const { namespace } = policy.metadata;
    return {
      key,
      policy,
      spec,
      durations: specDurations(spec),
      selector: labelSelectorString(spec.targets.selector),
      server: serverOfPolicy({ namespace, spec }),
      previous: this.freshestStatus(policy),
      now: this.deps.now(),
      log: this.deps.log.child({ policy: key }),
      announce: (events) => this.emit(policy, events),
      readWorkload: this.workloadReaderForOnePass(),
    };
  }

  private workloadReaderForOnePass(): Pass["readWorkload"] {
    const reads = new Map<string, Promise<WorkloadState>>();
    return (restart, namespace) => {
      const key = JSON.stringify([restart?.workload ?? null, namespace]);
      let read = reads.get(key);
      if (!read) {
        read = this.deps.kube.readWorkload(restart, namespace);
        reads.set(key, read);
      }
      return read;
    };
  }

  private async converge(pass: Pass): Promise<ReconcileResult> {
    const { policy, previous, now } = pass;
    this.deps.kube.watchTargets(pass.key, policy.metadata.namespace, pass.selector);

    const { view, step: postgres } = await this.postgresStep(pass);
    const routing = await poolerRouting(this.deps.kube, pass, view);
    const applied = await this.maxConnectionsAndEnvStep(pass, view, routing.route);
    const reaper = await reapStep(
      { postgres: this.deps.postgres, schedule: this.reaper },
      pass,
      view.connection.ok && view.facts ? view.connection.target : undefined,
      applied.restarting,
    );
    const dependencies = await this.dependenciesStep(pass, view.facts);
    const all = combine([postgres, applied.step, reaper, dependencies.step]);
    // Only policies that take part in a pooler carry its condition; the declaring policy's pass
    // applies the pooler's objects, unless the plan refuses it, and deletes the pooler it no
    // longer declares (pooler-step.ts).
    const pooler = await poolerStep(this.deps.kube, pass, view, routing);

    const updates = [...all.conditions, ...(pooler.condition ? [pooler.condition] : [])];
    updates.push(summarizeReady(updates.filter((u) => countsForReady(u, dependencies.redisRequired))));
    let conditions = previous.conditions ?? [];
    const generation = policy.metadata.generation ?? 0;
    for (const u of updates) conditions = setCondition(conditions, u, now, generation);
    if (!pooler.condition) conditions = conditions.filter((c) => c.type !== POOLER_CONDITION);
    const status: PoolPolicyStatus = { ...previous, ...all.status, conditions, observedGeneration: generation };
    status.pooler = pooler.applied;
    if (!status.pooler) delete status.pooler;
    if (!pass.spec.redis) delete status.redis;
    if (!status.connectionLimit) delete status.connectionLimit;

    // Events first: they record actions already taken, so they must not wait for (or be lost
    // with) a status write that may fail; and whoever sees the new status finds its Events.
    // pass.policy, not policy: a step may have written to the object meanwhile (limit-record.ts).
    await this.emit(pass.policy, [...all.events, ...transitionEvents(previous, updates)]);
    if (statusChanged(previous, status)) {
      pass.log.debug({ action: "WriteStatus", changed: changedFields(previous, status) }, "status changed");
      await this.writeStatus(pass.policy, status);
    }
    // Nothing enqueues a policy when its pooler's pods turn available: look again soon.
    const routePoll = routing.waiting ? PROGRESS_POLL_MS : Number.POSITIVE_INFINITY;
    const converged = Math.min(all.requeueAfterMs, routePoll, this.deps.statsRefreshMs);
    return { requeueAfter: Math.max(converged, MIN_REQUEUE_MS) };
  }

  /** Credentials, the server's facts, and the server model's budget and desired value. */
  private async postgresStep(pass: Pass): Promise<{ view: ServerView; step: StepOutcome }> {
    const { key, policy, spec, previous } = pass;
    const { namespace } = policy.metadata;
    const conditions: ConditionUpdate[] = [];
    const status: Partial<PoolPolicyStatus> = {};
    const readSecret = this.deps.kube.readSecretKeys.bind(this.deps.kube);
    const connection = await policyTarget(readSecret, namespace, spec);
    let facts: ServerFacts | undefined;
    if (!connection.ok) {
      const { reason, message } = connection;
      conditions.push({ type: "PostgresReachable", status: "False", reason, message });
    } else {
      try {
        facts = await this.deps.postgres.inspectServer(connection.target, pass.key);
        const message = `connected to ${describeTarget(connection.target)}: PostgreSQL ${facts.version}`;
        conditions.push({ type: "PostgresReachable", status: "True", reason: "Connected", message });
        status.postgres = withUsage(previous.postgres, facts);
        operatorMetrics.observeServer(pass.server, facts);
      } catch (err) {
        const pgErr = err instanceof PostgresError ? err : new PostgresError("QueryFailed", String(err));
        conditions.push({ type: "PostgresReachable", status: "False", reason: pgErr.reason, message: pgErr.message });
      }
    }
    // The server: every policy that points at it, their budget, and the max_connections they
    // ask for together — the same whichever of them is being reconciled.
    const self = { key, namespace, spec };
    const peers = policiesOnServer(this.deps.listPolicies(), pass.server);
    if (!peers.some((p) => p.key === key)) peers.push(self);
    const settings = serverSettings(peers);
    const targets = facts ? await this.budgetTargets.gather(pass.server, peers, this.deps.kube) : [];
    const budget = facts ? serverBudget(targets, facts, settings) : undefined;
    const memory = facts ? await serverMemoryOfPeers(peers, facts, settings, pass.readWorkload) : undefined;
    if (budget) {
      status.budget = budgetStatus(budget, key, peers.length, memory);
      operatorMetrics.observeBudget(pass.server, budget);
      operatorMetrics.observeMemoryCeiling(pass.server, memory?.known ? memory.ceiling.ceiling : undefined);
    }
    const serverDesired = desiredMaxConnections(peers, budget, facts, memory);
    const desired = desireOfPolicy(self, serverDesired);
    const modes = peers.map((p) => p.spec.postgres.maxConnections);
    const autoSized = modes.includes("auto") && !modes.some((m) => typeof m === "number");
    const view = { peers, connection, facts, budget, desired, serverDesired, memory, settings, autoSized };
    return { view, step: outcome({ conditions, status }) };
  }

  /**
   * max_connections and the pool env, ordered by direction: when the server's limit goes up,
   * raise it (restart) before any pool grows beyond what the server carries now; when it goes
   * down, let the apps roll out with their smaller pools first, then lower it.
   */
  private async maxConnectionsAndEnvStep(
    pass: Pass,
    view: ServerView,
    route: PoolerRoute | undefined,
  ): Promise<{ step: StepOutcome; restarting: boolean }> {
    const { facts, budget, desired, connection, memory } = view;
    const bounds = { memory, settings: view.autoSized ? view.settings : undefined };
    const target = connection.ok ? connection.target : undefined;
    const deps = {
      kube: this.deps.kube,
      postgres: this.deps.postgres,
      maxRestartsPerHour: this.deps.maxRestartsPerHour,
      verified: this.verified,
    };
    const current = facts?.maxConnections;
    // The app role's limit grows before the pools do, and shrinks after they did (connection-limit-step.ts).
    const limit = new ConnectionLimitStep(this.deps, pass, this.peerObjects(view, pass.key));
    await limit.beforeEnv(view, view.peers);
    let maxConnections: MaxConnectionsResult;
    let env: TargetsOutcome;
    if (desired.kind === "value" && current !== undefined && desired.value < current) {
      env = await this.injectEnv(pass, false, route);
      maxConnections =
        env.condition.status === "True"
          ? await applyMaxConnections(deps, pass, target, facts, desired)
          : {
              restarting: false,
              events: [],
              condition: {
                status: "False",
                reason: "WaitingForApps",
                message: `lowering max_connections to ${desired.value} once the apps run with their new pools (${env.condition.message})`,
              },
            };
    } else {
      maxConnections = await applyMaxConnections(deps, pass, target, facts, desired);
      // Pools grow before max_connections is raised only where the server, as it is now, carries
      // the new pools (the budget is computed with them). Else they wait for the raise; and
      // while PostgreSQL is down (e.g. restarting) the current value is unknown, so they wait too.
      const raisePending = desired.kind === "value" && (current === undefined || desired.value > current);
      const fitsNow = budget?.withinLimits === true;
      env = await this.injectEnv(pass, raisePending && !fitsNow ? desired.value : false, route);
      if (env.condition.reason === "WaitingForMaxConnections" && budget) {
        // Say which bound holds the pools: the server as it is now.
        const bound = `the new pools need ${budget.demand} connections at worst, max_connections is ${budget.capacity} now`;
        env = { ...env, condition: { ...env.condition, message: `${env.condition.message} (${bound})` } };
      }
    }
    await limit.afterEnv(env.condition.status === "True");
    const untilWindow = maxConnections.nextWindow
      ? maxConnections.nextWindow.getTime() - pass.now.getTime()
      : Number.POSITIVE_INFINITY;
    const poll = maxConnections.restarting ? RESTART_POLL_MS : env.rollingOut ? this.rolloutPoll(pass) : untilWindow;
    const envEvents: PolicyEvent[] = env.actions.map((a) => ({
      type: a.warning ? "Warning" : "Normal",
      reason: a.reason,
      action: "ServerSideApply",
      note: a.note,
    }));
    const step = outcome({
      conditions: [
        { type: "MaxConnectionsApplied", ...maxConnections.condition },
        { type: "PoolEnvInjected", ...env.condition },
        { type: "BudgetWithinLimits", ...budgetCondition(budget, bounds) },
        { type: "MemoryWithinLimits", ...memoryCondition(memory, desired.kind === "value" ? desired.value : current) },
      ],
      events: [...maxConnections.events, ...envEvents],
      status: { targets: env.targets, targetsSummary: env.summary },
      requeueAfterMs: Math.min(poll, untilWindow),
    });
    return { step: combine([step, limit.outcome()]), restarting: maxConnections.restarting };
  }

  /** The PoolPolicy objects of the server's other policies, from the cache. */
  private peerObjects(view: ServerView, self: string): PoolPolicy[] {
    const keys = new Set(view.peers.map((p) => p.key));
    keys.delete(self);
    return this.deps.listPolicies().filter((p) => keys.has(objectKey(p)));
  }

  /**
   * How soon to look at the targets' rollout again. Where the target watches answer for the
   * policy's Deployments, every change of their rollout enqueues the policy, and the stats
   * refresh stays the backstop: polling as well gave each of 200 rolling-out policies on one
   * server 13 passes (scenario 7, docs/benchmarks.md). Where they do not (yet), poll.
   */
  private rolloutPoll(pass: Pass): number {
    const selection = { namespace: pass.policy.metadata.namespace, selector: pass.selector };
    const watched = this.deps.kube.budgetInputsVersion?.([selection]) !== undefined;
    return watched ? Number.POSITIVE_INFINITY : PROGRESS_POLL_MS;
  }

  /**
   * The pool env on the target Deployments; `holdGrowthUntil` holds back growing pools while
   * max_connections is being raised to that value; `route` points via: Pooler apps at the pooler.
   */
  private async injectEnv(
    pass: Pass,
    holdGrowthUntil: number | false,
    route: PoolerRoute | undefined,
  ): Promise<TargetsOutcome> {
    const { name, namespace } = pass.policy.metadata;
    const selected = await this.deps.kube.deployments(pass.key, namespace, pass.selector);
    const previous = pass.previous.targets ?? [];
    return this.deps.kube.applyPoolEnv({ name, namespace }, pass.spec, selected, previous, { holdGrowthUntil, route });
  }

  private async dependenciesStep(
    pass: Pass,
    facts: ServerFacts | undefined,
  ): Promise<{ step: StepOutcome; redisRequired: boolean }> {
    const redis = await this.deps.redis.check(pass.policy.metadata.namespace, pass.spec);
    const conditions: ConditionUpdate[] = [
      { type: "ExtensionsReady", ...checkExtensions(pass.spec, facts) },
      { type: "RedisAvailable", ...redis.condition },
    ];
    const status = { redis: redis.status ?? pass.previous.redis };
    return { step: outcome({ conditions, status }), redisRequired: redis.required };
  }

  private async reportInvalidSpec(policy: PoolPolicy, message: string): Promise<ReconcileResult> {
    const now = this.deps.now();
    const previous = this.freshestStatus(policy);
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
    if (!(policy.metadata.finalizers ?? []).includes(FINALIZER)) return {};
    const changed = await this.deps.kube.removePoolEnv(policy.metadata);
    await this.emit(
      policy,
      changed.map((deployment) => ({
        type: "Normal",
        reason: "EnvRemoved",
        action: "Finalize",
        note: `Removed the pool env from Deployment ${deployment}: the PoolPolicy is being deleted`,
      })),
    );
    await this.restoreLimitOnDeletion(policy);
    await this.deps.kube.removeFinalizer(policy);
    this.deps.log.info(
      { policy: key, action: "Finalize", deployments: changed },
      "removed injected env and the finalizer; max_connections left as is",
    );
    this.forget(key);
    return {};
  }

  /**
   * A deleted policy gives its role back the limit it had before (unless another policy of the
   * server still names the role). While PostgreSQL cannot be reached the deletion waits, retried
   * with backoff: the Warning says how to let it go without restoring.
   */
  private async restoreLimitOnDeletion(policy: PoolPolicy): Promise<void> {
    const record = limitRecordOf(policy);
    if (!record) return;
    const { namespace, name } = policy.metadata;
    const giveUp = `to delete the policy without restoring it, remove the annotation ${LIMIT_RECORD_ANNOTATION} from ${namespace}/${name}`;
    const warn = (note: string) =>
      this.emit(policy, [{ type: "Warning", reason: "ConnectionLimitNotRestored", action: "Finalize", note }]);
    const validation = validateSpec(policy.spec);
    if (!validation.ok) {
      await warn(
        `the CONNECTION LIMIT of role ${JSON.stringify(record.role)} was not restored to ${record.before}: the spec is invalid, so the server is not known (${validation.message})`,
      );
      return;
    }
    const spec = validation.spec;
    const connection = await policyTarget(this.deps.kube.readSecretKeys.bind(this.deps.kube), namespace, spec);
    const server = serverOfPolicy({ namespace, spec });
    const peers = policiesOnServer(this.deps.listPolicies(), server);
    const announce = (events: readonly PolicyEvent[]) => this.emit(policy, events);
    const failure = connection.ok
      ? (await restoreLimit(this.deps, { server, announce }, record, connection.target, peers)).error?.message
      : connection.message;
    if (failure) {
      await warn(`${failure}; retrying; ${giveUp}`);
      throw new Error(`restoring the CONNECTION LIMIT of role ${JSON.stringify(record.role)}: ${failure}`);
    }
  }

  /**
   * The policy's status as we last know it: the cache's, unless the cache still shows the very
   * object our last status write was based on, in which case that write is newer. Comparing
   * against it keeps a lagging cache from making a pass announce the same condition
   * transitions a second time ("x2" in kubectl describe) or write the same status again.
   */
  private freshestStatus(policy: PoolPolicy): PoolPolicyStatus {
    const last = this.lastStatusWrite.get(objectKey(policy));
    if (last && last.basedOn === policy.metadata.resourceVersion) return last.status;
    return policy.status ?? {};
  }

  private forget(key: string): void {
    this.reaper.forget(key);
    this.lastStatusWrite.delete(key);
    this.deps.kube.watchTargets(key, "", null);
  }

  private async writeStatus(policy: PoolPolicy, status: PoolPolicyStatus): Promise<void> {
    const { name, namespace } = policy.metadata;
    await this.deps.kube.writeStatus(policy, status);
    // Only a write that happened can be one the cache has not caught up with.
    this.lastStatusWrite.set(`${namespace}/${name}`, { basedOn: policy.metadata.resourceVersion, status });
    operatorMetrics.statusWrites.inc({ namespace });
  }

  /** Every Event is also one structured log line, with the policy key and the reason. */
  private async emit(policy: PoolPolicy, events: readonly PolicyEvent[]): Promise<void> {
    const { name, namespace, uid } = policy.metadata;
    const regarding = { apiVersion: policy.apiVersion, kind: policy.kind, name, namespace, uid };
    // In parallel, one round trip instead of one per Event: the recorder names each Event when
    // it is recorded, so they keep this order (runtime/events.ts).
    await Promise.all(
      events.map((e) => {
        this.deps.log[e.type === "Warning" ? "warn" : "info"](
          { policy: `${namespace}/${name}`, action: e.action, reason: e.reason },
          e.note,
        );
        return this.deps.events.record({ regarding, ...e });
      }),
    );
  }
}

/**
 * Whether a condition holds Ready back. An optional Redis does not; nor does a memory ceiling
 * that is not known (no workload named, no limit set): that is information, not a fault. Memory
 * that does not carry max_connections does.
 */
function countsForReady(u: ConditionUpdate, redisRequired: boolean): boolean {
  if (u.type === "RedisAvailable") return redisRequired;
  if (u.type === "MemoryWithinLimits") return u.status !== "Unknown";
  // A role at its limit is the limit doing its work: its own Warning says so; Ready stays.
  if (u.type === "RoleConnectionLimit") return u.reason !== "LimitReached";
  return true;
}

/** An Event for every condition that changed status or reason: the story `kubectl describe` tells. */
function transitionEvents(previous: PoolPolicyStatus, updates: readonly ConditionUpdate[]): PolicyEvent[] {
  const out: PolicyEvent[] = [];
  for (const u of updates) {
    const before = findCondition(previous.conditions, u.type);
    if (before && before.status === u.status && before.reason === u.reason) continue;
    if (!before && u.status === "True" && u.type !== "Ready") continue; // first report of a healthy dependency: no noise
    // A memory ceiling not known (no workload named, no limit set) is information, not news.
    if (u.type === "MemoryWithinLimits" && u.status === "Unknown" && (before?.status ?? "Unknown") === "Unknown")
      continue;
    out.push({
      type: u.status === "False" && !PROGRESS_REASONS.has(u.reason) ? "Warning" : "Normal",
      reason: u.type === "Ready" ? (u.status === "True" ? "Ready" : "NotReady") : u.reason,
      action: "Reconcile",
      note: `${u.type}=${u.status} (${u.reason}): ${u.message}`,
    });
  }
  return out;
}
