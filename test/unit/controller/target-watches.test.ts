/**
 * The shared Deployment/HPA watches of a namespace against a fake API server on loopback that
 * serves one list and then the watch events the test sends (the integration tests run the same
 * code against a real kube-apiserver: env.test.ts, budget.test.ts).
 */
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import type { V1Deployment, V2HorizontalPodAutoscaler } from "@kubernetes/client-node";
import type { ConnectionReusingKubeConfig } from "../../../src/runtime/kube-config.js";
import { createLogger } from "../../../src/log.js";
import { leanDeployment, TargetWatches } from "../../../src/controller/target-watches.js";
import { TAKES_ANNOTATION } from "../../../src/controller/env-conflicts.js";
import { waitFor } from "../../harness/processes.js";
import { FakeApi } from "../support/fake-api.js";

const NS = "ns";
const DEPLOYMENTS = `/apis/apps/v1/namespaces/${NS}/deployments`;
const HPAS = `/apis/autoscaling/v2/namespaces/${NS}/horizontalpodautoscalers`;

function deployment(name: string, labels: Record<string, string>, resourceVersion = "1"): V1Deployment {
  return {
    apiVersion: "apps/v1",
    kind: "Deployment",
    metadata: {
      name,
      namespace: NS,
      labels,
      resourceVersion,
      generation: 1,
      annotations: { "kubectl.kubernetes.io/last-applied-configuration": "{}" },
      managedFields: [{ manager: "kubectl", operation: "Apply" }],
    },
    spec: {
      replicas: 2,
      selector: { matchLabels: { app: name } },
      template: {
        metadata: { labels: { app: name } },
        spec: {
          containers: [
            { name: "app", image: "app:1", env: [{ name: "A", value: "1" }], args: ["--serve"] },
            { name: "sidecar", image: "proxy:1" },
          ],
        },
      },
    },
    status: { observedGeneration: 1, replicas: 2, updatedReplicas: 2, availableReplicas: 2, readyReplicas: 2 },
  };
}

function hpa(name: string, target: string, maxReplicas: number): V2HorizontalPodAutoscaler {
  return {
    apiVersion: "autoscaling/v2",
    kind: "HorizontalPodAutoscaler",
    metadata: { name, namespace: NS, resourceVersion: "1" },
    spec: { scaleTargetRef: { apiVersion: "apps/v1", kind: "Deployment", name: target }, maxReplicas },
  };
}

