import { describe, expect, it } from "vitest";
import { ApiException } from "@kubernetes/client-node";
import { apiErrorMessage, describeError, isConflict, isNotFound, statusCodeOf } from "../../../src/kube/errors.js";

const statusBody = (reason: string, message: string) => JSON.stringify({ kind: "Status", reason, message });
const secretHeaders = { authorization: "Bearer secret-token", "set-cookie": "session=secret-cookie" };

describe("statusCodeOf", () => {
  it("reads the status and the API's message from an ApiException, not its headers", () => {
    const err = new ApiException(
      409,
      "Unknown API Status Code!",
      statusBody("Conflict", "the object has been modified"),
      secretHeaders,
    );
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
    expect(isNotFound(timeout)).toBe(false);
    expect(describeError(timeout).message).toContain("timeout");
  });

  it("does not take a number that is not an HTTP status for one", () => {
    expect(statusCodeOf({ code: 23 })).toBeUndefined();
    expect(statusCodeOf({ code: 404.5 })).toBeUndefined();
    expect(statusCodeOf({ code: 600 })).toBeUndefined();
    expect(statusCodeOf(404)).toBeUndefined();
    expect(statusCodeOf(null)).toBeUndefined();
  });

  it("reads statusCode from watch errors", () => {
    expect(statusCodeOf(Object.assign(new Error("Gone"), { statusCode: 410 }))).toBe(410);
  });
});

describe("isNotFound and isConflict", () => {
  it("recognise 404 and 409 from an ApiException and from a look-alike {code, body}", () => {
    const notFound = new ApiException(404, "Not Found", statusBody("NotFound", 'secrets "pg" not found'), {});
    const conflict = { code: 409, body: { kind: "Status", reason: "Conflict", message: "modified" } };
    expect([isNotFound(notFound), isConflict(notFound)]).toEqual([true, false]);
    expect([isNotFound(conflict), isConflict(conflict)]).toEqual([false, true]);
    expect([isNotFound({ code: 404, body: "" }), isConflict({ code: 409 })]).toEqual([true, true]);
  });

  it("say no for errors without a status", () => {
    expect(isNotFound(new Error("404"))).toBe(false);
    expect(isConflict(Object.assign(new Error("socket"), { code: "ECONNRESET" }))).toBe(false);
    expect(isNotFound(undefined)).toBe(false);
  });
});

describe("apiErrorMessage", () => {
  it("is the body's message, never the ApiException's message with its headers and body", () => {
    const body = statusBody("Forbidden", 'pods "p" is forbidden: violates PodSecurity "restricted:latest"');
    const err = new ApiException(403, "Forbidden", body, secretHeaders);
    expect(err.message).toContain("secret-token"); // what a careless reader would leak
    expect(apiErrorMessage(err)).toBe('pods "p" is forbidden: violates PodSecurity "restricted:latest"');
  });

  it("reads a body that is already an object", () => {
    expect(apiErrorMessage({ code: 422, body: { message: "spec.replicas: Invalid value" } })).toBe(
      "spec.replicas: Invalid value",
    );
  });

  it("falls back to the HTTP status when the body says nothing", () => {
    const err = new ApiException(502, "Bad Gateway", "<html>upstream down</html>", secretHeaders);
    expect(apiErrorMessage(err)).toBe("HTTP 502");
    expect(describeError(new ApiException(409, "Conflict", { reason: "Conflict" }, {}))).toEqual({
      message: "HTTP 409",
      status: 409,
      reason: "Conflict",
    });
  });

  it("is the first line of any other error, with the cause that explains it", () => {
    const cause = new Error("connect ECONNREFUSED 127.0.0.1:6443");
    expect(apiErrorMessage(new TypeError("fetch failed", { cause }))).toBe(
      "fetch failed: connect ECONNREFUSED 127.0.0.1:6443",
    );
    expect(apiErrorMessage(new Error("first line\nBody: {...}\nHeaders: {...}"))).toBe("first line");
    expect(apiErrorMessage("plain text")).toBe("plain text");
  });
});
