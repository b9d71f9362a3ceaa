/**
 * The cluster side of the benchmarks, on top of test/harness: a fresh control plane per
 * scenario, bulk creation of Deployments, PoolPolicy helpers, a bench-side watch that
 * timestamps what it sees, and the kube-apiserver's own request counters.
 */
import {
  AppsV1Api,
  CoreV1Api,
  CustomObjectsApi,
  PatchStrategy,
  setHeaderOptions,
  Watch,
  type KubeConfig,
  type KubernetesObject,
  type V1Deployment,
} from "@kubernetes/client-node";
import { ControlPlane } from "../../test/harness/controlplane.js";
import { installPoolPolicyCrd } from "../../test/harness/crd.js";
import { appDeployment } from "../../test/harness/manifests.js";
import { waitFor } from "../../test/harness/processes.js";
import type { PoolPolicy } from "../../src/api/schema.js";
import { parseProm, type Sample } from "./prom.js";
import { mapLimit, retry, sleep } from "./stats.js";

export const API = { group: "pooling.dbops.io", version: "v1alpha1", plural: "poolpolicies" } as const;

export interface Cluster {
  cp: ControlPlane;
  kc: KubeConfig;
  apps: AppsV1Api;
  core: CoreV1Api;
  custom: CustomObjectsApi;
  stop(): Promise<void>;
}

/**
 * A fresh control plane. The harness's kube-controller-manager runs with the default client
 * rate limit (20 requests/s, burst 30): the Deployment controller then settles about 5
 * Deployments a second, so 5,000 would take a quarter of an hour to get their ReplicaSets.
 * The benchmarks start it with a higher limit (`controllerManagerQps`; 0 keeps the harness's
 * default). The operator has no client-side limit.
 */
export async function startCluster({
  controllerManagerQps = 300,
}: {
  controllerManagerQps?: number;
} = {}): Promise<Cluster> {
  const cp = new ControlPlane({ controllerManagerQps: controllerManagerQps > 0 ? controllerManagerQps : undefined });
  try {
    await cp.start();
  } catch (err) {
    await cp.stop();
    throw err;
  }
  const kc = cp.kubeConfig();
  await installPoolPolicyCrd(kc);
  return {
    cp,
    kc,
    apps: kc.makeApiClient(AppsV1Api),
    core: kc.makeApiClient(CoreV1Api),
    custom: kc.makeApiClient(CustomObjectsApi),
    stop: () => cp.stop(),
  };
}

export async function createNamespace(c: Cluster, name: string): Promise<string> {
  await retry(() => c.core.createNamespace({ body: { metadata: { name } } }));
  return name;
}

export async function createSecret(
  c: Cluster,
  namespace: string,
  name: string,
  data: Record<string, string>,
): Promise<void> {
  await retry(() => c.core.createNamespacedSecret({ namespace, body: { metadata: { name }, stringData: data } }));
}

/**
 * Creates Deployments `${prefix}-${i}` (i from `from` to `to - 1`), 16 requests in flight.
 * `labels(i)` adds labels; every Deployment has one container "app".
 */
export async function createDeployments(
  c: Cluster,
  namespace: string,
  {
    prefix,
    from = 0,
    to,
    replicas,
    labels = () => ({}),
  }: { prefix: string; from?: number; to: number; replicas: number; labels?: (i: number) => Record<string, string> },
): Promise<string[]> {
  const indexes = Array.from({ length: to - from }, (_, k) => from + k);
  return mapLimit(indexes, 16, async (i) => {
    const name = `${prefix}-${i}`;
    await retry(
      () =>
        c.apps.createNamespacedDeployment({
          namespace,
          body: appDeployment(namespace, name, { labels: labels(i), replicas }),
        }),
      8,
    );
    return name;
  });
}

/** Waits until the Deployment controller has caught up with every Deployment of the namespace (status written). */
export async function waitDeploymentsSettled(
  c: Cluster,
  namespace: string,
  expected: number,
  timeoutMs = 600_000,
): Promise<void> {
  let last = "";
  await waitFor(
    `${expected} Deployments in ${namespace} observed by the Deployment controller`,
    async () => {
      const list = await c.apps.listNamespacedDeployment({ namespace });
      const settled = list.items.filter(
        (d) => (d.status?.observedGeneration ?? 0) >= (d.metadata?.generation ?? 1),
      ).length;
      last = `${settled}/${list.items.length}`;
      return list.items.length >= expected && settled === list.items.length;
    },
    { timeoutMs, intervalMs: 1000 },
  ).catch((err: Error) => {
    throw new Error(`${err.message} (last: ${last})`);
  });
}

export function policyBody(name: string, spec: Record<string, unknown>): Record<string, unknown> {
  return { apiVersion: `${API.group}/${API.version}`, kind: "PoolPolicy", metadata: { name }, spec };
}

export async function createPolicy(
  c: Cluster,
  namespace: string,
  name: string,
  spec: Record<string, unknown>,
): Promise<void> {
  await c.custom.createNamespacedCustomObject({ ...API, namespace, body: policyBody(name, spec) });
}

export async function patchPolicy(c: Cluster, namespace: string, name: string, patch: object): Promise<PoolPolicy> {
  return (await c.custom.patchNamespacedCustomObject(
    { ...API, namespace, name, body: patch },
    setHeaderOptions("Content-Type", PatchStrategy.MergePatch),
  )) as PoolPolicy;
}

export async function listPolicies(c: Cluster, namespace?: string): Promise<PoolPolicy[]> {
  const list = (
    namespace
      ? await c.custom.listNamespacedCustomObject({ ...API, namespace })
      : await c.custom.listClusterCustomObject({ ...API })
  ) as { items: PoolPolicy[] };
  return list.items;
}

