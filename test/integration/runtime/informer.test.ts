import { CoreV1Api, type KubeConfig, type V1ConfigMap } from "@kubernetes/client-node";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { createNamespace, deleteNamespace, loadKubeConfig } from "../../harness/kube.js";
import { waitFor } from "../../harness/processes.js";
import { Controller } from "../../../src/runtime/controller.js";
import { objectKey } from "../../../src/kube/keys.js";
import type { ResilientInformer } from "../../../src/runtime/informer.js";
import { BlackHoleRelay, configMapInformer, createConfigMap, quietLogger } from "./support.js";

describe("ResilientInformer against a real kube-apiserver", () => {
  let kc: KubeConfig;
  let core: CoreV1Api;
  const namespaces: string[] = [];
  /** Informers and controllers to stop after the tests. */
  const informers: Array<{ stop(): Promise<void> }> = [];

  beforeAll(() => {
    kc = loadKubeConfig(inject("kubeconfigPath"));
    core = kc.makeApiClient(CoreV1Api);
  });

  afterAll(async () => {
    await Promise.all(informers.map((informer) => informer.stop()));
    await Promise.all(namespaces.map((ns) => deleteNamespace(kc, ns)));
  });

  async function freshNamespace(): Promise<string> {
    const ns = await createNamespace(kc, "informer");
    namespaces.push(ns);
    return ns;
  }

  it("lists existing objects, then sees adds, updates and deletes", async () => {
    const ns = await freshNamespace();
    await createConfigMap(kc, ns, "before-start", { v: "1" });
    const { informer, seen } = configMapInformer(kc, ns);
    informers.push(informer);
    informer.start();
    expect(await informer.waitForSync(30_000)).toBe(true);
    expect(seen.added).toEqual(["before-start"]);
    expect(informer.get(ns, "before-start")?.data).toEqual({ v: "1" });
    // Items of a typed list come without kind; the informer fills it in.
    expect(informer.get(ns, "before-start")?.kind).toBe("ConfigMap");

    await createConfigMap(kc, ns, "created", { v: "1" });
    await waitFor("the informer to see the add", () => seen.added.includes("created"));

    await core.patchNamespacedConfigMap({
      name: "created",
      namespace: ns,
      body: [{ op: "replace", path: "/data/v", value: "2" }],
    });
    await waitFor("the informer to see the update", () => informer.get(ns, "created")?.data?.v === "2");
    expect(seen.updated).toContain("created");

    await core.deleteNamespacedConfigMap({ name: "created", namespace: ns });
    await waitFor("the informer to see the delete", () => seen.deleted.includes("created"));
    expect(informer.get(ns, "created")).toBeUndefined();
    expect(informer.list().map((cm) => cm.metadata?.name)).toEqual(["before-start"]);

    // The label selector is applied to the list and the watch: kube-root-ca.crt never shows up.
    expect(seen.added).not.toContain("kube-root-ca.crt");
  });

  it("caches listed and watched objects through its transform", async () => {
    const ns = await freshNamespace();
    await createConfigMap(kc, ns, "listed", { v: "1" });
    const handed: Array<string | undefined> = [];
    const { informer } = configMapInformer(kc, ns, {
      transform: (cm) => ({ ...cm, metadata: { ...cm.metadata, managedFields: undefined } }),
      onAdd: (cm) => void handed.push(String(cm.metadata?.managedFields)),
    });
    informers.push(informer);
    informer.start();
    expect(await informer.waitForSync(30_000)).toBe(true);
    await createConfigMap(kc, ns, "watched", { v: "1" });
    await waitFor("the informer to see the add", () => informer.get(ns, "watched") !== undefined);
    // The API server does send managedFields; neither the cache nor the handlers see them.
    expect(
      (await core.readNamespacedConfigMap({ name: "watched", namespace: ns })).metadata?.managedFields?.length,
    ).toBeGreaterThan(0);
    expect(informer.get(ns, "listed")?.metadata?.managedFields).toBeUndefined();
    expect(informer.get(ns, "watched")?.metadata?.managedFields).toBeUndefined();
    expect(informer.get(ns, "watched")?.data).toEqual({ v: "1" });
    expect(handed).toEqual(["undefined", "undefined"]);
  });

  it("after a blind spot, relists and reports what changed meanwhile", async () => {
    const ns = await freshNamespace();
    await createConfigMap(kc, ns, "kept", { v: "1" });
    await createConfigMap(kc, ns, "changed", { v: "1" });
    await createConfigMap(kc, ns, "deleted", { v: "1" });
    const { relay, kubeConfig } = await BlackHoleRelay.start(kc);
    const { informer, seen } = configMapInformer(kubeConfig, ns, {
      watchdogMs: 2_000,
      listTimeoutMs: 1_500,
      backoff: { initialMs: 100, maxMs: 500 },
    });
    informers.push(informer, { stop: () => relay.close() });
    informer.start();
    expect(await informer.waitForSync(30_000)).toBe(true);
    const before = informer.stats();

    // The informer's line to the API server goes dead; the test still reaches it directly.
    relay.swallowEverything();
    await core.patchNamespacedConfigMap({
      name: "changed",
      namespace: ns,
      body: [{ op: "replace", path: "/data/v", value: "2" }],
    });
    await core.deleteNamespacedConfigMap({ name: "deleted", namespace: ns });
    await createConfigMap(kc, ns, "added");
    await waitFor("the watchdog to fire", () => informer.stats().watchdogTimeouts > before.watchdogTimeouts, {
      timeoutMs: 30_000,
    });
    // Nothing could reach the informer while blind.
    expect(informer.get(ns, "deleted")).toBeDefined();
    expect(informer.get(ns, "changed")?.data?.v).toBe("1");

    relay.restore();
    await waitFor("a relist", () => informer.stats().relists > before.relists, { timeoutMs: 30_000 });
    expect(seen.deleted).toEqual(["deleted"]);
    expect(seen.updated).toEqual(["changed"]);
    expect(seen.added).toContain("added");
    expect(informer.get(ns, "changed")?.data?.v).toBe("2");
    expect(
      informer
        .list()
        .map((cm) => cm.metadata?.name)
        .sort(),
    ).toEqual(["added", "changed", "kept"]);
    // The first list may come from the API server's cache; a relist must not go back in time.
    expect(seen.listedAt[0]).toBe("0");
    expect(seen.listedAt.length).toBeGreaterThan(1);
    expect(seen.listedAt.slice(1).every((rv) => rv === undefined)).toBe(true);
  });

  it("survives handlers that throw or reject, and keeps delivering", async () => {
    const ns = await freshNamespace();
    const delivered: string[] = [];
    const { informer } = configMapInformer(kc, ns, {
      onAdd: (cm) => {
        delivered.push(cm.metadata!.name!);
        if (cm.metadata!.name === "throws") throw new Error("handler bug");
      },
      onUpdate: async () => {
        throw new Error("async handler bug");
      },
    });
    informers.push(informer);
    informer.start();
    expect(await informer.waitForSync(30_000)).toBe(true);

    await createConfigMap(kc, ns, "throws");
    await core.patchNamespacedConfigMap({
      name: "throws",
      namespace: ns,
      body: [{ op: "add", path: "/data", value: { a: "b" } }],
    });
    await createConfigMap(kc, ns, "after");
    await waitFor("events after a throwing handler", () => delivered.includes("after"));
    expect(delivered).toEqual(["throws", "after"]);
    expect(informer.stats().restarts).toBe(0);
  });

  it("resyncs every cached object periodically", async () => {
    const ns = await freshNamespace();
    await createConfigMap(kc, ns, "one");
    await createConfigMap(kc, ns, "two");
    const resynced: string[] = [];
    const { informer } = configMapInformer(kc, ns, {
      resyncMs: 300,
      onResync: (cm) => void resynced.push(cm.metadata!.name!),
    });
    informers.push(informer);
    informer.start();
    await waitFor("two resync rounds", () => resynced.filter((name) => name === "one").length >= 2, {
      timeoutMs: 30_000,
    });
    expect(resynced).toContain("two");
  });

  it("feeds a controller that reconciles each key with the latest cached state", async () => {
    const ns = await freshNamespace();
    const reconciledValues = new Map<string, string | undefined>();
    let informer!: ResilientInformer<V1ConfigMap>;
    const controller = new Controller({
      name: "informer-it",
      workers: 2,
      logger: quietLogger,
      reconcile: async (key) => {
        reconciledValues.set(key, informer.getByKey(key)?.data?.v ?? "<gone>");
        return {};
      },
    });
    const enqueue = (cm: { metadata?: { name?: string; namespace?: string } }) => controller.enqueue(objectKey(cm));
    ({ informer } = configMapInformer(kc, ns, {
      onAdd: enqueue,
      onUpdate: (_old, cm) => enqueue(cm),
      onDelete: enqueue,
    }));
    informers.push(informer, controller);
    controller.start();
    informer.start();
    expect(await informer.waitForSync(30_000)).toBe(true);

    await createConfigMap(kc, ns, "policy", { v: "1" });
    for (const v of ["2", "3", "4"]) {
      await core.patchNamespacedConfigMap({
        name: "policy",
        namespace: ns,
        body: [{ op: "replace", path: "/data/v", value: v }],
      });
    }
    await waitFor("the last value to be reconciled", () => reconciledValues.get(`${ns}/policy`) === "4");
    await core.deleteNamespacedConfigMap({ name: "policy", namespace: ns });
    await waitFor("the delete to be reconciled", () => reconciledValues.get(`${ns}/policy`) === "<gone>");
  });
});
