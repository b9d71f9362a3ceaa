/**
 * In-memory stand-ins for the reconciler's ports (src/controller/ports.ts): a tiny world with
 * one PostgreSQL server, its workload, Secrets, Deployments and Events, that a test drives step
 * by step ("the StatefulSet rolled out", "PostgreSQL went away"). Kept honest by the integration
 * tests, which run the same reconciler on the real parts.
 */
import type { V1Deployment, V2HorizontalPodAutoscaler } from "@kubernetes/client-node";
import type { PoolPolicy, PoolPolicySpec, PoolPolicyStatus } from "../../../src/api/schema.js";
import type { RedisOutcome } from "../../../src/server/dependencies.js";
import { FINALIZER } from "../../../src/controller/finalizer.js";
import type { RestartRecord } from "../../../src/controller/max-connections.js";
import type { KubernetesPort, PostgresPort, RedisPort } from "../../../src/controller/ports.js";
import { type PoolerObjectRef, type PoolerObjects, poolerObjectNames } from "../../../src/pooler/pooler-objects.js";
import type { ReaperOutcome } from "../../../src/controller/reaper.js";
import type { EventSink } from "../../../src/controller/reconciler.js";
import type { SecretRead } from "../../../src/kube/secrets.js";
import type { TargetsOutcome } from "../../../src/controller/targets.js";
import {
  POOLER_ROUTE_ANNOTATION,
  type PoolerRoute,
  routeAnnotationValue,
} from "../../../src/controller/env-injection.js";
import { OwnerParameterConflict, type WorkloadState } from "../../../src/controller/workload.js";
import { CNPG_HEALTHY_PHASE, describeWorkload, isOwnedKind, POSTGRES_OPERATORS } from "../../../src/kube/workloads.js";
import { PostgresError } from "../../../src/postgres/connection.js";
import type { InstanceFacts, ServerFacts } from "../../../src/postgres/inspect.js";
import type { RoleFacts } from "../../../src/postgres/roles.js";
import { LIMIT_RECORD_ANNOTATION } from "../../../src/controller/limit-record.js";
import type { LimitRecord } from "../../../src/server/role-limits.js";
import type { ServiceFacts } from "../../../src/server/identity.js";
import { containerMemory } from "../../../src/server/memory.js";
import { DEFAULT_MEMORY_SETTINGS } from "../fixtures/server-facts.js";

export const T0 = new Date("2026-11-30T10:00:00.000Z");

export class FakePostgres implements PostgresPort {
  reachable = true;
  maxConnections = 100;
  alterSystemValue: number | undefined = undefined;
  settingSource = "configuration file";
  allowAlterSystem = true;
  mayAlter = true;
  postmasterStartTime = T0;
  connections = { total: 4, active: 1, idle: 3, idleInTransaction: 0 };
  installedExtensions: string[] = [];
  memory = DEFAULT_MEMORY_SETTINGS;
  /** Make the next ALTER SYSTEM fail with this error. */
  alterError?: Error;
  reaperError?: Error;
  timeoutError?: Error;
  reaped = 0;
  readonly alters: number[] = [];
  /** Roles of the server by name; the operator logs in as "operator". */
  readonly roles = new Map<string, { superuser: boolean; connectionLimit: number; connections: number }>();
  /** Make the next ALTER ROLE fail with this error. */
  alterRoleError?: Error;
  /** Every ALTER ROLE … CONNECTION LIMIT, in order. */
  readonly roleLimits: { role: string; limit: number }[] = [];
  /** The idle-in-transaction timeouts (ms) the reconciler handed to each call. */
  readonly timeoutsMs = { server: [] as number[], reaper: [] as number[] };

  facts(): ServerFacts {
    if (!this.reachable) throw new PostgresError("ConnectionRefused", "connection refused (127.0.0.1:5432)");
    return {
      version: "17.2",
      versionNum: 170002,
      maxConnections: this.maxConnections,
      settingSource: this.settingSource,
      pendingRestart: this.alterSystemValue !== undefined && this.alterSystemValue !== this.maxConnections,
      postmasterStartTime: this.postmasterStartTime,
      superuserReservedConnections: 3,
      reservedConnections: 0,
      connections: this.connections,
      installedExtensions: this.installedExtensions,
      availableExtensions: ["age"],
      isSuperuser: true,
      mayAlterMaxConnections: this.mayAlter,
      allowAlterSystem: this.allowAlterSystem,
      mayReadConfigFiles: true,
      alterSystemValue: this.alterSystemValue,
      memory: this.memory,
    };
  }

