import { Writable } from "node:stream";
import { pino } from "pino";
import { afterEach, describe, expect, it, vi } from "vitest";
import { Controller, RequeueError, type ReconcileResult } from "../../../src/runtime/controller.js";
import { registry } from "../../../src/runtime/metrics.js";
import { WorkQueue } from "../../../src/runtime/queue.js";
import { ExponentialFailureRateLimiter } from "../../../src/runtime/rate-limiter.js";

/** A pino logger whose lines the test can read. */
function capturingLogger() {
  const lines: Array<Record<string, unknown>> = [];
  const stream = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      lines.push(JSON.parse(chunk.toString()) as Record<string, unknown>);
      callback();
    },
  });
  return { logger: pino({ level: "debug" }, stream), lines };
}

function deferred<T = void>() {
  let resolve!: (value: T) => void;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
}

async function eventually(check: () => boolean, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error("condition not met in time");
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

const running: Controller[] = [];
function startController(...args: ConstructorParameters<typeof Controller>): Controller {
  const controller = new Controller(...args);
  running.push(controller);
  controller.start();
  return controller;
}

afterEach(async () => {
  vi.useRealTimers();
  await Promise.all(running.splice(0).map((c) => c.stop()));
});

describe("Controller", () => {
  it("retries a failing key with growing backoff and forgets its failures on success", async () => {
    const { logger, lines } = capturingLogger();
    const calls: string[] = [];
    const failuresBeforeSuccess = 3;
    const queue = new WorkQueue({ rateLimiter: new ExponentialFailureRateLimiter(5, 1_000) });
    const requeuesSeen: number[] = [];
    startController({
      name: "retry",
      queue,
      logger,
      reconcile: async (key) => {
        calls.push(key);
        requeuesSeen.push(queue.numRequeues(key));
        if (calls.length <= failuresBeforeSuccess) throw new Error(`boom ${calls.length}`);
        return {};
      },
    });
    queue.add("ns/a");
    await eventually(() => calls.length === failuresBeforeSuccess + 1);
    // Each retry came after one more recorded failure: 0, 1, 2, 3.
    expect(requeuesSeen).toEqual([0, 1, 2, 3]);
    await eventually(() => queue.numRequeues("ns/a") === 0);
    const errors = lines.filter((line) => line.msg === "reconcile failed");
    expect(errors).toHaveLength(failuresBeforeSuccess);
    expect(errors[0]).toMatchObject({ key: "ns/a", error: { message: "boom 1" }, controller: "retry" });
  });

  it("requeues after requeueAfter on success, and not before", async () => {
    vi.useFakeTimers();
    let calls = 0;
    startController({
      name: "requeue-after",
      logger: capturingLogger().logger,
      reconcile: async (): Promise<ReconcileResult> => {
        calls += 1;
        return calls === 1 ? { requeueAfter: 10_000 } : {};
      },
    }).enqueue("a");
    await vi.advanceTimersByTimeAsync(1);
    expect(calls).toBe(1);
    await vi.advanceTimersByTimeAsync(9_990);
    expect(calls).toBe(1);
    await vi.advanceTimersByTimeAsync(20);
    expect(calls).toBe(2);
    await vi.advanceTimersByTimeAsync(60_000);
    expect(calls).toBe(2);
  });

  it("retries at the time a RequeueError gives, without backoff", async () => {
    vi.useFakeTimers();
    let calls = 0;
    const queue = new WorkQueue({ rateLimiter: new ExponentialFailureRateLimiter(5, 1_000) });
    startController({
      name: "requeue-error",
      queue,
      logger: capturingLogger().logger,
      reconcile: async () => {
        calls += 1;
        if (calls <= 2) throw new RequeueError("rollout in progress", 30_000);
        return {};
      },
    }).enqueue("a");
    await vi.advanceTimersByTimeAsync(1);
    expect(calls).toBe(1);
    expect(queue.numRequeues("a")).toBe(0);
    await vi.advanceTimersByTimeAsync(29_990);
    expect(calls).toBe(1);
    await vi.advanceTimersByTimeAsync(20);
    expect(calls).toBe(2);
    await vi.advanceTimersByTimeAsync(30_000);
    expect(calls).toBe(3);
  });

  it("never runs two reconciles of one key at once under a storm of adds", async () => {
    const keys = ["a", "b", "c", "d", "e"];
    const runningPerKey = new Map<string, number>();
    const maxRunningPerKey = new Map<string, number>();
    let maxRunningOverall = 0;
    let runningOverall = 0;
    const lastAddAt = new Map<string, number>();
    const lastStartAt = new Map<string, number>();
    let tick = 0;

    const controller = startController({
      name: "storm",
      workers: 4,
      logger: capturingLogger().logger,
      queue: new WorkQueue({ rateLimiter: new ExponentialFailureRateLimiter(1, 5) }),
      reconcile: async (key) => {
        lastStartAt.set(key, ++tick);
        const now = (runningPerKey.get(key) ?? 0) + 1;
        runningPerKey.set(key, now);
        maxRunningPerKey.set(key, Math.max(maxRunningPerKey.get(key) ?? 0, now));
        runningOverall += 1;
        maxRunningOverall = Math.max(maxRunningOverall, runningOverall);
        await new Promise((resolve) => setTimeout(resolve, Math.random() * 3));
        runningPerKey.set(key, (runningPerKey.get(key) ?? 1) - 1);
        runningOverall -= 1;
        if (Math.random() < 0.2) throw new Error("transient");
        return {};
      },
    });

    for (let i = 0; i < 2_000; i++) {
      const key = keys[Math.floor(Math.random() * keys.length)]!;
      controller.enqueue(key);
      lastAddAt.set(key, ++tick);
      if (i % 7 === 0) await new Promise((resolve) => setImmediate(resolve));
    }
    // Level-triggered: every key's last add is followed by a reconcile that started after it.
    await eventually(() => keys.every((key) => (lastStartAt.get(key) ?? 0) > (lastAddAt.get(key) ?? 0)), 20_000);
    await controller.stop();

    for (const key of keys) expect(maxRunningPerKey.get(key)).toBe(1);
    // The workers did run in parallel, so the per-key guarantee was really exercised.
    expect(maxRunningOverall).toBeGreaterThan(1);
  });

  it("stop waits for in-flight reconciles and starts no new ones", async () => {
    const release = deferred();
    const started: string[] = [];
    const finished: string[] = [];
    const controller = startController({
      name: "graceful",
      logger: capturingLogger().logger,
      workers: 2,
      reconcile: async (key) => {
        started.push(key);
        await release.promise;
        finished.push(key);
        return {};
      },
    });
    controller.enqueue("a");
    controller.enqueue("b");
    controller.enqueue("c");
    await eventually(() => started.length === 2);

    let stopped = false;
    const stopping = controller.stop().then(() => (stopped = true));
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(stopped).toBe(false);

    release.resolve();
    await stopping;
    expect(finished.sort()).toEqual(["a", "b"]);
    expect(started).not.toContain("c");
  });

  it("treats a synchronous throw like a rejected reconcile", async () => {
    const { logger, lines } = capturingLogger();
    let calls = 0;
    startController({
      name: "sync-throw",
      logger,
      queue: new WorkQueue({ rateLimiter: new ExponentialFailureRateLimiter(1, 5) }),
      reconcile: ((key: string) => {
        calls += 1;
        if (calls === 1) throw new Error(`sync failure for ${key}`);
        return Promise.resolve({});
      }) as (key: string) => Promise<ReconcileResult>,
    }).enqueue("x");
    await eventually(() => calls === 2);
    expect(lines.some((line) => line.msg === "reconcile failed" && line.key === "x")).toBe(true);
  });

  it("exports its error and retry counters at 0 before anything failed (a missing series is no data, not 0)", async () => {
    new Controller({ name: "fresh", reconcile: async () => ({}) });
    const value = async (metric: string, labels: Record<string, string>) =>
      (await registry.getSingleMetric(metric)!.get()).values.find((v) =>
        Object.entries(labels).every(([k, want]) => v.labels[k] === want),
      )?.value;
    expect(await value("controller_runtime_reconcile_errors_total", { controller: "fresh" })).toBe(0);
    for (const result of ["success", "error", "requeue"])
      expect(await value("controller_runtime_reconcile_total", { controller: "fresh", result }), result).toBe(0);
    expect(await value("workqueue_retries_total", { name: "fresh" })).toBe(0);
    expect(await value("workqueue_adds_total", { name: "fresh" })).toBe(0);
    expect(await value("workqueue_depth", { name: "fresh" })).toBe(0);
  });
});
