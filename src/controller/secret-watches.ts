/**
 * The Secrets the policies name, watched one by one: a change enqueues the policies that
 * reference the Secret, and the reconciler reads it from here instead of a GET every pass.
 *
 * Why: a GET per policy per pass was most of the steady state's API reads (1,124 in 10 minutes,
 * docs/benchmarks.md), and after a password rotation the operator kept its old login until the
 * next periodic pass (up to 30 s at the default refresh; issue 13). With the watch, the new
 * password reaches a reconcile within the watch's latency; the new credentials make a new
 * PostgreSQL pool and the old one is closed (PostgresPools keys its pools by a password digest).
 *
 * Why one watch per Secret, field-selected by name, and not a watch of every Secret of the
 * namespace: the operator then holds in memory only the Secrets it was told about, never the
 * namespace's other credentials, TLS keys or Helm release payloads (which can be megabytes).
 * RBAC cannot express "list/watch only with a metadata.name field selector" for names it does
 * not know in advance, so the chart grants list/watch on secrets in the watched scope, or only
 * on the names listed in rbac.secretNames (the API server authorizes a list/watch that selects
 * metadata.name against resourceNames).
 *
 * Only `data` and the identity of a Secret are cached (the last-applied-configuration annotation
 * kubectl writes repeats the whole Secret). Nothing read here is ever logged.
 */
import { CoreV1Api, type KubeConfig, type V1Secret } from "@kubernetes/client-node";
import { isDeepStrictEqual } from "node:util";
import type { Logger } from "../log.js";
import { ResilientInformer } from "../runtime/informer.js";
import { plain } from "./target-watches.js";
import { keyOf } from "../kube/keys.js";
import { abortableRequest } from "../runtime/request-options.js";

/** How long a reader waits for a Secret's watch that is still listing before reading it with a GET. */
const SYNC_WAIT_MS = 3_000;

export interface SecretRef {
  namespace: string;
  name: string;
}

interface WatchedSecret {
  informer: ResilientInformer<V1Secret>;
  policies: Set<string>;
}

export class SecretWatches {
  private readonly watches = new Map<string, WatchedSecret>();
  private readonly byPolicy = new Map<string, Set<string>>();
  private readonly core: CoreV1Api;

  constructor(
    private readonly kc: KubeConfig,
    private readonly enqueue: (policyKey: string) => void,
    private readonly log: Logger,
  ) {
    this.core = kc.makeApiClient(CoreV1Api);
  }

  /** Makes the policy's references exactly `refs`: new ones watched, Secrets no policy names any more unwatched. */
  ensure(policyKey: string, refs: readonly SecretRef[]): void {
    const wanted = new Set(refs.map((r) => keyOf(r.namespace, r.name)));
    const current = this.byPolicy.get(policyKey) ?? new Set<string>();
    for (const key of current) if (!wanted.has(key)) this.release(policyKey, key);
    for (const ref of refs) {
      const key = keyOf(ref.namespace, ref.name);
      const watched = this.watches.get(key) ?? this.watch(ref);
      watched.policies.add(policyKey);
    }
    if (wanted.size > 0) this.byPolicy.set(policyKey, wanted);
    else this.byPolicy.delete(policyKey);
  }

  /**
   * The Secret as its watch holds it: null when the watch has synced and there is no such
   * Secret; undefined when it is not watched or its watch has not synced in time (the caller
   * then reads it with a GET, whose error says what is wrong, e.g. a missing permission).
   */
  async cached(namespace: string, name: string): Promise<V1Secret | null | undefined> {
    const watched = this.watches.get(keyOf(namespace, name));
    // A watch whose list failed (say, RBAC without list/watch on secrets) is not waited for:
    // every pass would otherwise wait SYNC_WAIT_MS before its GET.
    if (!watched || !(await watched.informer.waitForSyncUnlessFailing(SYNC_WAIT_MS))) return undefined;
    return watched.informer.get(namespace, name) ?? null;
  }

  /** The Secrets watched, for tests and diagnostics. */
  get size(): number {
    return this.watches.size;
  }

  async stopAll(): Promise<void> {
    const informers = [...this.watches.values()].map((w) => w.informer);
    this.watches.clear();
    this.byPolicy.clear();
    await Promise.all(informers.map((i) => i.stop()));
  }

  private release(policyKey: string, secretKey: string): void {
    const watched = this.watches.get(secretKey);
    if (!watched) return;
    watched.policies.delete(policyKey);
    if (watched.policies.size > 0) return;
    this.watches.delete(secretKey);
    void watched.informer.stop();
  }

  private watch({ namespace, name }: SecretRef): WatchedSecret {
    const policies = new Set<string>();
    const enqueueReferencing = () => {
      for (const key of policies) this.enqueue(key);
    };
    const fieldSelector = `metadata.name=${name}`;
    const informer = new ResilientInformer<V1Secret>(
      this.kc,
      `/api/v1/namespaces/${namespace}/secrets`,
      ({ resourceVersion, signal }) =>
        this.core.listNamespacedSecret({ namespace, fieldSelector, resourceVersion }, abortableRequest(signal)),
      {
        name: `secret(${namespace}/${name})`,
        fieldSelector,
        transform: leanSecret,
        onAdd: enqueueReferencing,
        onUpdate: (before, after) => {
          if (!isDeepStrictEqual(before.data, after.data)) enqueueReferencing();
        },
        onDelete: enqueueReferencing,
        logger: this.log,
      },
    );
    const watched = { informer, policies };
    this.watches.set(keyOf(namespace, name), watched);
    informer.start();
    return watched;
  }
}

/** A Secret's identity and data; not its annotations (kubectl's last-applied copy repeats the data) nor managedFields. */
export function leanSecret(s: V1Secret): V1Secret {
  const m = s.metadata ?? {};
  return plain({
    apiVersion: s.apiVersion,
    kind: s.kind,
    metadata: { name: m.name, namespace: m.namespace, uid: m.uid, resourceVersion: m.resourceVersion },
    data: s.data,
  });
}
