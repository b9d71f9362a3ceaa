/**
 * The informer against a kube-apiserver that goes away or hangs. These tests stop and freeze
 * the API server, so they run on a control plane of their own, not the shared one.
 */
import { CoreV1Api, type KubeConfig } from "@kubernetes/client-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ControlPlane } from "../../harness/controlplane.js";
import { createNamespace } from "../../harness/kube.js";
import { waitFor } from "../../harness/processes.js";
import { requestTimeout } from "../../../src/runtime/request-options.js";
import { configMapInformer, createConfigMap } from "./support.js";

describe("ResilientInformer recovery", () => {
  const controlPlane = new ControlPlane();
  let kc: KubeConfig;
  const informers: Array<{ stop(): Promise<void> }> = [];

  beforeAll(async () => {
    await controlPlane.start();
    kc = controlPlane.kubeConfig();
  });

  afterAll(async () => {
    controlPlane.freezeApiServer(false);
    await Promise.all(informers.map((informer) => informer.stop()));
    await controlPlane.stop();
  });

  it("restarts while the kube-apiserver is down and sees changes once it is back", async () => {
    const ns = await createNamespace(kc, "recovery");
    await createConfigMap(kc, ns, "survivor");
    await createConfigMap(kc, ns, "doomed");
    const { informer, seen } = configMapInformer(kc, ns, { backoff: { initialMs: 100, maxMs: 1_000 } });
    informers.push(informer);
    informer.start();
    expect(await informer.waitForSync(30_000)).toBe(true);
    const restartsBefore = informer.stats().restarts;

    await controlPlane.stopApiServer();
    await waitFor("the informer to keep retrying", () => informer.stats().restarts >= restartsBefore + 3, {
      timeoutMs: 30_000,
    });
    await controlPlane.startApiServer();

    const core = kc.makeApiClient(CoreV1Api);
    await createConfigMap(kc, ns, "after-restart", { v: "1" });
    await core.deleteNamespacedConfigMap({ name: "doomed", namespace: ns });
    await waitFor("the informer to see the new object", () => informer.get(ns, "after-restart") !== undefined, {
      timeoutMs: 60_000,
    });
    await waitFor("the informer to see the deletion", () => informer.get(ns, "doomed") === undefined, {
      timeoutMs: 60_000,
    });
    expect(seen.added).toContain("after-restart");
    expect(seen.deleted).toContain("doomed");
    expect(informer.get(ns, "survivor")).toBeDefined();
  });

  it("relists when the watch goes silent (frozen kube-apiserver) and catches up after", async () => {
    const ns = await createNamespace(kc, "watchdog");
    await createConfigMap(kc, ns, "heartbeat", { beat: "0" });
    const { informer } = configMapInformer(kc, ns, {
      watchdogMs: 3_000,
      listTimeoutMs: 2_000,
      backoff: { initialMs: 100, maxMs: 1_000 },
    });
    informers.push(informer);
    informer.start();
    expect(await informer.waitForSync(30_000)).toBe(true);

    // While changes flow, a 3 s watchdog never fires...
    const heartbeat = startHeartbeat(kc, ns, "heartbeat", 500);
    try {
      const before = informer.stats();
      await new Promise((resolve) => setTimeout(resolve, 5_000));
      expect(informer.stats().watchdogTimeouts).toBe(before.watchdogTimeouts);
      expect(informer.stats().events).toBeGreaterThan(before.events);

      // ...but when the API server hangs, nothing arrives and it does.
      controlPlane.freezeApiServer(true);
      try {
        await waitFor("the watchdog to fire", () => informer.stats().watchdogTimeouts > before.watchdogTimeouts, {
          timeoutMs: 30_000,
        });
        // Stay frozen past the watchdog: the relist that follows hits a hung server too.
        await new Promise((resolve) => setTimeout(resolve, 3_000));
      } finally {
        controlPlane.freezeApiServer(false);
      }
      await waitFor("a relist after thawing", () => informer.stats().relists > before.relists, { timeoutMs: 60_000 });
    } finally {
      await heartbeat.stop();
    }

    await createConfigMap(kc, ns, "after-thaw");
    await waitFor(
      "the informer to see a change made after thawing",
      () => informer.get(ns, "after-thaw") !== undefined,
      {
        timeoutMs: 60_000,
      },
    );
  });
});

/** Updates a ConfigMap every `intervalMs`, so that its watchers receive a steady stream of events. */
function startHeartbeat(
  kc: KubeConfig,
  namespace: string,
  name: string,
  intervalMs: number,
): { stop(): Promise<void> } {
  const core = kc.makeApiClient(CoreV1Api);
  let running = true;
  const loop = (async () => {
    for (let beat = 1; running; beat++) {
      await core
        .patchNamespacedConfigMap(
          { name, namespace, body: [{ op: "replace", path: "/data/beat", value: String(beat) }] },
          requestTimeout(2_000),
        )
        .catch(() => undefined);
      await new Promise((resolve) => setTimeout(resolve, intervalMs));
    }
  })();
  return {
    async stop() {
      running = false;
      await loop;
    },
  };
}
