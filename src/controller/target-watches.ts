/**
 * The Deployments and HorizontalPodAutoscalers the policies read, from one shared watch of
 * each kind per namespace that has policies, indexed by label.
 *
 * Why shared: one watch per policy meant 200 watches (and 200 copies of overlapping caches) for
 * 200 policies, and a reconcile that needed a peer's Deployments for the budget listed them
 * whenever that peer's watch did not exist yet: start-up grew with the square of the policies
 * (issue 13). Now every policy of a namespace is answered from the same cache, whatever its
 * selector, and the budget of a server reads its peers' Deployments from memory.
 *
 * Why per namespace and not cluster-wide (WATCH_NAMESPACE empty): a cluster-wide watch would
 * cache every Deployment of the cluster, kube-system's included, where only namespaces with a
 * policy matter; with WATCH_NAMESPACE set there is one namespace anyway. The RBAC is the same
 * either way (list/watch of deployments and horizontalpodautoscalers in the watched scope).
 *
 * What is cached is kept lean (`leanDeployment`): a namespace's Deployments are cached whether
 * a policy selects them or not, so each carries only what the reconciler reads.
 *
 * A Deployment change enqueues only the policies whose selector matched it before or matches
 * it after the change; an HPA change, those that select the Deployment it scales.
 */
import {
  AppsV1Api,
  AutoscalingV2Api,
  type KubeConfig,
  type KubernetesObject,
  type V1Deployment,
  type V1DeploymentList,
  type V2HorizontalPodAutoscaler,
} from "@kubernetes/client-node";
import { isDeepStrictEqual } from "node:util";
import { TAKES_ANNOTATION } from "./env-conflicts.js";
import { POOLER_ROUTE_ANNOTATION } from "./env-injection.js";
import type { Logger } from "../log.js";
import { ResilientInformer } from "../runtime/informer.js";
import { LabelSelector, labelIndexKey, type Labels } from "../runtime/label-selector.js";
import { abortableRequest } from "../runtime/request-options.js";

/**
 * How long a reader waits for a watch that is still listing before listing itself: a watch
 * that cannot list (the API server failing, RBAC) leaves the error to the reader's own list.
 */
const SYNC_WAIT_MS = 3_000;

/** Deployments per page of a namespace's list. */
const LIST_PAGE = 500;

interface WatchedPolicy {
  namespace: string;
  selector: LabelSelector;
}

/** Members (names or keys) filed under `key=value` label entries. */
class LabelIndex {
  private readonly entries = new Map<string, Set<string>>();

  add(member: string, keys: readonly string[]): void {
    for (const key of keys) {
      const set = this.entries.get(key);
      if (set) set.add(member);
      else this.entries.set(key, new Set([member]));
    }
  }

  remove(member: string, keys: readonly string[]): void {
    for (const key of keys) {
      const set = this.entries.get(key);
      set?.delete(member);
      if (set?.size === 0) this.entries.delete(key);
    }
  }

  get(key: string): ReadonlySet<string> | undefined {
    return this.entries.get(key);
  }
}

/** One namespace's watches, the Deployments indexed by label, and the policies indexed by selector. */
interface NamespaceCache {
  deployments: ResilientInformer<V1Deployment>;
  hpas: ResilientInformer<V2HorizontalPodAutoscaler>;
  deploymentsByLabel: LabelIndex;
  policies: Set<string>;
  /** Policies filed under their selector's `indexKeys`; the others are in `unindexedPolicies`. */
  policiesByLabel: LabelIndex;
  unindexedPolicies: Set<string>;
}

export class TargetWatches {
  private readonly policies = new Map<string, WatchedPolicy>();
  private readonly namespaces = new Map<string, NamespaceCache>();
  private readonly parsedSelectors = new Map<string, LabelSelector>();
  /** Counts changes to what the budget reads (budgetInputsVersion). */
  private budgetInputs = 0;
  private readonly apps: AppsV1Api;
  private readonly autoscaling: AutoscalingV2Api;

  constructor(
    private readonly kc: KubeConfig,
    private readonly enqueue: (policyKey: string) => void,
    private readonly log: Logger,
  ) {
    this.apps = kc.makeApiClient(AppsV1Api);
    this.autoscaling = kc.makeApiClient(AutoscalingV2Api);
  }

