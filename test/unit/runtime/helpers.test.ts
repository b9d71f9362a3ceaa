import { describe, expect, it } from "vitest";
import { ApiException } from "@kubernetes/client-node";
import { Backoff, sleep } from "../../../src/runtime/backoff.js";
import { describeError, statusCodeOf } from "../../../src/runtime/errors.js";
import { truncateUtf8 } from "../../../src/runtime/events.js";
import { keyOf, objectKey, splitKey } from "../../../src/runtime/keys.js";
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

describe("errors", () => {
  it("reads the status and the API's message from an ApiException, not its headers", () => {
    const body = JSON.stringify({ kind: "Status", reason: "Conflict", message: "the object has been modified" });
    const err = new ApiException(409, "Unknown API Status Code!", body, { authorization: "Bearer secret" });
    expect(statusCodeOf(err)).toBe(409);
    const summary = describeError(err);
    expect(summary).toEqual({ message: "the object has been modified", status: 409, reason: "Conflict" });
    expect(JSON.stringify(summary)).not.toContain("secret");
  });

  it("ignores string codes of socket errors", () => {
    const err = Object.assign(new Error("fetch failed"), { code: "ECONNREFUSED" });
    expect(statusCodeOf(err)).toBeUndefined();
    expect(describeError(err).message).toBe("fetch failed");
  });

  it("does not mistake an aborted request's DOMException code for an HTTP status", () => {
    const timeout = new DOMException("The operation was aborted due to timeout", "TimeoutError");
    expect(timeout.code).toBe(23);
    expect(statusCodeOf(timeout)).toBeUndefined();
    expect(describeError(timeout).message).toContain("timeout");
  });

  it("reads statusCode from watch errors", () => {
    expect(statusCodeOf(Object.assign(new Error("Gone"), { statusCode: 410 }))).toBe(410);
  });
});

describe("keys", () => {
  it("are namespace/name, or name for cluster-scoped objects", () => {
    expect(objectKey({ metadata: { namespace: "ns", name: "a" } })).toBe("ns/a");
    expect(objectKey({ metadata: { name: "node-1" } })).toBe("node-1");
    expect(keyOf(undefined, "x")).toBe("x");
    expect(splitKey("ns/a")).toEqual({ namespace: "ns", name: "a" });
    expect(splitKey("x")).toEqual({ name: "x" });
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