  /** A restart: the value written by ALTER SYSTEM comes into force. */
  restart(at: Date): void {
    if (this.settingSource !== "command line" && this.alterSystemValue !== undefined) {
      this.maxConnections = this.alterSystemValue;
    }
    this.postmasterStartTime = at;
  }

  async inspectServer(): Promise<ServerFacts> {
    return this.facts();
  }

  async inspectInstance(): Promise<InstanceFacts> {
    const f = this.facts();
    return { ...f, inRecovery: false, lsn: 0n, replayPaused: false };
  }

  async alterMaxConnections(_target: unknown, value: number): Promise<void> {
    if (!this.reachable) throw new PostgresError("ConnectionRefused", "connection refused");
    if (this.alterError) throw this.alterError;
    this.alters.push(value);
    this.alterSystemValue = value;
  }

  async inspectRole(_target: unknown, name: string): Promise<RoleFacts> {
    this.facts(); // unreachable → throws
    const r = this.roles.get(name);
    if (!r) return { name, exists: false, superuser: false, isOperator: false, connectionLimit: -1, connections: 0 };
    return { name, exists: true, isOperator: name === "operator", ...r };
  }

  async setConnectionLimit(_target: unknown, name: string, limit: number): Promise<void> {
    this.facts();
    if (this.alterRoleError) throw this.alterRoleError;
    const r = this.roles.get(name);
    if (!r) throw new PostgresError("QueryFailed", `role "${name}" does not exist`);
    r.connectionLimit = limit;
    this.roleLimits.push({ role: name, limit });
  }

  async applyServerTimeout(_t: unknown, _scope: unknown, timeoutMs: number): Promise<string | undefined> {
    if (this.timeoutError) throw this.timeoutError;
    this.timeoutsMs.server.push(timeoutMs);
    return undefined;
  }

  async runReaper(
    _t: unknown,
    spec: PoolPolicySpec,
    timeoutMs: number,
    previous: PoolPolicyStatus["reaper"],
  ): Promise<ReaperOutcome> {
    if (this.reaperError) throw this.reaperError;
    this.timeoutsMs.reaper.push(timeoutMs);
    const sessions = Array.from({ length: this.reaped }, (_, i) => ({
      pid: 100 + i,
      user: "app",
      applicationName: "api",
      idleSeconds: 600,
      terminated: !spec.reaper.dryRun,
    }));
    this.reaped = 0;
    return {
      ran: true,
      sessions: sessions as ReaperOutcome["sessions"],
      status: { ...(previous ?? {}), lastTerminated: sessions.length },
      condition: { status: "True", reason: spec.reaper.dryRun ? "DryRun" : "Running", message: "reaped" },
    };
  }
}

export interface FakeWorkload {
  found: boolean;
  rolledOut: boolean;
  record?: RestartRecord;
  history: Date[];
  heldSince?: Date;
  /** resources.limits.memory of its postgres container, e.g. "1Gi"; absent: none set. */
  memoryLimit?: string;
  /** When the policy names a CloudNativePG Cluster or a Zalando postgresql: what it holds and reports. */
  cluster: FakeCluster;
}

/**
 * A CloudNativePG Cluster or a Zalando postgresql: its max_connections parameter and what its
 * operator reports (CloudNativePG's status.phase, Zalando's status.PostgresClusterStatus).
 */
export interface FakeCluster {
  maxConnections?: string;
  phase?: string;
  phaseReason?: string;
  /** What the owner reports while it applies a new parameter (default CloudNativePG's). */
  applyingPhase?: string;
  /** Field managers that own spec.postgresql.parameters.max_connections besides ours (a 409 on our apply). */
  otherManagers?: string[];
  /** Our apply fails with this (e.g. a 403: the operator's RBAC lacks patch). */
  applyError?: Error;
}

function postgresContainer(memoryLimit: string | undefined) {
  return { name: "postgres", resources: memoryLimit ? { limits: { memory: memoryLimit } } : {} };
}

export interface RecordedEvent {
  type: string;
  reason: string;
  note: string;
  name?: string;
}