  /**
   * Registers the policy's selector, so that changes of the Deployments it selects enqueue it,
   * and makes sure its namespace is watched; null forgets the policy (and stops the namespace's
   * watches once no policy is left there).
   */
  ensure(policyKey: string, namespace: string, selector: string | null): void {
    const current = this.policies.get(policyKey);
    if (current && selector !== null && current.namespace === namespace && current.selector.text === selector) return;
    if (current) this.unregister(policyKey, current);
    if (selector === null) return;
    let parsed: LabelSelector;
    try {
      parsed = LabelSelector.parse(selector);
    } catch (err) {
      // The reconciler's own LIST with this selector then reports the API server's answer.
      this.log.warn({ policy: policyKey, error: (err as Error).message }, "selector not understood; not watched");
      return;
    }
    const cache = this.namespaces.get(namespace) ?? this.watchNamespace(namespace);
    const watched = { namespace, selector: parsed };
    this.policies.set(policyKey, watched);
    cache.policies.add(policyKey);
    const keys = parsed.indexKeys();
    if (keys) cache.policiesByLabel.add(policyKey, keys);
    else cache.unindexedPolicies.add(policyKey);
  }

  /**
   * The Deployments of the namespace that the selector matches, from the namespace's watch; a
   * watch still listing is waited for (a new policy's first pass would otherwise list the same
   * Deployments a second time). Undefined when the namespace is not watched (no policy of it
   * has been reconciled yet), its watch has not synced in time, or the selector is not valid:
   * the caller then lists. Any policy's selector is answered, not only the asking policy's:
   * the budget reads its peers' Deployments.
   */
  async cachedTargets(_policyKey: string, namespace: string, selector: string): Promise<V1Deployment[] | undefined> {
    const cache = this.namespaces.get(namespace);
    if (!cache || !(await cache.deployments.waitForSyncUnlessFailing(SYNC_WAIT_MS))) return undefined;
    let parsed: LabelSelector;
    try {
      parsed = this.selectorOf(selector);
    } catch {
      return undefined;
    }
    const keys = parsed.indexKeys();
    if (!keys) return cache.deployments.list().filter((d) => parsed.matches(d.metadata?.labels));
    const found: V1Deployment[] = [];
    for (const key of keys) {
      for (const name of cache.deploymentsByLabel.get(key) ?? []) {
        const d = cache.deployments.get(namespace, name);
        if (d && parsed.matches(d.metadata?.labels)) found.push(d);
      }
    }
    return found;
  }

  /** The namespace's HPAs from its watch, waited for as the Deployments are. */
  async cachedHpas(namespace: string): Promise<V2HorizontalPodAutoscaler[] | undefined> {
    const cache = this.namespaces.get(namespace);
    return cache && (await cache.hpas.waitForSyncUnlessFailing(SYNC_WAIT_MS)) ? cache.hpas.list() : undefined;
  }

  /** The policies watched, for tests and diagnostics. */
  get size(): number {
    return this.policies.size;
  }

  /** The namespaces watched, for tests and diagnostics. */
  get namespaceCount(): number {
    return this.namespaces.size;
  }

  async stopAll(): Promise<void> {
    const caches = [...this.namespaces.values()];
    this.namespaces.clear();
    this.policies.clear();
    await Promise.all(caches.flatMap((c) => [c.deployments.stop(), c.hpas.stop()]));
  }

  /** A registered policy's parsed selector when one has this text (the usual case), else parsed now. */
  /**
   * A selector parsed once: the budget asks for every peer's Deployments on every pass, and
   * scanning the watched policies for the parsed one made each pass quadratic in the policies
   * of a server. Parsing is pure, so entries never go stale; the map is only kept bounded.
   */
  private selectorOf(text: string): LabelSelector {
    let parsed = this.parsedSelectors.get(text);
    if (!parsed) {
      parsed = LabelSelector.parse(text);
      if (this.parsedSelectors.size >= 2 * this.policies.size + 64) this.parsedSelectors.clear();
      this.parsedSelectors.set(text, parsed);
    }
    return parsed;
  }

  /**
   * A number that changes whenever anything the budget reads of these namespaces' Deployments
   * and HPAs may have changed (a Deployment added or deleted, its labels, replicas or strategy;
   * any HPA change), or undefined when a budget over these selections would not be read from
   * the caches alone (a namespace not watched or not synced yet, a selector the caches cannot
   * answer): then nothing may be reused. budget-targets.ts keys its reuse on it.
   */
  budgetInputsVersion(selections: Iterable<{ namespace: string; selector: string }>): number | undefined {
    for (const { namespace, selector } of selections) {
      const cache = this.namespaces.get(namespace);
      if (!cache?.deployments.hasSynced() || !cache.hpas.hasSynced()) return undefined;
      try {
        this.selectorOf(selector);
      } catch {
        return undefined;
      }
    }
    return this.budgetInputs;
  }

