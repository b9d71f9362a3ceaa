/**
 * One Deployment watch per PoolPolicy, narrowed to the policy's namespace and label selector,
 * so the operator caches only the Deployments it governs. Any change to one of them, a new
 * match, or one leaving the selection (the watch then reports it deleted) enqueues the policy.
 */
import { AppsV1Api, type KubeConfig, type V1Deployment } from "@kubernetes/client-node";
import type { Logger } from "../log.js";
import { ResilientInformer } from "../runtime/informer.js";
import { abortableRequest } from "../runtime/request-options.js";

interface Watched {
  namespace: string;
  selector: string;
  informer: ResilientInformer<V1Deployment>;
}

export class TargetWatches {
  private readonly watches = new Map<string, Watched>();
  private readonly apps: AppsV1Api;

  constructor(
    private readonly kc: KubeConfig,
    private readonly enqueue: (policyKey: string) => void,
    private readonly log: Logger,
    private readonly resyncMs = 0,
  ) {
    this.apps = kc.makeApiClient(AppsV1Api);
  }

  /** Makes sure the policy's Deployments are watched with this selector; null stops watching. */
  ensure(policyKey: string, namespace: string, selector: string | null): void {
    const current = this.watches.get(policyKey);
    if (current && selector !== null && current.namespace === namespace && current.selector === selector) return;
    if (current) {
      this.watches.delete(policyKey);
      void current.informer.stop();
    }
    if (selector === null) return;
    const enqueue = () => this.enqueue(policyKey);
    const informer = new ResilientInformer<V1Deployment>(
      this.kc,
      `/apis/apps/v1/namespaces/${namespace}/deployments`,
      ({ labelSelector, signal }) => this.apps.listNamespacedDeployment({ namespace, labelSelector }, abortableRequest(signal)),
      {
        name: `deployments(${policyKey})`,
        labelSelector: selector,
        resyncMs: this.resyncMs,
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

  get size(): number {
    return this.watches.size;
  }

  async stopAll(): Promise<void> {
    const all = [...this.watches.values()];
    this.watches.clear();
    await Promise.all(all.map((w) => w.informer.stop()));
  }
}