export class FakeKubernetes implements KubernetesPort {
  readonly secrets = new Map<string, Record<string, string>>();
  deployments_: V1Deployment[] = [];
  hpas_: V2HorizontalPodAutoscaler[] = [];
  workload: FakeWorkload = {
    found: true,
    rolledOut: true,
    history: [],
    cluster: { maxConnections: "100", phase: CNPG_HEALTHY_PHASE },
  };
  /** setOwnerMaxConnections calls that went through, in order. */
  readonly ownerApplies: number[] = [];
  /** readWorkload of a named workload throws this (e.g. the API server refuses the GET). */
  workloadReadError?: Error;
  /** What applyPoolEnv was asked, in order: the pool max, whether growth was held, the pooler route. */
  readonly envCalls: { maxSize: number; holdGrowthUntil: number | false | undefined; route?: PoolerRoute }[] = [];
  /** The pool max each app Deployment runs with (what a real SSA + rollout would leave). */
  readonly injected = new Map<string, number>();
  /** Deployments still rolling out after an env change. */
  rollingOut = false;
  /**
   * Set: the target watches answer for every selection (their version of the budget's inputs is
   * this function's). Unset by default, so that passes gather the budget anew and poll rollouts.
   */
  budgetInputsVersion?: () => number | undefined;
  readonly statusWrites: PoolPolicyStatus[] = [];
  restartRequests = 0;
  /** Throws in requestRestart: the process "crashes" right before the restart request. */
  crashBeforeRestartRequest = false;
  readonly removedEnv: string[] = [];
  finalizerRemoved = false;

  watchTargets(): void {}

  /** The Deployments of the namespace whose labels match a selector of `key=value` terms. */
  async deployments(_key: string, namespace: string, labelSelector: string): Promise<V1Deployment[]> {
    const terms = labelSelector.split(",").map((t) => t.split("="));
    const matches = (d: V1Deployment) => terms.every(([k, v]) => d.metadata?.labels?.[k!] === v);
    return this.deployments_.filter((d) => d.metadata?.namespace === namespace && matches(d));
  }

  async hpas(): Promise<V2HorizontalPodAutoscaler[]> {
    return this.hpas_;
  }

  async readSecretKeys(namespace: string, name: string, keys: string[]): Promise<SecretRead> {
    const data = this.secrets.get(`${namespace}/${name}`);
    if (!data) return { ok: false, reason: "SecretNotFound", message: `Secret ${namespace}/${name} not found` };
    for (const k of keys) {
      if (data[k] === undefined) {
        return { ok: false, reason: "SecretKeyMissing", message: `Secret ${namespace}/${name} has no key "${k}"` };
      }
    }
    return { ok: true, values: data };
  }

  /** GETs of a named workload (readWorkload with a restart spec). */
  workloadReads = 0;

  async readWorkload(restart: PoolPolicySpec["postgres"]["restart"], ns: string): Promise<WorkloadState> {
    if (restart) this.workloadReads++;
    if (!restart)
      return {
        configured: false,
        found: false,
        rolledOut: false,
        record: undefined,
        description: "no workload",
        restarts: { history: [] },
      };
    if (this.workloadReadError) throw this.workloadReadError;
    const w = this.workload;
    const namespace = restart.workload.namespace ?? ns;
    const kind = restart.workload.kind;
    const description = describeWorkload({ kind, name: restart.workload.name, namespace });
    if (isOwnedKind(kind)) {
      const c = w.cluster;
      const operator = POSTGRES_OPERATORS[kind];
      const owner = { operator, maxConnections: c.maxConnections, phase: c.phase, phaseReason: c.phaseReason };
      return {
        configured: true,
        found: w.found,
        rolledOut: w.found && c.phase === operator.healthy,
        record: w.record,
        description,
        kind,
        name: restart.workload.name,
        namespace,
        restarts: { history: [...w.history], heldSince: w.heldSince },
        owner: w.found ? owner : undefined,
      };
    }
    return {
      configured: true,
      found: w.found,
      rolledOut: w.rolledOut,
      record: w.record,
      description,
      kind,
      name: restart.workload.name,
      namespace,
      replicas: 1,
      restarts: { history: [...w.history], heldSince: w.heldSince },
      memory: w.found ? containerMemory({ containers: [postgresContainer(w.memoryLimit)] }, description) : undefined,
    };
  }

  async requestRestart(w: WorkloadState, record: RestartRecord, now: Date): Promise<void> {
    if (this.crashBeforeRestartRequest) throw new Error("the operator was killed");
    this.restartRequests += 1;
    this.workload.record = record;
    // An owned resource's record is an annotation: nothing rolls until its parameter changes.
    if (!isOwnedKind(w.kind)) this.workload.rolledOut = false;
    this.workload.history.push(now);
    if (this.crashAfterRestartRequest) throw new Error("the operator was killed");
  }

  /** Throws right after requestRestart's write: a Cluster's record is in, its parameter not yet. */
  crashAfterRestartRequest = false;