describe("TargetWatches: one watch per namespace, answered by selector", () => {
  const api = new FakeApi();
  let kc: ConnectionReusingKubeConfig;
  let watches: TargetWatches;
  let enqueued: string[] = [];
  const watchers = { has: (path: string) => api.watching(path) };
  const send = (
    path: string,
    type: "ADDED" | "MODIFIED" | "DELETED",
    object: V1Deployment | V2HorizontalPodAutoscaler,
  ) => api.send(path, type, object);

  beforeAll(async () => {
    kc = await api.start();
  });

  afterAll(() => api.stop());

  beforeEach(() => {
    api.listed = {
      [DEPLOYMENTS]: [
        deployment("shop-api", { app: "shop", tier: "api" }),
        deployment("shop-web", { app: "shop", tier: "web" }),
        deployment("blog", { app: "blog", tier: "web" }),
        deployment("lone", {}),
      ],
      [HPAS]: [hpa("blog", "blog", 5)],
    };
    enqueued = [];
    watches = new TargetWatches(kc, (key) => enqueued.push(key), createLogger("fatal"));
  });

  afterEach(async () => {
    await watches.stopAll();
    api.endWatches();
  });

  const names = (ds: V1Deployment[] | undefined) => ds?.map((d) => d.metadata!.name!).sort();
  const labelsOf = async (name: string) =>
    (await watches.cachedTargets(`${NS}/x`, NS, ""))?.find((d) => d.metadata?.name === name)?.metadata?.labels;
  /** Both kinds listed (their onAdd enqueues done) and watching. */
  const synced = async () => {
    await watches.cachedTargets(`${NS}/x`, NS, "");
    await watches.cachedHpas(NS);
    await waitFor("the watches to be open", () => watchers.has(DEPLOYMENTS) && watchers.has(HPAS));
  };

  it("answers any selector of the namespace from one list and one watch of each kind", async () => {
    watches.ensure(`${NS}/shop`, NS, "app=shop");
    watches.ensure(`${NS}/web`, NS, "tier in (web),app!=shop");
    expect(names(await watches.cachedTargets(`${NS}/shop`, NS, "app=shop"))).toEqual(["shop-api", "shop-web"]);
    expect(names(await watches.cachedTargets(`${NS}/web`, NS, "tier in (web),app!=shop"))).toEqual(["blog"]);
    // A peer's selector (the budget reads it) and one without an equality to index on.
    expect(names(await watches.cachedTargets(`${NS}/other`, NS, "tier=api"))).toEqual(["shop-api"]);
    expect(names(await watches.cachedTargets(`${NS}/other`, NS, "!app"))).toEqual(["lone"]);
    expect((await watches.cachedHpas(NS))?.map((h) => h.spec?.maxReplicas)).toEqual([5]);
    // Not watched: the caller lists.
    expect(await watches.cachedTargets(`other/p`, "other", "app=shop")).toBeUndefined();
    await waitFor("the watches to be open", () => watchers.has(DEPLOYMENTS) && watchers.has(HPAS));
    const deploymentRequests = api.requests.filter((r) => r.path === DEPLOYMENTS);
    expect(deploymentRequests.map((r) => r.watch).sort()).toEqual([false, true]);
    expect(watches.namespaceCount).toBe(1);
  });

  it("enqueues only the policies whose selector matched the Deployment before or matches it after", async () => {
    watches.ensure(`${NS}/shop`, NS, "app=shop");
    watches.ensure(`${NS}/blog`, NS, "app=blog");
    watches.ensure(`${NS}/api`, NS, "tier=api");
    watches.ensure(`${NS}/no-tier`, NS, "!tier");
    await synced();
    enqueued = [];

    // shop-web moves from the shop to the blog.
    send(DEPLOYMENTS, "MODIFIED", deployment("shop-web", { app: "blog", tier: "web" }, "2"));
    await waitFor("the relabel to be handled", async () => (await labelsOf("shop-web"))?.app === "blog");
    expect(enqueued.sort()).toEqual([`${NS}/blog`, `${NS}/shop`]);
    expect(names(await watches.cachedTargets(`${NS}/shop`, NS, "app=shop"))).toEqual(["shop-api"]);
    expect(names(await watches.cachedTargets(`${NS}/blog`, NS, "app=blog"))).toEqual(["blog", "shop-web"]);

    enqueued = [];
    send(DEPLOYMENTS, "ADDED", deployment("new-api", { app: "other", tier: "api" }, "3"));
    send(DEPLOYMENTS, "DELETED", deployment("lone", {}, "4"));
    await waitFor("the add and the delete to be handled", async () => {
      const all = names(await watches.cachedTargets(`${NS}/x`, NS, ""));
      return all?.includes("new-api") === true && !all.includes("lone");
    });
    expect(enqueued.sort()).toEqual([`${NS}/api`, `${NS}/no-tier`]);
  });

  it("ignores an update that changes nothing it keeps, and brings an HPA's change to the policies of its Deployment", async () => {
    watches.ensure(`${NS}/shop`, NS, "app=shop");
    watches.ensure(`${NS}/blog`, NS, "app=blog");
    await synced();
    enqueued = [];

    // Only managedFields and an annotation differ: nothing the reconciler reads.
    const touched = deployment("shop-api", { app: "shop", tier: "api" }, "5");
    touched.metadata!.annotations = { note: "changed" };
    send(DEPLOYMENTS, "MODIFIED", touched);
    send(HPAS, "MODIFIED", hpa("blog", "blog", 8));
    await waitFor(
      "the HPA change to be handled",
      async () => (await watches.cachedHpas(NS))?.[0]?.spec?.maxReplicas === 8,
    );
    // The Deployment's event came first on its own watch: handled by now if the HPA's was.
    await waitFor(
      "the Deployment's touch to be cached",
      async () => (await watches.cachedTargets(`${NS}/x`, NS, "tier=api"))?.[0]?.metadata?.resourceVersion === "5",
    );
    expect(enqueued).toEqual([`${NS}/blog`]);
  });

  it("versions what the budget reads: labels, replicas, strategy, adds, deletes and HPAs move it; a rollout's status and the env do not", async () => {
    const shop = [{ namespace: NS, selector: "app=shop" }];
    expect(watches.budgetInputsVersion(shop)).toBeUndefined(); // not watched yet
    watches.ensure(`${NS}/shop`, NS, "app=shop");
    await synced();
    const v0 = watches.budgetInputsVersion(shop);
    expect(v0).toBeDefined();
    expect(watches.budgetInputsVersion([...shop, { namespace: "other", selector: "app=shop" }])).toBeUndefined();
    expect(watches.budgetInputsVersion([{ namespace: NS, selector: "app in (" }])).toBeUndefined();

    let rv = 10;
    /** Sends the change, waits until the cache holds it, and returns the version then. */
    const versionAfter = async (type: "ADDED" | "MODIFIED" | "DELETED", d: V1Deployment) => {
      d.metadata!.resourceVersion = String(++rv);
      send(DEPLOYMENTS, type, d);
      await waitFor(`the ${type} of ${d.metadata!.name} to be cached`, async () => {
        const cached = (await watches.cachedTargets(`${NS}/x`, NS, ""))?.find(
          (x) => x.metadata?.name === d.metadata!.name,
        );
        return type === "DELETED" ? cached === undefined : cached?.metadata?.resourceVersion === String(rv);
      });
      return watches.budgetInputsVersion(shop);
    };

    // A rollout's progress and our own env: the budget reads neither.
    const rolled = deployment("shop-api", { app: "shop", tier: "api" });
    rolled.status = { ...rolled.status, updatedReplicas: 1, observedGeneration: 2 };
    rolled.spec!.template.spec!.containers[0]!.env = [{ name: "DB_POSTGRES_MAX_CONN", value: "3" }];
    expect(await versionAfter("MODIFIED", rolled)).toBe(v0);

    const scaled = deployment("shop-api", { app: "shop", tier: "api" });
    scaled.spec!.replicas = 5;
    const v1 = await versionAfter("MODIFIED", scaled);
    expect(v1).not.toBe(v0);
    const surge = deployment("shop-api", { app: "shop", tier: "api" });
    surge.spec!.replicas = 5;
    surge.spec!.strategy = { type: "RollingUpdate", rollingUpdate: { maxSurge: 3 } };
    const v2 = await versionAfter("MODIFIED", surge);
    expect(v2).not.toBe(v1);
    const v3 = await versionAfter("MODIFIED", deployment("blog", { app: "shop" }));
    expect(v3).not.toBe(v2);
    const v4 = await versionAfter("ADDED", deployment("extra", { app: "shop" }));
    expect(v4).not.toBe(v3);
    const v5 = await versionAfter("DELETED", deployment("extra", { app: "shop" }));
    expect(v5).not.toBe(v4);

    send(HPAS, "MODIFIED", {
      ...hpa("blog", "blog", 9),
      metadata: { name: "blog", namespace: NS, resourceVersion: "99" },
    });
    await waitFor("the HPA change", async () => (await watches.cachedHpas(NS))?.[0]?.spec?.maxReplicas === 9);
    expect(watches.budgetInputsVersion(shop)).not.toBe(v5);
  });

  it("lists a large namespace in pages, the continued pages without a resourceVersion", async () => {
    api.listed[DEPLOYMENTS] = Array.from({ length: 1200 }, (_, i) => deployment(`d${i}`, { app: i % 2 ? "a" : "b" }));
    watches.ensure(`${NS}/a`, NS, "app=a");
    expect((await watches.cachedTargets(`${NS}/a`, NS, "app=a"))?.length).toBe(600);
    const lists = api.requests.filter((r) => r.path === DEPLOYMENTS && !r.watch);
    expect(lists.map((r) => [r.query.get("continue"), r.query.get("resourceVersion")])).toEqual([
      [null, "0"],
      ["500", null],
      ["1000", null],
    ]);
  });

  it("stops the namespace's watches when its last policy goes", async () => {
    watches.ensure(`${NS}/shop`, NS, "app=shop");
    await watches.cachedTargets(`${NS}/shop`, NS, "app=shop");
    watches.ensure(`${NS}/shop`, NS, null);
    expect(watches.namespaceCount).toBe(0);
    expect(await watches.cachedTargets(`${NS}/shop`, NS, "app=shop")).toBeUndefined();
  });
});

describe("leanDeployment", () => {
  it("keeps what the budget, the env injection and the rollout read, and drops the rest", () => {
    const lean = leanDeployment(deployment("api", { app: "shop" }));
    expect(lean.metadata).toEqual({
      name: "api",
      namespace: NS,
      resourceVersion: "1",
      generation: 1,
      labels: { app: "shop" },
    });
    expect(lean.spec?.replicas).toBe(2);
    expect(lean.spec?.template.spec?.containers).toEqual([
      { name: "app", env: [{ name: "A", value: "1" }] },
      { name: "sidecar" },
    ]);
    expect(lean.status).toEqual({
      observedGeneration: 1,
      replicas: 2,
      updatedReplicas: 2,
      readyReplicas: 2,
      availableReplicas: 2,
    });
  });

  it("keeps the record of a fight over the env, and no other annotation", () => {
    const d = deployment("api", { app: "shop" });
    d.metadata!.annotations = {
      [TAKES_ANNOTATION]: '{"takes":2}',
      "kubectl.kubernetes.io/last-applied-configuration": "{}",
    };
    expect(leanDeployment(d).metadata?.annotations).toEqual({ [TAKES_ANNOTATION]: '{"takes":2}' });
  });
});
