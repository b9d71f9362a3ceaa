import { describe, expect, it } from "vitest";
import { ApiException, type CoreV1Api, type V1Secret } from "@kubernetes/client-node";
import { readSecretKeys } from "../../../src/kube/secrets.js";

const b64 = (s: string) => Buffer.from(s).toString("base64");
const secret: V1Secret = {
  metadata: { name: "pg", namespace: "ns" },
  data: { username: b64("ops"), password: b64("s3cr3t") },
};

/** A CoreV1Api that answers readNamespacedSecret only, with `answer`. */
function coreAnswering(answer: () => Promise<V1Secret>): CoreV1Api {
  return { readNamespacedSecret: answer } as unknown as CoreV1Api;
}

describe("readSecretKeys", () => {
  it("decodes the keys asked for", async () => {
    const read = await readSecretKeys(
      coreAnswering(async () => secret),
      "ns",
      "pg",
      ["username", "password"],
    );
    expect(read).toEqual({ ok: true, values: { username: "ops", password: "s3cr3t" } });
  });

  it("names the missing key, not the values", async () => {
    const read = await readSecretKeys(
      coreAnswering(async () => secret),
      "ns",
      "pg",
      ["password", "dsn"],
    );
    expect(read).toEqual({ ok: false, reason: "SecretKeyMissing", message: 'Secret ns/pg has no key "dsn"' });
    expect(JSON.stringify(read)).not.toContain("s3cr3t");
  });

  it("says SecretNotFound on a 404 and SecretUnreadable with the API's message on any other error", async () => {
    const notFound = new ApiException(404, "Not Found", JSON.stringify({ message: 'secrets "pg" not found' }), {});
    const forbidden = new ApiException(
      403,
      "Forbidden",
      JSON.stringify({ message: 'secrets "pg" is forbidden: User "op" cannot get resource "secrets"' }),
      { authorization: "Bearer token-in-a-header" },
    );
    const rejecting = (err: unknown) => coreAnswering(() => Promise.reject(err));
    expect(await readSecretKeys(rejecting(notFound), "ns", "pg", ["password"])).toEqual({
      ok: false,
      reason: "SecretNotFound",
      message: "Secret ns/pg not found",
    });
    expect(await readSecretKeys(rejecting(forbidden), "ns", "pg", ["password"])).toEqual({
      ok: false,
      reason: "SecretUnreadable",
      message: 'cannot read Secret ns/pg: secrets "pg" is forbidden: User "op" cannot get resource "secrets"',
    });
  });

  it("takes the cached Secret when there is one, and a synced cache's absence as not found", async () => {
    const noGet = coreAnswering(() => Promise.reject(new Error("no GET expected")));
    expect(await readSecretKeys(noGet, "ns", "pg", ["username"], async () => secret)).toEqual({
      ok: true,
      values: { username: "ops" },
    });
    expect(await readSecretKeys(noGet, "ns", "pg", ["username"], async () => null)).toMatchObject({
      ok: false,
      reason: "SecretNotFound",
    });
  });
});