  /** The owner takes the new parameter: it reports applyingPhase ("Applying configuration") until the fake restarts. */
  async setOwnerMaxConnections(w: WorkloadState, value: number): Promise<void> {
    const cluster = this.workload.cluster;
    if (cluster.applyError) throw cluster.applyError;
    if (cluster.otherManagers) throw new OwnerParameterConflict(w.description, cluster.otherManagers);
    this.ownerApplies.push(value);
    if (cluster.maxConnections === String(value)) return;
    cluster.maxConnections = String(value);
    cluster.phase = cluster.applyingPhase ?? "Applying configuration";
    cluster.phaseReason = cluster.applyingPhase ? undefined : "Restarting instances to apply max_connections";
  }

  async recordRestart(_w: WorkloadState, now: Date): Promise<void> {
    this.workload.history.push(now);
  }

  async holdRestarts(_w: WorkloadState, now: Date): Promise<void> {
    this.workload.heldSince = now;
  }

  async listPods() {
    return [];
  }

  async deletePod(): Promise<void> {}

  /** Services by "namespace/name", with what discovery reads of them. */
  readonly services = new Map<string, ServiceFacts>();
  readonly serviceReads: string[] = [];

  async readService(namespace: string, name: string): Promise<ServiceFacts | undefined> {
    this.serviceReads.push(`${namespace}/${name}`);
    return this.services.get(`${namespace}/${name}`);
  }

  async applyPoolEnv(
    _policy: { name: string; namespace: string },
    spec: PoolPolicySpec,
    selected: readonly V1Deployment[],
    _previous: unknown,
    options: { holdGrowthUntil?: number | false; route?: PoolerRoute },
  ): Promise<TargetsOutcome> {
    this.envCalls.push({ maxSize: spec.pool.maxSize, holdGrowthUntil: options.holdGrowthUntil, route: options.route });
    const held: string[] = [];
    const actions: TargetsOutcome["actions"] = [];
    for (const d of selected) {
      const name = d.metadata!.name!;
      const current = this.injected.get(name);
      if (options.holdGrowthUntil && (current === undefined || current < spec.pool.maxSize)) {
        held.push(name);
        continue;
      }
      // The route annotation, as the apply leaves it on the stored Deployment.
      const stored = this.deployments_.find(
        (x) => x.metadata?.name === name && x.metadata?.namespace === d.metadata?.namespace,
      );
      if (stored) {
        const { [POOLER_ROUTE_ANNOTATION]: _, ...others } = stored.metadata!.annotations ?? {};
        const route = routeAnnotationValue(options.route);
        stored.metadata!.annotations = route === undefined ? others : { ...others, [POOLER_ROUTE_ANNOTATION]: route };
      }
      if (current !== spec.pool.maxSize) {
        this.injected.set(name, spec.pool.maxSize);
        actions.push({ reason: "EnvInjected", note: `DB_POSTGRES_MAX_CONN=${spec.pool.maxSize} in ${name}` });
      }
    }
    const targets = selected.map((d) => ({
      name: d.metadata!.name!,
      containers: ["app"],
      injected: true,
      rolledOut: !this.rollingOut,
    }));
    const condition: TargetsOutcome["condition"] =
      held.length > 0
        ? { status: "False", reason: "WaitingForMaxConnections", message: `held: ${held.join(", ")}` }
        : selected.length === 0
          ? { status: "False", reason: "NoMatchingDeployments", message: "no Deployment matches" }
          : this.rollingOut
            ? { status: "False", reason: "RollingOut", message: "rolling out" }
            : { status: "True", reason: "Injected", message: "injected" };
    return {
      targets,
      summary: `${selected.length}/${selected.length}`,
      condition,
      actions,
      rollingOut: this.rollingOut,
    };
  }

  async removePoolEnv(policy: { name: string; namespace: string }): Promise<string[]> {
    const names = [...this.injected.keys()];
    this.injected.clear();
    this.removedEnv.push(policy.name);
    return names;
  }

  /** The pooler's objects as the API server would hold them after our applies, by "Kind namespace/name". */
  readonly pooler = new Map<string, PoolerObjects[keyof PoolerObjects]>();
  /** Every applyPooler call, in order. */
  readonly poolerApplies: PoolerObjects[] = [];
  /** The Deployment's metadata.generation as the API server keeps it: bumped when its spec changes. */
  readonly poolerGenerations = new Map<string, number>();
  /** applyPooler throws this (e.g. a 403: the chart's pooler RBAC is off). */
  poolerApplyError?: Error;

  async applyPooler(objects: PoolerObjects): Promise<void> {
    if (this.poolerApplyError) throw this.poolerApplyError;
    this.poolerApplies.push(structuredClone(objects));
    for (const o of [objects.configMap, objects.secret, objects.deployment, objects.service]) {
      const key = `${o.kind} ${o.metadata!.namespace}/${o.metadata!.name}`;
      const before = this.pooler.get(key);
      if (
        o.kind === "Deployment" &&
        JSON.stringify((before as { spec?: unknown } | undefined)?.spec) !==
          JSON.stringify((o as { spec?: unknown }).spec)
      ) {
        this.poolerGenerations.set(key, (this.poolerGenerations.get(key) ?? 0) + 1);
      }
      this.pooler.set(key, structuredClone(o));
    }
  }

