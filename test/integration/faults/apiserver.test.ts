/**
 * Item 3: the kube-apiserver the operator talks to dies, or hangs.
 *
 * What it breaks: 3a kills the kube-apiserver with SIGKILL and starts it again on the same etcd;
 * 3b freezes it with SIGSTOP for longer than the informer's watch watchdog (90 s), then thaws it.
 * Meanwhile a second kube-apiserver on the same etcd (the other member of an HA pair, as far as
 * a client is concerned) changes the PoolPolicy and adds a Deployment: changes the operator
 * cannot have seen when they were made.
 * What it promises: the operator process survives (same process, no restart), its informers
 * recover (watch restarts; after the freeze a watchdog relist), and the changes made meanwhile
 * are applied once its kube-apiserver is back. Retries while it is down stay bounded.
 *
 * runtime/informer-recovery.test.ts proves the same of one informer in isolation; this is the
 * whole operator, end to end.
 */
import { afterAll, beforeAll, describe, expect } from "vitest";
import { AppsV1Api, CustomObjectsApi, PatchStrategy, setHeaderOptions, type KubeConfig } from "@kubernetes/client-node";
import { FaultCluster, SideApiServer, metricValue, operatorCounters, sleep, timeUntil } from "../../harness/faults.js";
import { appDeployment } from "../../harness/manifests.js";
import type { OperatorProcess } from "../../harness/operator.js";
import { waitFor } from "../../harness/processes.js";
import { Scenario } from "../operator/scenario.js";
import { faultSuite } from "./support.js";

/** The informer's default watchdog (src/runtime/informer.ts): a watch silent this long is presumed dead. */
const WATCHDOG_S = 90;
/** How long the kube-apiserver stays dead in 3a. */
const DOWN_S = 10;
const api = { group: "pooling.dbops.io", version: "v1alpha1", plural: "poolpolicies" };

let cluster: FaultCluster | undefined;
let s: Scenario;
let operator: OperatorProcess;
let side: SideApiServer;
let sideKc: KubeConfig;
const suite = faultSuite("test/integration/faults/apiserver.test.ts", () => cluster);

beforeAll(async () => {
  cluster = await FaultCluster.start();
  s = await Scenario.create(cluster.kc, { prefix: "apisrv" });
  suite.secrets.add(s.server.password);
  await s.deployment("api", { labels: { "app.kubernetes.io/part-of": "shop" }, replicas: 1 });
  operator = cluster.operator({ name: "apisrv-op" });
  await operator.start();
  await s.applyPolicy("p", s.policySpec());
  await s.waitForCondition("p", "Ready", { status: "True" }, 120_000);
  side = new SideApiServer(cluster.controlPlane);
  sideKc = await side.start();
  // Custom resources are served once the new apiserver's CRD informer has synced.
  await waitFor(
    "the side kube-apiserver to serve PoolPolicies",
    async () => {
      await sideKc
        .makeApiClient(CustomObjectsApi)
        .getNamespacedCustomObject({ ...api, namespace: s.namespace, name: "p" });
      return true;
    },
    { timeoutMs: 60_000, intervalMs: 250 },
  );
}, 240_000);

afterAll(async () => {
  cluster?.controlPlane.freezeApiServer(false);
  await side?.stop();
  await s?.cleanup();
  await cluster?.stop();
});

/** Changes made through the other kube-apiserver, while the operator's one is away. */
async function changeMeanwhile(maxSize: number, newDeployment?: string): Promise<void> {
  await sideKc
    .makeApiClient(CustomObjectsApi)
    .patchNamespacedCustomObject(
      { ...api, namespace: s.namespace, name: "p", body: { spec: { pool: { maxSize } } } },
      setHeaderOptions("Content-Type", PatchStrategy.MergePatch),
    );
  if (newDeployment) {
    await sideKc.makeApiClient(AppsV1Api).createNamespacedDeployment({
      namespace: s.namespace,
      body: appDeployment(s.namespace, newDeployment, { labels: { "app.kubernetes.io/part-of": "shop" }, replicas: 1 }),
    });
  }
}

