/**
 * The narrow ports the reconciler talks through: everything one pass asks of Kubernetes, of
 * PostgreSQL and of Redis, named by what it means to the operator rather than by the API call.
 *
 * The real implementations (adapters.ts) sit on the API server, the watch caches and the
 * connection pools; test/unit/controller/fakes.ts holds in-memory ones, so that every branch of
 * a reconcile runs in milliseconds without a control plane. The integration tests keep the
 * fakes honest: they run the same reconciler on the real parts.
 */
import type { V1Deployment, V1Pod, V2HorizontalPodAutoscaler } from "@kubernetes/client-node";
import type { PoolPolicy, PoolPolicySpec, PoolPolicyStatus } from "../api/schema.js";
import type { PostgresTarget } from "../postgres/connection.js";
import type { InstanceFacts, ServerFacts } from "../postgres/inspect.js";
import type { RoleFacts } from "../postgres/roles.js";
import type { ServiceFacts } from "../server/identity.js";
import type { PoolerObjectRef, PoolerObjects } from "../pooler/pooler-objects.js";
import type { LimitRecord } from "../server/role-limits.js";
import type { RedisOutcome } from "../server/dependencies.js";
import type { RestartRecord } from "./max-connections.js";
import type { ReaperOutcome, ServerTimeoutScope } from "./reaper.js";
import type { SecretRead } from "../kube/secrets.js";
import type { TargetStatus, TargetsOutcome } from "./targets.js";
import type { WorkloadState } from "./workload.js";
import type { PoolerRoute } from "./env-injection.js";

type RestartSpec = NonNullable<PoolPolicySpec["postgres"]["restart"]>;

export interface KubernetesPort {
  /** The policy changed its target selector: watch its Deployments (null: stop). */
  watchTargets(policyKey: string, namespace: string, labelSelector: string | null): void;
  /** The policy's Deployments, from the watch cache when it has synced. */
  deployments(policyKey: string, namespace: string, labelSelector: string): Promise<V1Deployment[]>;
  hpas(namespace: string): Promise<V2HorizontalPodAutoscaler[]>;
  /**
   * Changes whenever what the budget reads of these selections' Deployments and HPAs may have
   * changed; undefined when they are not all answered from synced caches (budget-targets.ts;
   * the reconciler polls a rollout only then).
   */
  budgetInputsVersion?(selections: Iterable<{ namespace: string; selector: string }>): number | undefined;
  readSecretKeys(namespace: string, name: string, keys: string[]): Promise<SecretRead>;

  readWorkload(restart: RestartSpec | undefined, policyNamespace: string): Promise<WorkloadState>;
  /** The restart record (pod template: it rolls the pods; Cluster: an annotation) and the restart history, at once. */
  requestRestart(workload: WorkloadState, record: RestartRecord, now: Date): Promise<void>;
  recordRestart(workload: WorkloadState, now: Date): Promise<void>;
  /** A CloudNativePG Cluster: spec.postgresql.parameters.max_connections, by SSA with the operator's own field manager. */
  setOwnerMaxConnections(workload: WorkloadState, value: number): Promise<void>;
  holdRestarts(workload: WorkloadState, now: Date): Promise<void>;
  listPods(namespace: string, labelSelector: string | undefined): Promise<V1Pod[]>;
  /**
   * A Service's labels and owner references (discovery.ts: which Postgres operator runs the
   * server); undefined when there is no such Service or the operator may not read it.
   */
  readService(namespace: string, name: string): Promise<ServiceFacts | undefined>;
  deletePod(namespace: string, name: string): Promise<void>;

  applyPoolEnv(
    policy: { name: string; namespace: string },
    spec: PoolPolicySpec,
    selected: readonly V1Deployment[],
    previous: readonly TargetStatus[],
    /** holdGrowthUntil: see targets.ts; route: where via: Pooler apps connect, when their pooler runs. */
    options: { holdGrowthUntil?: number | false; route?: PoolerRoute },
  ): Promise<TargetsOutcome>;
  /** Removes the env the policy's field manager set, everywhere in its namespace; the Deployments changed. */
  removePoolEnv(policy: { name: string; namespace: string }): Promise<string[]>;

  /**
   * The pooler's ConfigMap, Secret, Deployment and Service, by server-side apply with the
   * pooler's field manager (pooler-apply.ts); throws PoolerObjectConflict when another manager
   * holds one of their fields.
   */
  applyPooler(objects: PoolerObjects): Promise<void>;
  /** The pooler's live Deployment (its pod template's cap: pooler-objects.ts), undefined when there is none. */
  readPoolerDeployment(namespace: string, name: string): Promise<V1Deployment | undefined>;
  /** The pooler's objects that exist (of its four), with their owners; never their content. */
  readPoolerObjects(namespace: string, poolerName: string): Promise<PoolerObjectRef[]>;
  /** Deletes this very object (its uid a precondition); one already gone counts as deleted. */
  deletePoolerObject(object: PoolerObjectRef): Promise<void>;

  /**
   * Keeps (or, with null, drops) on the policy the limit a role had before the policy set one,
   * so that it can be restored; returns the policy as stored.
   */
  recordLimitBefore(policy: PoolPolicy, record: LimitRecord | null): Promise<PoolPolicy>;

  /** Returns the policy as stored, finalizer included. */
  addFinalizer(policy: PoolPolicy): Promise<PoolPolicy>;
  removeFinalizer(policy: PoolPolicy): Promise<void>;
  /**
   * Writes the whole status of this very object (uid checked); throws RequeueError when the
   * policy was deleted or re-created meanwhile.
   */
  writeStatus(policy: PoolPolicy, status: PoolPolicyStatus): Promise<void>;
}

export interface PostgresPort {
  /** The server's facts for a pass of the policy `reader` (namespace/name; see server-facts.ts). */
  inspectServer(target: PostgresTarget, reader: string): Promise<ServerFacts>;
  inspectInstance(target: PostgresTarget): Promise<InstanceFacts>;
  /** ALTER SYSTEM SET max_connections = value, then pg_reload_conf(). */
  alterMaxConnections(target: PostgresTarget, value: number): Promise<void>;
  /** The role a policy holds to its share: its limit and sessions, whether a superuser or our own login. */
  inspectRole(target: PostgresTarget, role: string): Promise<RoleFacts>;
  /** ALTER ROLE role CONNECTION LIMIT limit (-1: none). */
  setConnectionLimit(target: PostgresTarget, role: string, limit: number): Promise<void>;
  /** Sets idle_in_transaction_session_timeout to `timeoutMs` for `scope`; a note when it changed something. */
  applyServerTimeout(target: PostgresTarget, scope: ServerTimeoutScope, timeoutMs: number): Promise<string | undefined>;
  /** Ends (or, in dry run, lists) the sessions idle in transaction for more than `timeoutMs`. */
  runReaper(
    target: PostgresTarget,
    spec: PoolPolicySpec,
    timeoutMs: number,
    previous: PoolPolicyStatus["reaper"],
    now: Date,
  ): Promise<ReaperOutcome>;
}

export interface RedisPort {
  /** The policy's Redis (URL from its Secret): reachable, and how close to maxclients. */
  check(namespace: string, spec: PoolPolicySpec): Promise<RedisOutcome>;
}
