/**
 * One Deployment watch per PoolPolicy, narrowed to the policy's namespace and label selector,
 * so the operator caches only the Deployments it governs. Any change to one of them, a new
 * match, or one leaving the selection (the watch then reports it deleted) enqueues the policy.
 *
 * One HorizontalPodAutoscaler watch per namespace that has policies: an HPA's maxReplicas is
 * part of the connection budget, so any HPA change enqueues every policy of the namespace.
 */
import {
  AppsV1Api,
  AutoscalingV2Api,
  type KubeConfig,
  type KubernetesObject,
  type V1Deployment,
  type V2HorizontalPodAutoscaler,
} from "@kubernetes/client-node";
import type { Logger } from "../log.js";
import { ResilientInformer } from "../runtime/informer.js";
import { abortableRequest } from "../runtime/request-options.js";

/**
 * How long a reader waits for a watch that is still listing before listing itself: a watch
 * that cannot list (the API server failing, RBAC) leaves the error to the reader's own list.
 */
const SYNC_WAIT_MS = 3_000;

interface Watched {
  namespace: string;
  selector: string;
  informer: ResilientInformer<V1Deployment>;
}

export class TargetWatches {
  private readonly watches = new Map<string, Watched>();
  private readonly hpaWatches = new Map<string, ResilientInformer<V2HorizontalPodAutoscaler>>();
  private readonly apps: AppsV1Api;
  private readonly autoscaling: AutoscalingV2Api;

  constructor(
    private readonly kc: KubeConfig,
    private readonly enqueue: (policyKey: string) => void,
    private readonly log: Logger,
    private readonly resyncMs = 0,
  ) {
    this.apps = kc.makeApiClient(AppsV1Api);
    this.autoscaling = kc.makeApiClient(AutoscalingV2Api);
  }

  /** Makes sure the policy's Deployments are watched with this selector; null stops watching. */
  ensure(policyKey: string, namespace: string, selector: string | null): void {
    const current = this.watches.get(policyKey);
    if (current && selector !== null && current.namespace === namespace && current.selector === selector) return;
    if (current) {
      this.watches.delete(policyKey);
      void current.informer.stop();
      this.releaseHpaWatch(current.namespace);
    }
    if (selector === null) return;
    this.ensureHpaWatch(namespace);
    const enqueue = () => this.enqueue(policyKey);
    const informer = new ResilientInformer<V1Deployment>(
      this.kc,
      `/apis/apps/v1/namespaces/${namespace}/deployments`,
      ({ labelSelector, resourceVersion, signal }) =>
        this.apps.listNamespacedDeployment({ namespace, labelSelector, resourceVersion }, abortableRequest(signal)),
      {
        name: `deployments(${policyKey})`,
        labelSelector: selector,
        resyncMs: this.resyncMs,
        transform: withoutManagedFields,
        onAdd: enqueue,
        onUpdate: (before, after) => {
          // Status-only churn of a Deployment that is not rolling matters only for rollout tracking.
          if (before.metadata?.resourceVersion !== after.metadata?.resourceVersion) enqueue();
        },
        onDelete: enqueue,
        logger: this.log,
      },
    );
    informer.start();
    this.watches.set(policyKey, { namespace, selector, informer });
  }

  /**
   * The policy's Deployments from its watch, if it watches this selector; a watch still listing
   * is waited for (the first pass of a new policy would otherwise list the same Deployments a
   * second time). Undefined when there is no such watch or it has not synced in time.
   */
  async cachedTargets(policyKey: string, namespace: string, selector: string): Promise<V1Deployment[] | undefined> {
    const w = this.watches.get(policyKey);
    return w && w.namespace === namespace && w.selector === selector ? syncedContents(w.informer) : undefined;
  }

  /** The namespace's HPAs from its watch, waited for as the Deployments are. */
  async cachedHpas(namespace: string): Promise<V2HorizontalPodAutoscaler[] | undefined> {
    const informer = this.hpaWatches.get(namespace);
    return informer ? syncedContents(informer) : undefined;
  }

  private ensureHpaWatch(namespace: string): void {
    if (this.hpaWatches.has(namespace)) return;
    const enqueueNamespace = () => {
      for (const [key, w] of this.watches) if (w.namespace === namespace) this.enqueue(key);
    };
    const informer = new ResilientInformer<V2HorizontalPodAutoscaler>(
      this.kc,
      `/apis/autoscaling/v2/namespaces/${namespace}/horizontalpodautoscalers`,
      ({ resourceVersion, signal }) =>
        this.autoscaling.listNamespacedHorizontalPodAutoscaler(
          { namespace, resourceVersion },
          abortableRequest(signal),
        ),
      {
        name: `hpas(${namespace})`,
        onAdd: enqueueNamespace,
        // Status churn (current metrics) every few seconds: only a spec change moves the budget.
        onUpdate: (before, after) => {
          if (JSON.stringify(before.spec) !== JSON.stringify(after.spec)) enqueueNamespace();
        },
        onDelete: enqueueNamespace,
        logger: this.log,
      },
    );
    informer.start();
    this.hpaWatches.set(namespace, informer);
  }

  /** Stops the namespace's HPA watch once no policy of the namespace is watched any more. */
  private releaseHpaWatch(namespace: string): void {
    if ([...this.watches.values()].some((w) => w.namespace === namespace)) return;
    const informer = this.hpaWatches.get(namespace);
    this.hpaWatches.delete(namespace);
    void informer?.stop();
  }

  get size(): number {
    return this.watches.size;
  }

  async stopAll(): Promise<void> {
    const informers: { stop(): Promise<void> }[] = [
      ...[...this.watches.values()].map((w) => w.informer),
      ...this.hpaWatches.values(),
    ];
    this.watches.clear();
    this.hpaWatches.clear();
    await Promise.all(informers.map((i) => i.stop()));
  }
}

/** What the watch holds once it has synced; undefined if it has not within SYNC_WAIT_MS. */
async function syncedContents<T extends KubernetesObject>(informer: ResilientInformer<T>): Promise<T[] | undefined> {
  return (await informer.waitForSync(SYNC_WAIT_MS)) ? informer.list() : undefined;
}

/**
 * managedFields are often the largest part of a Deployment and nothing read from the cache
 * needs them (whoever checks field ownership reads the object from the API): caching
 * Deployments without them cut the heap per watched Deployment (docs/benchmarks.md, memory).
 */
function withoutManagedFields(deployment: V1Deployment): V1Deployment {
  if (!deployment.metadata?.managedFields) return deployment;
  const { managedFields: _dropped, ...metadata } = deployment.metadata;
  return { ...deployment, metadata };
}