export function conditionOf(p: PoolPolicy, type: string) {
  const c = p.status?.conditions?.find((x) => x.type === type);
  return c && c.observedGeneration === p.metadata.generation ? c : undefined;
}

/** Waits until every listed policy is Ready=True for its current generation. */
export async function waitPoliciesReady(
  c: Cluster,
  namespace: string | undefined,
  expected: number,
  timeoutMs = 300_000,
): Promise<PoolPolicy[]> {
  let policies: PoolPolicy[] = [];
  let notReady = "";
  await waitFor(
    `${expected} PoolPolicies Ready`,
    async () => {
      policies = await listPolicies(c, namespace);
      const waiting = policies.filter((p) => conditionOf(p, "Ready")?.status !== "True");
      notReady = waiting
        .slice(0, 3)
        .map(
          (p) =>
            `${p.metadata.name}: ${JSON.stringify(p.status?.conditions?.filter((x) => x.status !== "True").map((x) => `${x.type}=${x.status} ${x.reason} ${x.message}`))}`,
        )
        .join("; ");
      return policies.length >= expected && waiting.length === 0;
    },
    { timeoutMs, intervalMs: 1000 },
  ).catch((err: Error) => {
    throw new Error(`${err.message}; not ready: ${notReady}`);
  });
  return policies;
}

/** A policy's removal without the operator's help: drop the finalizer, then delete. */
export async function forceDeletePolicy(c: Cluster, namespace: string, name: string): Promise<void> {
  await patchPolicy(c, namespace, name, { metadata: { finalizers: null } }).catch(() => undefined);
  await c.custom.deleteNamespacedCustomObject({ ...API, namespace, name }).catch(() => undefined);
}

/**
 * A list-then-watch of one collection in the bench process, calling `onObject` with the time
 * (performance.now()) each version was seen. Used to time "every Deployment carries the env"
 * the same way for the operator and for the baseline client.
 */
export class BenchWatch<T extends KubernetesObject> {
  private controller?: AbortController;
  private resourceVersion?: string;
  private stopped = false;

  constructor(
    private readonly kc: KubeConfig,
    private readonly path: string,
    private readonly list: () => Promise<{ items: T[]; metadata?: { resourceVersion?: string } }>,
    private readonly onObject: (type: string, obj: T, at: number) => void,
  ) {}

  async start(): Promise<void> {
    const list = await this.list();
    const at = performance.now();
    for (const item of list.items) this.onObject("LISTED", item, at);
    this.resourceVersion = list.metadata?.resourceVersion;
    await this.connect();
  }

  private async connect(): Promise<void> {
    if (this.stopped) return;
    this.controller = await new Watch(this.kc).watch(
      this.path,
      { resourceVersion: this.resourceVersion, allowWatchBookmarks: true, timeoutSeconds: 3600 },
      (type, obj: T) => {
        const at = performance.now();
        const rv = obj?.metadata?.resourceVersion;
        if (rv) this.resourceVersion = rv;
        if (type !== "BOOKMARK" && type !== "ERROR") this.onObject(type, obj, at);
      },
      () => {
        if (!this.stopped) void sleep(100).then(() => this.connect().catch(() => undefined));
      },
    );
  }

  stop(): void {
    this.stopped = true;
    this.controller?.abort();
  }
}

export function deploymentWatch(
  c: Cluster,
  namespace: string,
  onObject: (type: string, d: V1Deployment, at: number) => void,
): BenchWatch<V1Deployment> {
  return new BenchWatch<V1Deployment>(
    c.kc,
    `/apis/apps/v1/namespaces/${namespace}/deployments`,
    () => c.apps.listNamespacedDeployment({ namespace }),
    onObject,
  );
}

export function policyWatch(
  c: Cluster,
  namespace: string,
  onObject: (type: string, p: PoolPolicy, at: number) => void,
): BenchWatch<PoolPolicy> {
  return new BenchWatch<PoolPolicy>(
    c.kc,
    `/apis/${API.group}/${API.version}/namespaces/${namespace}/${API.plural}`,
    async () => (await c.custom.listNamespacedCustomObject({ ...API, namespace })) as { items: PoolPolicy[] },
    onObject,
  );
}

/** The kube-apiserver's own /metrics, read with the admin token. */
export async function apiserverMetrics(c: Cluster): Promise<Sample[]> {
  return parseProm(await c.cp.adminGet("/metrics"));
}

const WRITE_VERBS = new Set(["POST", "PUT", "PATCH", "APPLY", "DELETE", "CREATE", "UPDATE", "DELETECOLLECTION"]);

/**
 * Write requests the kube-apiserver served between two scrapes, by resource[/subresource],
 * for every client (the metric has no user label): the server-side cross-check of the
 * operator's own count.
 */
export function apiserverWrites(before: readonly Sample[], after: readonly Sample[]): Record<string, number> {
  const key = (s: Sample) =>
    `${s.labels.verb} ${s.labels.resource}${s.labels.subresource ? `/${s.labels.subresource}` : ""}`;
  const prior = new Map<string, number>();
  for (const s of before)
    if (s.name === "apiserver_request_total" && WRITE_VERBS.has(s.labels.verb ?? ""))
      prior.set(key(s), (prior.get(key(s)) ?? 0) + s.value);
  const out: Record<string, number> = {};
  for (const s of after) {
    if (s.name !== "apiserver_request_total" || !WRITE_VERBS.has(s.labels.verb ?? "")) continue;
    out[key(s)] = (out[key(s)] ?? 0) + s.value;
  }
  for (const [k, v] of Object.entries(out)) {
    const d = v - (prior.get(k) ?? 0);
    if (d === 0) delete out[k];
    else out[k] = d;
  }
  return out;
}
