/**
 * The watches of the Secrets policies name, against the fake API (test/unit/support/fake-api.ts);
 * secret-rotation.test.ts runs them against a real kube-apiserver and PostgreSQL.
 */
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import type { V1Secret } from "@kubernetes/client-node";
import type { ConnectionReusingKubeConfig } from "../../../src/runtime/kube-config.js";
import { createLogger } from "../../../src/log.js";
import { SecretWatches } from "../../../src/controller/secret-watches.js";
import { readSecretKeys } from "../../../src/kube/secrets.js";
import { waitFor } from "../../harness/processes.js";
import { FakeApi } from "../support/fake-api.js";

const SECRETS = "/api/v1/namespaces/ns/secrets";
const b64 = (s: string) => Buffer.from(s).toString("base64");

function secret(password: string, resourceVersion: string, extra: Partial<V1Secret["metadata"]> = {}): V1Secret {
  return {
    apiVersion: "v1",
    kind: "Secret",
    metadata: { name: "pg", namespace: "ns", resourceVersion, ...extra },
    data: { username: b64("ops"), password: b64(password) },
  };
}

describe("SecretWatches", () => {
  const api = new FakeApi();
  let kc: ConnectionReusingKubeConfig;
  let watches: SecretWatches;
  let enqueued: string[] = [];

  beforeAll(async () => {
    kc = await api.start();
  });
  afterAll(() => api.stop());
  beforeEach(() => {
    api.listed = { [SECRETS]: [secret("first", "1")] };
    enqueued = [];
    watches = new SecretWatches(kc, (key) => enqueued.push(key), createLogger("fatal"));
  });
  afterEach(async () => {
    await watches.stopAll();
    api.endWatches();
  });

  it("watches each named Secret once, selected by name, and serves its data to the reconciler", async () => {
    watches.ensure("ns/a", [{ namespace: "ns", name: "pg" }]);
    watches.ensure("ns/b", [{ namespace: "ns", name: "pg" }]);
    expect(watches.size).toBe(1);
    const read = await readSecretKeys(
      undefined as never, // no GET: the cache answers
      "ns",
      "pg",
      ["username", "password"],
      (namespace, name) => watches.cached(namespace, name),
    );
    expect(read).toEqual({ ok: true, values: { username: "ops", password: "first" } });
    const lists = api.requests.filter((r) => r.path === SECRETS);
    expect(lists.every((r) => r.query.get("fieldSelector") === "metadata.name=pg")).toBe(true);
    // What is cached is the identity and the data, not kubectl's copy in an annotation.
    expect(Object.keys((await watches.cached("ns", "pg"))?.metadata ?? {}).sort()).toEqual([
      "name",
      "namespace",
      "resourceVersion",
    ]);
  });

  it("enqueues every policy naming the Secret when its data changes, and none for a change of its metadata", async () => {
    watches.ensure("ns/a", [{ namespace: "ns", name: "pg" }]);
    watches.ensure("ns/b", [{ namespace: "ns", name: "pg" }]);
    await watches.cached("ns", "pg");
    await waitFor("the watch to be open", () => api.watching(SECRETS));
    enqueued = [];

    api.send(SECRETS, "MODIFIED", secret("first", "2", { annotations: { note: "x" } }));
    api.send(SECRETS, "MODIFIED", secret("second", "3"));
    await waitFor(
      "the rotation to be cached",
      async () => (await watches.cached("ns", "pg"))?.metadata?.resourceVersion === "3",
    );
    expect(enqueued.sort()).toEqual(["ns/a", "ns/b"]);

    enqueued = [];
    api.send(SECRETS, "DELETED", secret("second", "4"));
    await waitFor("the deletion to be cached", async () => (await watches.cached("ns", "pg")) === null);
    expect(enqueued.sort()).toEqual(["ns/a", "ns/b"]);
    const read = await readSecretKeys(undefined as never, "ns", "pg", ["password"], (n, s) => watches.cached(n, s));
    expect(read).toMatchObject({ ok: false, reason: "SecretNotFound" });
  });

  it("stops watching a Secret once no policy names it, and leaves unwatched Secrets to a GET", async () => {
    watches.ensure("ns/a", [{ namespace: "ns", name: "pg" }]);
    watches.ensure("ns/b", [{ namespace: "ns", name: "pg" }]);
    watches.ensure("ns/a", []);
    expect(watches.size).toBe(1);
    watches.ensure("ns/b", [{ namespace: "ns", name: "other" }]);
    expect(watches.size).toBe(1);
    expect(await watches.cached("ns", "pg")).toBeUndefined();
  });
});