  private unregister(policyKey: string, watched: WatchedPolicy): void {
    this.policies.delete(policyKey);
    const cache = this.namespaces.get(watched.namespace);
    if (!cache) return;
    cache.policies.delete(policyKey);
    const keys = watched.selector.indexKeys();
    if (keys) cache.policiesByLabel.remove(policyKey, keys);
    else cache.unindexedPolicies.delete(policyKey);
    if (cache.policies.size > 0) return;
    this.namespaces.delete(watched.namespace);
    this.budgetInputs += 1;
    void cache.deployments.stop();
    void cache.hpas.stop();
  }

  /** Enqueues every policy of the namespace whose selector matches any of these label sets. */
  private enqueueSelecting(cache: NamespaceCache, ...labelSets: Labels[]): void {
    const candidates = new Set(cache.unindexedPolicies);
    for (const labels of labelSets) {
      for (const [k, v] of Object.entries(labels ?? {})) {
        for (const key of cache.policiesByLabel.get(labelIndexKey(k, v)) ?? []) candidates.add(key);
      }
    }
    for (const key of candidates) {
      const selector = this.policies.get(key)?.selector;
      if (selector && labelSets.some((labels) => selector.matches(labels))) this.enqueue(key);
    }
  }

  /**
   * A namespace's Deployments, LIST_PAGE at a time (a server may answer all at once), each page
   * made lean before the next is read: one list of 5,000 whole Deployments, decoded into the
   * typed client's objects at once, is a peak of memory that the process keeps as RSS long
   * after (docs/benchmarks.md, memory).
   */
  private async listDeploymentsInPages(
    namespace: string,
    resourceVersion: string | undefined,
    signal: AbortSignal,
  ): Promise<V1DeploymentList> {
    const items: V1Deployment[] = [];
    let page = await this.apps.listNamespacedDeployment(
      { namespace, resourceVersion, limit: LIST_PAGE },
      abortableRequest(signal),
    );
    items.push(...page.items.map(leanDeployment));
    // A continued list is the snapshot of the first page: it takes no resourceVersion.
    while (page.metadata?._continue) {
      page = await this.apps.listNamespacedDeployment(
        { namespace, limit: LIST_PAGE, _continue: page.metadata._continue },
        abortableRequest(signal),
      );
      items.push(...page.items.map(leanDeployment));
    }
    return { ...page, items };
  }

  private watchNamespace(namespace: string): NamespaceCache {
    const deploymentsByLabel = new LabelIndex();
    const deployments = new ResilientInformer<V1Deployment>(
      this.kc,
      `/apis/apps/v1/namespaces/${namespace}/deployments`,
      ({ resourceVersion, signal }) => this.listDeploymentsInPages(namespace, resourceVersion, signal),
      {
        name: `deployments(${namespace})`,
        transform: leanDeployment,
        onAdd: (d) => {
          deploymentsByLabel.add(d.metadata!.name!, labelKeys(d));
          this.budgetInputs += 1;
          this.enqueueSelecting(cache, d.metadata?.labels);
        },
        onUpdate: (before, after) => {
          if (!changedBesidesVersion(before, after)) return;
          deploymentsByLabel.remove(before.metadata!.name!, labelKeys(before));
          deploymentsByLabel.add(after.metadata!.name!, labelKeys(after));
          if (changedForBudget(before, after)) this.budgetInputs += 1;
          this.enqueueSelecting(cache, before.metadata?.labels, after.metadata?.labels);
        },
        onDelete: (d) => {
          deploymentsByLabel.remove(d.metadata!.name!, labelKeys(d));
          this.budgetInputs += 1;
          this.enqueueSelecting(cache, d.metadata?.labels);
        },
        logger: this.log,
      },
    );
    const enqueueForScaleTarget = (...hpas: V2HorizontalPodAutoscaler[]) => {
      const targets = hpas
        .map((h) => h.spec?.scaleTargetRef)
        .filter((ref) => ref?.kind === "Deployment")
        .map((ref) => deployments.get(namespace, ref!.name)?.metadata?.labels)
        .filter((labels) => labels !== undefined);
      if (targets.length > 0) this.enqueueSelecting(cache, ...targets);
    };
    const hpas = new ResilientInformer<V2HorizontalPodAutoscaler>(
      this.kc,
      `/apis/autoscaling/v2/namespaces/${namespace}/horizontalpodautoscalers`,
      ({ resourceVersion, signal }) =>
        this.autoscaling.listNamespacedHorizontalPodAutoscaler(
          { namespace, resourceVersion },
          abortableRequest(signal),
        ),
      {
        name: `hpas(${namespace})`,
        transform: leanHpa,
        onAdd: (h) => {
          this.budgetInputs += 1;
          enqueueForScaleTarget(h);
        },
        // Status churn (current metrics) every few seconds is dropped by leanHpa: only the spec moves the budget.
        onUpdate: (before, after) => {
          if (isDeepStrictEqual(before.spec, after.spec)) return;
          this.budgetInputs += 1;
          enqueueForScaleTarget(before, after);
        },
        onDelete: (h) => {
          this.budgetInputs += 1;
          enqueueForScaleTarget(h);
        },
        logger: this.log,
      },
    );
    const cache: NamespaceCache = {
      deployments,
      hpas,
      deploymentsByLabel,
      policies: new Set(),
      policiesByLabel: new LabelIndex(),
      unindexedPolicies: new Set(),
    };
    this.namespaces.set(namespace, cache);
    deployments.start();
    hpas.start();
    return cache;
  }
}