  /** The pooler's Deployment has this many available pods (the Deployment controller and kubelet's word). */
  poolerAvailable = 0;
  /** readPoolerDeployment calls. */
  poolerReads = 0;

  async readPoolerDeployment(namespace: string, name: string): Promise<V1Deployment | undefined> {
    this.poolerReads += 1;
    const live = structuredClone(this.pooler.get(`Deployment ${namespace}/${name}`)) as V1Deployment | undefined;
    return live && { ...live, status: { availableReplicas: this.poolerAvailable } };
  }

  /** Every API call about the pooler's objects beyond the apply, in order: "get Kind ns/name", "delete Kind ns/name". */
  readonly poolerCalls: string[] = [];
  /** readPoolerObjects and deletePoolerObject throw this (e.g. a 403: no delete in the chart's RBAC). */
  poolerDeleteError?: Error;
  /** Called as a delete reaches the API server: to see what had happened before it (the Event). */
  onPoolerDelete?: (key: string) => void;

  async readPoolerObjects(namespace: string, poolerName: string): Promise<PoolerObjectRef[]> {
    const found: PoolerObjectRef[] = [];
    for (const { kind, name } of poolerObjectNames(poolerName)) {
      const key = `${kind} ${namespace}/${name}`;
      this.poolerCalls.push(`get ${key}`);
      if (this.poolerDeleteError) throw this.poolerDeleteError;
      const object = this.pooler.get(key);
      if (!object) continue;
      const owners = (object.metadata!.ownerReferences ?? []).map(({ kind, name, uid }) => ({ kind, name, uid }));
      found.push({ pooler: poolerName, kind, namespace, name, uid: `uid-${key}`, owners });
    }
    return found;
  }

  async deletePoolerObject(object: PoolerObjectRef): Promise<void> {
    const key = `${object.kind} ${object.namespace}/${object.name}`;
    this.poolerCalls.push(`delete ${key}`);
    if (this.poolerDeleteError) throw this.poolerDeleteError;
    this.onPoolerDelete?.(key);
    // Gone already (a 404) is deleted: nothing to tell apart here.
    this.pooler.delete(key);
    this.poolerGenerations.delete(key);
  }

  /** The annotation writes of recordLimitBefore, in order (null: removed). */
  readonly limitRecords: (LimitRecord | null)[] = [];
  /** Called with the policy as "stored" after recordLimitBefore (the world keeps it). */
  onPolicyPatched?: (policy: PoolPolicy) => void;

  async recordLimitBefore(policy: PoolPolicy, record: LimitRecord | null): Promise<PoolPolicy> {
    this.limitRecords.push(record);
    const annotations = { ...(policy.metadata.annotations ?? {}) };
    if (record) annotations[LIMIT_RECORD_ANNOTATION] = JSON.stringify(record);
    else delete annotations[LIMIT_RECORD_ANNOTATION];
    const stored = { ...policy, metadata: { ...policy.metadata, annotations } };
    this.onPolicyPatched?.(stored);
    return stored;
  }

  async addFinalizer(policy: PoolPolicy): Promise<PoolPolicy> {
    return {
      ...policy,
      metadata: { ...policy.metadata, finalizers: [...(policy.metadata.finalizers ?? []), FINALIZER] },
    };
  }

  async removeFinalizer(): Promise<void> {
    this.finalizerRemoved = true;
  }

  async writeStatus(_policy: PoolPolicy, status: PoolPolicyStatus): Promise<void> {
    this.statusWrites.push(structuredClone(status));
  }
}

export class FakeRedis implements RedisPort {
  outcome: RedisOutcome = {
    required: false,
    condition: { status: "True", reason: "NotConfigured", message: "no Redis configured" },
  };

  async check(): Promise<RedisOutcome> {
    return this.outcome;
  }
}

/** Events as the API server keeps them: one per name when a name is given (a second create is refused). */
export class FakeEvents implements EventSink {
  readonly all: RecordedEvent[] = [];

  record(e: Parameters<EventSink["record"]>[0]): void {
    if (e.name && this.all.some((x) => x.name === e.name)) return;
    this.all.push({ type: e.type, reason: e.reason, note: e.note, name: e.name });
  }

  reasons(): string[] {
    return this.all.map((e) => e.reason);
  }
}
