/**
 * The reconciler's ports (ports.ts) on the real parts: the API server through client-node's
 * typed clients and the operator's watch caches, PostgreSQL through the operator's pools, Redis
 * through a fresh connection per check.
 */
import {
  AppsV1Api,
  AutoscalingV2Api,
  CoreV1Api,
  CustomObjectsApi,
  type KubeConfig,
  PatchStrategy,
  setHeaderOptions,
  type V1Deployment,
  type V2HorizontalPodAutoscaler,
} from "@kubernetes/client-node";
import { GROUP, PLURAL, type PoolPolicy, type PoolPolicyStatus, VERSION } from "../api/schema.js";
import type pg from "pg";
import type { PostgresPools, PostgresTarget } from "../postgres/connection.js";
import { inspectInstance, inspectServer } from "../postgres/inspect.js";
import { inspectRole, setConnectionLimit } from "../postgres/roles.js";
import { alterMaxConnections } from "../postgres/settings.js";
import { RequeueError } from "../runtime/controller.js";
import { checkRedisDependency } from "../server/dependencies.js";
import { fieldManagerFor } from "./env-injection.js";
import { ensureFinalizer, removeFinalizer } from "./finalizer.js";
import { recordLimitBefore } from "./limit-record.js";
import { applyPoolerObjects, deletePoolerObject, RecentPoolerApplies, readPoolerObjects } from "./pooler-apply.js";
import { isNotFound, statusCodeOf } from "../kube/errors.js";
import type { KubernetesPort, PostgresPort, RedisPort } from "./ports.js";
import type { ServiceFacts } from "../server/identity.js";
import { STALE_RETRY_MS } from "./pass.js";
import { SharedServerFacts } from "./server-facts.js";
import { applyServerTimeout, runReaper } from "./reaper.js";
import { type CachedSecretReader, readSecretKeys } from "../kube/secrets.js";
import { applyPoolEnv, deploymentsOwnedBy, removePoolEnv } from "./targets.js";
import { holdRestarts, readWorkload, recordRestart, requestRestart, setOwnerMaxConnections } from "./workload.js";

/** How long a Service read for discovery is kept (readService). */
const SERVICE_READ_TTL_MS = 60_000;

/** The watch caches the wiring keeps (target-watches.ts); a LIST is the fallback until one has synced. */
export interface WatchCaches {
  watchTargets(policyKey: string, namespace: string, labelSelector: string | null): void;
  cachedTargets(policyKey: string, namespace: string, labelSelector: string): Promise<V1Deployment[] | undefined>;
  cachedHpas(namespace: string): Promise<V2HorizontalPodAutoscaler[] | undefined>;
  budgetInputsVersion(selections: Iterable<{ namespace: string; selector: string }>): number | undefined;
  /** The credentials Secret from its watch (null: synced, no such Secret); undefined: read it with a GET. */
  cachedSecret: CachedSecretReader;
}

export class ApiKubernetes implements KubernetesPort {
  private readonly apps: AppsV1Api;
  private readonly autoscaling: AutoscalingV2Api;
  private readonly core: CoreV1Api;
  private readonly custom: CustomObjectsApi;
  private readonly poolerApplies = new RecentPoolerApplies();
  private readonly services = new Map<string, { at: number; facts: ServiceFacts | undefined }>();

  constructor(
    kc: KubeConfig,
    private readonly caches: WatchCaches,
  ) {
    this.apps = kc.makeApiClient(AppsV1Api);
    this.autoscaling = kc.makeApiClient(AutoscalingV2Api);
    this.core = kc.makeApiClient(CoreV1Api);
    this.custom = kc.makeApiClient(CustomObjectsApi);
  }

  private get workloads() {
    return { apps: this.apps, custom: this.custom };
  }

  watchTargets(policyKey: string, namespace: string, labelSelector: string | null): void {
    this.caches.watchTargets(policyKey, namespace, labelSelector);
  }

  async deployments(policyKey: string, namespace: string, labelSelector: string): Promise<V1Deployment[]> {
    const cached = await this.caches.cachedTargets(policyKey, namespace, labelSelector);
    return cached ?? (await this.apps.listNamespacedDeployment({ namespace, labelSelector })).items;
  }

  async hpas(namespace: string): Promise<V2HorizontalPodAutoscaler[]> {
    const cached = await this.caches.cachedHpas(namespace);
    return cached ?? (await this.autoscaling.listNamespacedHorizontalPodAutoscaler({ namespace })).items;
  }

