import { describe, expect, it } from "vitest";
import { Backoff, sleep } from "../../../src/runtime/backoff.js";
import { truncateUtf8 } from "../../../src/runtime/events.js";
import { requeueAfterOf, RequeueError } from "../../../src/runtime/controller.js";

describe("Backoff", () => {
  it("grows exponentially within its jitter band, caps, and resets", () => {
    const lowest = new Backoff({ initialMs: 200, maxMs: 30_000, random: () => 0 });
    const highest = new Backoff({ initialMs: 200, maxMs: 30_000, random: () => 0.999999 });
    const low = Array.from({ length: 12 }, () => lowest.next());
    const high = Array.from({ length: 12 }, () => highest.next());
    expect(low.slice(0, 4)).toEqual([100, 200, 400, 800]);
    expect(high[0]).toBeCloseTo(200);
    expect(Math.max(...high)).toBeLessThanOrEqual(30_000);
    expect(low.at(-1)).toBe(15_000);
    lowest.reset();
    expect(lowest.next()).toBe(100);
  });

  it("sleep ends early when its signal aborts", async () => {
    const controller = new AbortController();
    const slept = sleep(60_000, controller.signal);
    controller.abort();
    await slept; // would time the test out if the abort were ignored
  });
});

describe("truncateUtf8", () => {
  it("keeps short text and cuts long text at a character boundary", () => {
    expect(truncateUtf8("hello", 1024)).toBe("hello");
    const euros = "€".repeat(500); // 3 bytes each
    const cut = truncateUtf8(euros, 1024);
    expect(Buffer.byteLength(cut)).toBeLessThanOrEqual(1024);
    expect(cut).toBe("€".repeat(341));
  });
});

describe("requeueAfterOf", () => {
  it("reads requeueAfter from RequeueError and look-alikes only", () => {
    expect(requeueAfterOf(new RequeueError("wait", 5_000))).toBe(5_000);
    expect(requeueAfterOf({ requeueAfter: 10 })).toBe(10);
    expect(requeueAfterOf(new Error("plain"))).toBeUndefined();
    expect(requeueAfterOf({ requeueAfter: -1 })).toBeUndefined();
    expect(requeueAfterOf(new RequeueError("now", 0))).toBeUndefined();
  });
});
