import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import type { KubeConfig } from "@kubernetes/client-node";
import { createNamespace, deleteNamespace, loadKubeConfig } from "../../harness/kube.js";
import { waitFor } from "../../harness/processes.js";
import { Controller } from "../../../src/runtime/controller.js";
import { OperatorServer } from "../../../src/runtime/server.js";
import { configMapInformer, quietLogger } from "./support.js";

describe("OperatorServer", () => {
  let kc: KubeConfig;
  let namespace: string;
  const server = new OperatorServer({ logger: quietLogger, checkTimeoutMs: 1_000 });
  let base = "";

  beforeAll(async () => {
    kc = loadKubeConfig(inject("kubeconfigPath"));
    namespace = await createNamespace(kc, "server");
    const port = await server.listen(0, "127.0.0.1");
    base = `http://127.0.0.1:${port}`;
  });

  afterAll(async () => {
    await server.close();
    await deleteNamespace(kc, namespace);
  });

  const get = async (path: string) => {
    const response = await fetch(`${base}${path}`);
    return { status: response.status, body: await response.text(), contentType: response.headers.get("content-type") };
  };

  it("reports ready only once the informer has synced", async () => {
    const { informer } = configMapInformer(kc, namespace);
    server.addReadinessCheck("configmaps-synced", () => informer.hasSynced());
    const before = await get("/readyz");
    expect(before.status).toBe(503);
    expect(before.body).toContain("[-]configmaps-synced failed");

    informer.start();
    try {
      await waitFor("/readyz to pass", async () => (await get("/readyz")).status === 200, { timeoutMs: 30_000 });
      expect((await get("/readyz")).body).toContain("[+]configmaps-synced ok");
    } finally {
      await informer.stop();
    }
  });

  it("reports healthy while its checks pass, and says which one fails", async () => {
    let workersAlive = true;
    server.addHealthCheck("workers", () => workersAlive);
    server.addHealthCheck("slow-but-fine", async () => {
      await new Promise((resolve) => setTimeout(resolve, 10));
      return true;
    });
    expect((await get("/healthz")).status).toBe(200);

    workersAlive = false;
    const failing = await get("/healthz");
    expect(failing.status).toBe(503);
    expect(failing.body).toContain("[-]workers failed");
    expect(failing.body).toContain("[+]slow-but-fine ok");
  });

  it("fails a check that hangs instead of hanging the probe", async () => {
    const hung = new OperatorServer({
      logger: quietLogger,
      checkTimeoutMs: 200,
      healthChecks: [{ name: "hung", check: () => new Promise<boolean>(() => {}) }],
    });
    const port = await hung.listen(0, "127.0.0.1");
    try {
      const response = await fetch(`http://127.0.0.1:${port}/healthz`);
      expect(response.status).toBe(503);
      expect(await response.text()).toContain("[-]hung failed: timed out");
    } finally {
      await hung.close();
    }
  });

  it("serves the runtime's metrics in the Prometheus text format", async () => {
    const controller = new Controller({ name: "metrics-it", logger: quietLogger, reconcile: async () => ({}) });
    controller.start();
    controller.enqueue("a");
    await waitFor("a reconcile", async () =>
      (await get("/metrics")).body.includes(
        'controller_runtime_reconcile_total{controller="metrics-it",result="success"} 1',
      ),
    );
    await controller.stop();

    const metrics = await get("/metrics");
    expect(metrics.status).toBe(200);
    expect(metrics.contentType).toContain("text/plain");
    expect(metrics.body).toContain("workqueue_adds_total");
    expect(metrics.body).toContain("controller_runtime_reconcile_time_seconds_bucket");
    expect(metrics.body).toContain("process_cpu_seconds_total"); // default metrics
  });

  it("answers 404 for unknown paths and 405 for other methods", async () => {
    expect((await get("/nope")).status).toBe(404);
    expect((await fetch(`${base}/healthz`, { method: "POST" })).status).toBe(405);
  });
});