  budgetInputsVersion(selections: Iterable<{ namespace: string; selector: string }>): number | undefined {
    return this.caches.budgetInputsVersion(selections);
  }

  readSecretKeys(namespace: string, name: string, keys: string[]) {
    return readSecretKeys(this.core, namespace, name, keys, this.caches.cachedSecret);
  }

  readWorkload(...args: Parameters<KubernetesPort["readWorkload"]>) {
    return readWorkload(this.workloads, ...args);
  }

  requestRestart(...args: Parameters<KubernetesPort["requestRestart"]>) {
    return requestRestart(this.workloads, ...args);
  }

  recordRestart(...args: Parameters<KubernetesPort["recordRestart"]>) {
    return recordRestart(this.workloads, ...args);
  }

  setOwnerMaxConnections(...args: Parameters<KubernetesPort["setOwnerMaxConnections"]>) {
    return setOwnerMaxConnections(this.workloads, ...args);
  }

  holdRestarts(...args: Parameters<KubernetesPort["holdRestarts"]>) {
    return holdRestarts(this.workloads, ...args);
  }

  async listPods(namespace: string, labelSelector: string | undefined) {
    return (await this.core.listNamespacedPod({ namespace, labelSelector })).items;
  }

  /**
   * Discovery reads the server's Service on every pass that ends in a refusal (discovery.ts), and
   * such a policy is passed again on each resync and each watch event: a Service's labels and
   * owner change about never, so a reading is kept for SERVICE_READ_TTL_MS.
   */
  async readService(namespace: string, name: string): Promise<ServiceFacts | undefined> {
    const key = `${namespace}/${name}`;
    const kept = this.services.get(key);
    if (kept && Date.now() - kept.at < SERVICE_READ_TTL_MS) return kept.facts;
    let facts: ServiceFacts | undefined;
    try {
      const service = await this.core.readNamespacedService({ namespace, name });
      facts = {
        name,
        namespace,
        labels: service.metadata?.labels ?? {},
        ownerReferences: service.metadata?.ownerReferences ?? [],
      };
    } catch (err) {
      // Discovery only informs: no Service by that name (an outside host), or no right to read
      // Services (a chart without the rule), leaves the message as it was.
      if (!isNotFound(err) && statusCodeOf(err) !== 403) throw err;
    }
    this.services.set(key, { at: Date.now(), facts });
    return facts;
  }

  async deletePod(namespace: string, name: string): Promise<void> {
    await this.core.deleteNamespacedPod({ name, namespace });
  }

  applyPoolEnv(...args: Parameters<KubernetesPort["applyPoolEnv"]>) {
    return applyPoolEnv(this.apps, ...args);
  }

  async removePoolEnv(policy: { name: string; namespace: string }): Promise<string[]> {
    const manager = fieldManagerFor(policy.name);
    const changed: string[] = [];
    for (const deployment of await deploymentsOwnedBy(this.apps, policy.namespace, manager)) {
      if (await removePoolEnv(this.apps, deployment, policy.namespace, manager)) changed.push(deployment);
    }
    return changed;
  }

  async applyPooler(...[objects]: Parameters<KubernetesPort["applyPooler"]>): Promise<void> {
    if (this.poolerApplies.isFresh(objects)) return;
    try {
      await applyPoolerObjects({ apps: this.apps, core: this.core }, objects);
      this.poolerApplies.record(objects);
    } catch (err) {
      this.poolerApplies.forget(objects);
      throw err;
    }
  }

  async readPoolerDeployment(namespace: string, name: string): Promise<V1Deployment | undefined> {
    try {
      return await this.apps.readNamespacedDeployment({ namespace, name });
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw err;
    }
  }

  readPoolerObjects(namespace: string, poolerName: string) {
    return readPoolerObjects({ apps: this.apps, core: this.core }, namespace, poolerName);
  }

  async deletePoolerObject(...[object]: Parameters<KubernetesPort["deletePoolerObject"]>): Promise<void> {
    await deletePoolerObject({ apps: this.apps, core: this.core }, object);
    this.poolerApplies.forgetPooler(object.namespace, object.pooler);
  }

  recordLimitBefore(...args: Parameters<KubernetesPort["recordLimitBefore"]>) {
    return recordLimitBefore(this.custom, ...args);
  }

  addFinalizer(policy: PoolPolicy): Promise<PoolPolicy> {
    return ensureFinalizer(this.custom, policy);
  }