function labelKeys(d: KubernetesObject): string[] {
  return Object.entries(d.metadata?.labels ?? {}).map(([k, v]) => labelIndexKey(k, v));
}

/** Whether anything the lean copy keeps changed, beyond the resourceVersion (annotations, managedFields, …). */
function changedBesidesVersion(before: V1Deployment, after: V1Deployment): boolean {
  const { resourceVersion: _b, ...beforeMeta } = before.metadata ?? {};
  const { resourceVersion: _a, ...afterMeta } = after.metadata ?? {};
  return (
    !isDeepStrictEqual(beforeMeta, afterMeta) ||
    !isDeepStrictEqual(before.spec, after.spec) ||
    !isDeepStrictEqual(before.status, after.status)
  );
}

/** Whether a Deployment changed in what a server's budget reads of it (model.ts, gatherBudgetTargets). */
function changedForBudget(before: V1Deployment, after: V1Deployment): boolean {
  return (
    before.metadata?.name !== after.metadata?.name ||
    !isDeepStrictEqual(before.metadata?.labels, after.metadata?.labels) ||
    before.spec?.replicas !== after.spec?.replicas ||
    !isDeepStrictEqual(before.spec?.strategy, after.spec?.strategy)
  );
}

/**
 * What the operator reads of a Deployment, and nothing else: name, labels and versions; the
 * record of its takes in a fight over the env (env-conflicts.ts: without it the operator never
 * stops taking the env back from a GitOps tool); the replicas and strategy (the budget); each
 * container's name and env (env injection); the rollout counters (status). managedFields alone were the largest part of a Deployment
 * (docs/benchmarks.md, memory). Whoever needs more (field ownership, say) reads the object from
 * the API, or adds the field here.
 */
export function leanDeployment(d: V1Deployment): V1Deployment {
  const m = d.metadata ?? {};
  const s = d.status;
  return plain({
    apiVersion: d.apiVersion,
    kind: d.kind,
    metadata: {
      name: m.name,
      namespace: m.namespace,
      uid: m.uid,
      resourceVersion: m.resourceVersion,
      generation: m.generation,
      labels: m.labels,
      annotations: oursOnly(m.annotations),
      deletionTimestamp: m.deletionTimestamp,
    },
    spec: d.spec && {
      replicas: d.spec.replicas,
      strategy: d.spec.strategy,
      selector: d.spec.selector, // required by the type; small
      template: {
        spec: d.spec.template.spec && {
          containers: d.spec.template.spec.containers.map((c) => ({ name: c.name, env: c.env })),
        },
      },
    },
    status: s && {
      observedGeneration: s.observedGeneration,
      replicas: s.replicas,
      updatedReplicas: s.updatedReplicas,
      readyReplicas: s.readyReplicas,
      availableReplicas: s.availableReplicas,
    },
  });
}

/** The annotations the env step reads (the takes of a fight, the pooler route); kubectl's last-applied copy is large. */
function oursOnly(annotations: Record<string, string> | undefined): Record<string, string> | undefined {
  const kept = Object.entries(annotations ?? {}).filter(
    ([k]) => k === TAKES_ANNOTATION || k === POOLER_ROUTE_ANNOTATION,
  );
  return kept.length === 0 ? undefined : Object.fromEntries(kept);
}

/** An HPA's spec (maxReplicas and the Deployment it scales enter the budget); its status changes every few seconds. */
export function leanHpa(h: V2HorizontalPodAutoscaler): V2HorizontalPodAutoscaler {
  const m = h.metadata ?? {};
  return plain({
    apiVersion: h.apiVersion,
    kind: h.kind,
    metadata: { name: m.name, namespace: m.namespace, uid: m.uid, resourceVersion: m.resourceVersion },
    spec: h.spec,
  });
}

/**
 * Plain data, without the typed client's class instances and their undefined fields: the first
 * list comes through the typed client, later changes as plain JSON from the watch, and without
 * this the two never compare equal (each Deployment's first update would count as a change).
 */
export function plain<T>(obj: T): T {
  return JSON.parse(JSON.stringify(obj)) as T;
}
