/**
 * A server's budget targets gathered once for its policies' passes (src/controller/budget-targets.ts):
 * reused exactly while the peers (in what gathering reads of them) and the reader's version of
 * the budget's inputs stay the same; gathered again otherwise. The reader is a fake whose
 * Deployments and version the test moves; every reuse is checked against a fresh gathering.
 */
import type { V1Deployment } from "@kubernetes/client-node";
import { describe, expect, it } from "vitest";
import type { PoolPolicy } from "../../../src/api/schema.js";
import { BudgetTargets, type VersionedTargetReader } from "../../../src/controller/budget-targets.js";
import { serverKey } from "../../../src/server/identity.js";
import { gatherBudgetTargets, policiesOnServer } from "../../../src/server/model.js";

const SERVER = serverKey({ host: "pg", port: 5432 }, "apps");

function policy(name: string, app: string, poolMax = 5): PoolPolicy {
  return {
    apiVersion: "pooling.dbops.io/v1alpha1",
    kind: "PoolPolicy",
    metadata: { name, namespace: "apps" },
    spec: {
      postgres: { host: "pg", port: 5432, database: "app", credentialsSecret: { name: "pg" } },
      pool: { minSize: 1, maxSize: poolMax },
      targets: { selector: { matchLabels: { app } } },
    },
  } as unknown as PoolPolicy;
}

/** Deployments by app label; `version` undefined: the reader cannot say (nothing may be reused). */
function fakeReader(replicas: Record<string, number>) {
  const state = { version: 1 as number | undefined, lists: 0, replicas };
  const read: VersionedTargetReader = {
    deployments: async (_key, _namespace, selector) => {
      state.lists += 1;
      const app = selector.replace(/^app=/, "");
      const n = state.replicas[app];
      return n === undefined ? [] : [{ metadata: { name: app }, spec: { replicas: n } } as V1Deployment];
    },
    hpas: async () => [],
    budgetInputsVersion: () => state.version,
  };
  return { read, state };
}

describe("BudgetTargets", () => {
  it("reuses the gathering while peers and version stay, and it equals a fresh one", async () => {
    const { read, state } = fakeReader({ api: 2, web: 3 });
    const peers = policiesOnServer([policy("a", "api"), policy("b", "web")], SERVER);
    const memo = new BudgetTargets();
    const first = await memo.gather(SERVER, peers, read);
    const again = await memo.gather(SERVER, policiesOnServer([policy("b", "web"), policy("a", "api")], SERVER), read);
    expect(state.lists).toBe(2);
    expect(again).toBe(first);
    expect(again).toEqual(await gatherBudgetTargets(read, peers));
  });

  it("gathers again when the version moves", async () => {
    const { read, state } = fakeReader({ api: 2 });
    const peers = policiesOnServer([policy("a", "api")], SERVER);
    const memo = new BudgetTargets();
    await memo.gather(SERVER, peers, read);
    state.replicas.api = 7;
    state.version = 2;
    const targets = await memo.gather(SERVER, peers, read);
    expect(targets.map((t) => t.replicas)).toEqual([7]);
  });

  it("gathers again when a peer comes, goes, or changes its selector or pool", async () => {
    const { read } = fakeReader({ api: 2, web: 3 });
    const memo = new BudgetTargets();
    const gather = (...ps: PoolPolicy[]) => memo.gather(SERVER, policiesOnServer(ps, SERVER), read);
    expect((await gather(policy("a", "api"))).map((t) => t.deployment)).toEqual(["apps/api"]);
    expect((await gather(policy("a", "api"), policy("b", "web"))).map((t) => t.deployment)).toEqual([
      "apps/api",
      "apps/web",
    ]);
    expect((await gather(policy("a", "web"))).map((t) => t.policy)).toEqual(["apps/a"]);
    expect((await gather(policy("a", "web"))).map((t) => t.deployment)).toEqual(["apps/web"]);
    expect((await gather(policy("a", "web", 9))).map((t) => t.poolMax)).toEqual([9]);
  });

  it("never reuses without a version", async () => {
    const { read, state } = fakeReader({ api: 2 });
    state.version = undefined;
    const peers = policiesOnServer([policy("a", "api")], SERVER);
    const memo = new BudgetTargets();
    await memo.gather(SERVER, peers, read);
    await memo.gather(SERVER, peers, read);
    expect(state.lists).toBe(2);
  });

  it("does not keep a gathering as current when the version moved while it ran", async () => {
    const { read, state } = fakeReader({ api: 2 });
    const peers = policiesOnServer([policy("a", "api")], SERVER);
    const memo = new BudgetTargets();
    const deployments = read.deployments;
    // The change lands while the first gathering reads the caches.
    read.deployments = async (...args) => {
      const found = await deployments(...args);
      state.replicas.api = 4;
      state.version = 2;
      return found;
    };
    expect((await memo.gather(SERVER, peers, read)).map((t) => t.replicas)).toEqual([2]);
    read.deployments = deployments;
    expect((await memo.gather(SERVER, peers, read)).map((t) => t.replicas)).toEqual([4]);
  });
});