const envIs = async (deployment: string, max: number) =>
  (await s.envOf(deployment).catch(() => ({}) as Record<string, string>)).DB_POSTGRES_MAX_CONN === String(max);

const alive = () =>
  fetch(`http://127.0.0.1:${operator.httpPort}/healthz`).then(
    (r) => r.ok,
    () => false,
  );

describe("the operator's kube-apiserver dies or hangs", () => {
  suite.scenario(
    "3a",
    async (m) => {
      const before = await operatorCounters(operator);
      await cluster!.controlPlane.stopApiServer("SIGKILL");
      let whileDown: typeof before;
      try {
        await changeMeanwhile(10, "late");
        await sleep(DOWN_S * 1000); // down for a while: the informers and the reconciles retry
        expect(await alive(), "the operator answers /healthz while its kube-apiserver is down").toBe(true);
        whileDown = await operatorCounters(operator);
      } finally {
        await cluster!.controlPlane.startApiServer();
      }
      const appliedMs = await timeUntil(
        "the changes made meanwhile to be applied",
        async () => (await envIs("api", 10)) && (await envIs("late", 10)),
        120_000,
        250,
      );
      const after = await operatorCounters(operator);
      m.note("down", `${DOWN_S} s`);
      m.note("applied after restart", `${(appliedMs / 1000).toFixed(1)} s`);
      m.note(
        "while down",
        `${whileDown.reconcileErrors - before.reconcileErrors} failed reconciles, ${whileDown.watchRestarts - before.watchRestarts} watch restarts`,
      );
      expect(after.processStart, "same operator process").toBe(before.processStart);
      expect(operator.starts).toBe(1);
      expect(after.watchRestarts).toBeGreaterThan(before.watchRestarts);
      // Bounded: per-key backoff from 5 ms doubling, not a retry per millisecond.
      expect(whileDown.reconcileErrors - before.reconcileErrors).toBeLessThanOrEqual(60);
      await s.waitForCondition("p", "PoolEnvInjected", { status: "True" }, 60_000);
      const status = await s.status("p");
      expect(status.targets?.map((t) => t.name).sort()).toEqual(["api", "late"]);
      await s.waitForCondition("p", "Ready", { status: "True" }, 60_000);
    },
    240_000,
  );

  suite.scenario(
    "3b",
    async (m) => {
      const before = await operatorCounters(operator);
      const relistsBefore = metricValue(await operator.metrics(), "informer_relists_total", {
        resource: "poolpolicies",
      });
      cluster!.controlPlane.freezeApiServer(true);
      try {
        await changeMeanwhile(12);
        await sleep((WATCHDOG_S + 5) * 1000);
        expect(await alive(), "the operator answers /healthz while its kube-apiserver hangs").toBe(true);
      } finally {
        cluster!.controlPlane.freezeApiServer(false);
      }
      const appliedMs = await timeUntil(
        "the change made meanwhile to be applied",
        async () => (await envIs("api", 12)) && (await envIs("late", 12)),
        120_000,
        250,
      );
      const text = await operator.metrics();
      const relists = metricValue(text, "informer_relists_total", { resource: "poolpolicies" }) - relistsBefore;
      const after = await operatorCounters(operator);
      m.note("frozen", `${WATCHDOG_S + 5} s`);
      m.note("applied after thaw", `${(appliedMs / 1000).toFixed(1)} s`);
      m.note("watchdog relists (poolpolicies)", relists);
      expect(after.processStart, "same operator process").toBe(before.processStart);
      expect(relists, "the watchdog abandoned the silent watch and relisted").toBeGreaterThanOrEqual(1);
      await s.waitForCondition("p", "Ready", { status: "True" }, 60_000);
      expect((await s.readPolicy("p"))?.status?.observedGeneration).toBe(
        (await s.readPolicy("p"))?.metadata.generation,
      );
    },
    240_000,
  );
});
