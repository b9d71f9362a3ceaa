import { describe, expect, it } from "vitest";
import type { PoolPolicy } from "../../../src/api/schema.js";
import { deepMerge } from "../../harness/deep-merge.js";
import {
  changesWhatPeersRead,
  peerKeys,
  referencedSecrets,
  serverKeyOf,
} from "../../../src/controller/policy-events.js";

const baseSpec = {
  postgres: {
    host: "db.example",
    port: 5432,
    credentialsSecret: { name: "pg-admin" },
    maxConnections: 200,
  },
  targets: { selector: { matchLabels: { app: "shop" } } },
  pool: { minSize: 2, maxSize: 10 },
  budget: { reserve: 5 },
  reaper: { enabled: true },
};

function policy(name: string, overrides: Record<string, unknown> = {}, metadata: object = {}): PoolPolicy {
  return {
    apiVersion: "pooling.dbops.io/v1alpha1",
    kind: "PoolPolicy",
    metadata: { name, namespace: "ns", generation: 1, ...metadata },
    spec: deepMerge(baseSpec, overrides),
  };
}

describe("changesWhatPeersRead", () => {
  const before = policy("p");

  it.each([
    ["the server's host", { postgres: { host: "other.example" } }],
    ["the server's port", { postgres: { port: 6432 } }],
    ["max_connections", { postgres: { maxConnections: "auto" } }],
    ["the budget's reserve", { budget: { reserve: 6 } }],
    ["the budget's headroom", { budget: { headroomPercent: 50 } }],
    ["the pool's max", { pool: { maxSize: 11 } }],
    ["the pool's min", { pool: { minSize: 3 } }],
    ["the target selector", { targets: { selector: { matchLabels: { app: "blog" } } } }],
    ["the way the apps connect (spec.pool.via)", { pool: { via: "Pooler" } }],
    ["the pooler it declares", { pooler: { name: "pgbouncer" } }],
  ])("is true for a change of %s", (_what, change) => {
    expect(changesWhatPeersRead(before, policy("p", change))).toBe(true);
  });

  it.each([
    ["the reaper", { reaper: { enabled: false, idleInTransactionTimeout: "10m" } }],
    ["Redis", { redis: { urlSecret: { name: "redis" } } }],
    ["the required extensions", { postgres: { requiredExtensions: ["pg_trgm"] } }],
    ["the env variable names", { pool: { env: { max: "MAX_POOL" } } }],
    ["the target containers", { targets: { containers: ["app"] } }],
    ["the credentials Secret", { postgres: { credentialsSecret: { name: "pg-other" } } }],
  ])("is false for a change of %s", (_what, change) => {
    expect(changesWhatPeersRead(before, policy("p", change))).toBe(false);
  });

  it("is false for a change of metadata only (an approval annotation, our own status write)", () => {
    const after = policy("p", {}, { generation: 2, annotations: { "pooling.dbops.io/approve": "200" } });
    expect(changesWhatPeersRead(before, after)).toBe(false);
  });

  it("is false when a default is spelled out: the parsed spec is compared, not the text", () => {
    expect(changesWhatPeersRead(policy("p", { postgres: { port: undefined } }), before)).toBe(false);
  });

  it("is true when the policy stops or starts counting: deleted, or made invalid, or valid again", () => {
    expect(changesWhatPeersRead(before, policy("p", {}, { deletionTimestamp: new Date() }))).toBe(true);
    const invalid = policy("p", { reaper: { idleInTransactionTimeout: "soon" } });
    expect(changesWhatPeersRead(before, invalid)).toBe(true);
    expect(changesWhatPeersRead(invalid, before)).toBe(true);
  });
});

describe("peerKeys", () => {
  const all = [
    policy("a"),
    policy("b"),
    policy("c", { postgres: { host: "other.example" } }),
    policy("d", { postgres: { port: 6432 } }),
  ];

  it("lists the other policies of the same server, not the policy itself", () => {
    expect(peerKeys(all, "ns/a", all[0]!)).toEqual(["ns/b"]);
  });

  it("lists the peers of the old server and of the new one when a policy moved", () => {
    const moved = policy("a", { postgres: { host: "other.example" } });
    expect(peerKeys(all, "ns/a", moved, all[0]!)).toEqual(["ns/b", "ns/c"]);
  });

  it("reads the server of a spec that does not validate, with the default port", () => {
    expect(serverKeyOf(policy("x", { postgres: { port: undefined }, reaper: { interval: 1 } }))).toBe(
      "db.example:5432",
    );
  });
});

describe("referencedSecrets", () => {
  it("names the credentials Secret in the policy's namespace, and nothing once the policy is deleted", () => {
    expect(referencedSecrets(policy("p"))).toEqual([{ namespace: "ns", name: "pg-admin" }]);
    expect(referencedSecrets(policy("p", {}, { deletionTimestamp: new Date() }))).toEqual([]);
    expect(referencedSecrets(policy("p", { postgres: { credentialsSecret: null } }))).toEqual([]);
  });
});