  removeFinalizer(policy: PoolPolicy): Promise<void> {
    return removeFinalizer(this.custom, policy);
  }

  /**
   * Writes the whole status without a resourceVersion precondition: the status says which spec
   * it describes (observedGeneration), so a spec edit made during this pass does not make it
   * wrong, and the edit's own watch event brings a new pass. With the precondition, a policy
   * edited faster than a pass takes never got its status written (the event-storm benchmark).
   * The uid test keeps a status from landing on a policy deleted and re-created meanwhile.
   */
  async writeStatus(policy: PoolPolicy, status: PoolPolicyStatus): Promise<void> {
    const { name, namespace, uid } = policy.metadata;
    try {
      await this.custom.patchNamespacedCustomObjectStatus(
        {
          ...{ group: GROUP, version: VERSION, plural: PLURAL, namespace, name },
          body: [
            { op: "test", path: "/metadata/uid", value: uid },
            { op: "add", path: "/status", value: status },
          ],
        },
        setHeaderOptions("Content-Type", PatchStrategy.JsonPatch),
      );
    } catch (err) {
      // A failed test answers 422, like a status the schema refuses: only the uid tells them apart.
      if (statusCodeOf(err) === 422 && (await this.uidNow(policy)) !== uid) {
        throw new RequeueError(
          `${namespace}/${name} was deleted or re-created meanwhile; reconciling what is there now`,
          STALE_RETRY_MS,
        );
      }
      throw err;
    }
  }

  private async uidNow(policy: PoolPolicy): Promise<string | undefined> {
    const { name, namespace } = policy.metadata;
    try {
      const params = { group: GROUP, version: VERSION, plural: PLURAL, namespace, name };
      return ((await this.custom.getNamespacedCustomObject(params)) as PoolPolicy).metadata.uid;
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw err;
    }
  }
}

export class PooledPostgres implements PostgresPort {
  constructor(
    private readonly pools: PostgresPools,
    /** One recent reading of a server's facts for all its policies' passes (server-facts.ts). */
    private readonly facts = new SharedServerFacts(),
  ) {}

  inspectServer(...[target, reader]: Parameters<PostgresPort["inspectServer"]>) {
    return this.facts.read(target, reader, () => this.pools.withClient(target, inspectServer));
  }

  inspectInstance(target: Parameters<PostgresPort["inspectInstance"]>[0]) {
    return this.pools.withClient(target, inspectInstance);
  }

  alterMaxConnections(...[target, value]: Parameters<PostgresPort["alterMaxConnections"]>) {
    return this.changing(
      target,
      (c) => alterMaxConnections(c, value),
      () => true,
    );
  }

  inspectRole(...[target, role]: Parameters<PostgresPort["inspectRole"]>) {
    return this.pools.withClient(target, (c) => inspectRole(c, role));
  }

  setConnectionLimit(...[target, role, limit]: Parameters<PostgresPort["setConnectionLimit"]>) {
    return this.pools.withClient(target, (c) => setConnectionLimit(c, role, limit));
  }

  applyServerTimeout(...[target, scope, timeoutMs]: Parameters<PostgresPort["applyServerTimeout"]>) {
    // A note says it changed the setting.
    return this.changing(
      target,
      (c) => applyServerTimeout(c, scope, timeoutMs),
      (note) => note !== undefined,
    );
  }

  runReaper(...[target, spec, timeoutMs, previous, now]: Parameters<PostgresPort["runReaper"]>) {
    return this.changing(
      target,
      (c) => runReaper(c, spec, timeoutMs, previous, now),
      (reaped) => reaped.sessions.some((s) => s.terminated),
    );
  }

  /** Runs `work`, then drops the shared facts of the server if it changed something there (or failed: unknown). */
  private async changing<T>(
    target: PostgresTarget,
    work: (client: pg.PoolClient) => Promise<T>,
    changed: (result: T) => boolean,
  ): Promise<T> {
    let result: T;
    try {
      result = await this.pools.withClient(target, work);
    } catch (err) {
      this.facts.invalidate(target);
      throw err;
    }
    if (changed(result)) this.facts.invalidate(target);
    return result;
  }
}

export class SecretUrlRedis implements RedisPort {
  constructor(private readonly kube: Pick<KubernetesPort, "readSecretKeys">) {}

  check(...[namespace, spec]: Parameters<RedisPort["check"]>) {
    return checkRedisDependency((ns, name, keys) => this.kube.readSecretKeys(ns, name, keys), namespace, spec);
  }
}
