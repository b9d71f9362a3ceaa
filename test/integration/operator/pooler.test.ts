/**
 * The pooler's share on the real parts (issue 17, first slice): the CRD admits spec.pooler and
 * spec.pool.via, the operator process reads them with the server's real budget (Deployments on
 * kwok's nodes, a real PostgreSQL with max_connections 30) and reports PoolerSized with the
 * numbers, or PoolerDoesNotFit with a Warning Event. The operator does not run the pooler yet
 * (docs/pooler.md): this proves the sizing is wired, not that a pooler runs.
 *
 * The harness's Deployments roll with maxSurge 1, so one replica with a pool of 2 is
 * (1 + 1) × 2 = 4 connections at worst. The reserve on PostgreSQL 15: 3 superuser slots + the
 * operator's pool of 2.
 */
import type { KubeConfig } from "@kubernetes/client-node";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { installPoolPolicyCrd } from "../../harness/crd.js";
import { loadKubeConfig } from "../../harness/kube.js";
import { OperatorProcess, runLogFile } from "../../harness/operator.js";
import { waitFor } from "../../harness/processes.js";
import { Scenario } from "./scenario.js";

let kc: KubeConfig;
let operator: OperatorProcess;
let s: Scenario | undefined;
const shop = { "app.kubernetes.io/part-of": "shop" };
const jobs = { "app.kubernetes.io/part-of": "jobs" };

beforeAll(async () => {
  const kubeconfigPath = inject("kubeconfigPath");
  kc = loadKubeConfig(kubeconfigPath);
  await installPoolPolicyCrd(kc);
  operator = new OperatorProcess({ kubeconfigPath, logFile: runLogFile(kubeconfigPath, "operator-pooler") });
  await operator.start();
});

afterAll(async () => {
  await operator?.stop();
  await s?.cleanup();
});

describe("the pooler's share, reported by the operator", () => {
  it("sizes the declared pooler from the real budget, then refuses one that cannot fit, with the numbers", async () => {
    s = await Scenario.create(kc, { prefix: "pooler", conf: { max_connections: 30 } });
    await s.deployment("api", { labels: shop, replicas: 1 });
    await s.deployment("cron", { labels: jobs, replicas: 1 });
    const pooled = {
      pool: { minSize: 1, maxSize: 2, via: "Pooler" },
      pooler: { name: "pgbouncer", image: "pgbouncer:test", replicas: 1 },
    };
    await s.applyPolicy("p", s.policySpec(pooled));
    await s.applyPolicy(
      "d",
      s.policySpec({ pool: { minSize: 1, maxSize: 2 }, targets: { selector: { matchLabels: jobs } } }),
    );

    // 30 − 5 reserved − 4 direct (d) = 21 left, over 1 replica + 1 surge: 10 per pod; p's 4 are its clients.
    const sized = await s.waitForCondition("p", "PoolerSized", { status: "True", reason: "Sized" });
    const message = sized.status?.conditions?.find((c) => c.type === "PoolerSized")?.message;
    expect(message).toBe(
      `pooler ${s.namespace}/pgbouncer: 10 server connections per pod (max_db_connections 10, default_pool_size 10, reserve_pool_size 0) ` +
        "× 2 worst-case pods ≤ 21 left after direct clients and reserved slots; max_client_conn 9; " +
        "computed only: the operator does not run the pooler yet (docs/pooler.md)",
    );
    // The direct policy takes no part in the pooler: no such condition on it.
    await s.waitForCondition("d", "Ready", { status: "True" });
    expect((await s.status("d")).conditions?.some((c) => c.type === "PoolerSized")).toBe(false);

    // 5 replicas + 1 surge = 6 pods: ⌊21 / 6⌋ = 3 < the 5 asked for.
    await s.patchPolicy("p", { spec: { pooler: { replicas: 5, minServerConnectionsPerPod: 5 } } });
    const refused = await s.waitForCondition("p", "PoolerSized", { status: "False", reason: "PoolerDoesNotFit" });
    const because =
      "the pooler needs at least 5 server connections per pod; " +
      `127.0.0.1:${s.server.port} has 21 left (max_connections 30 − direct clients 4 − reserved 5), 3 per pod for 6 worst-case pooler pods`;
    expect(refused.status?.conditions?.find((c) => c.type === "PoolerSized")?.message).toContain(because);
    expect(refused.status?.conditions?.find((c) => c.type === "Ready")).toMatchObject({
      status: "False",
      reason: "PoolerDoesNotFit",
    });
    await waitFor("the Warning Event that names the numbers", async () =>
      (await s!.events()).some(
        (e) => e.type === "Warning" && e.reason === "PoolerDoesNotFit" && e.note.includes(because),
      ),
    );
  });
});
