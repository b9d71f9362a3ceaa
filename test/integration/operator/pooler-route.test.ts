/**
 * Where via: Pooler apps connect (issue 17, item 2), on the real parts: the operator process, the
 * real API server with its Deployment controller, kwok's nodes (which mark the pooler's pod Ready,
 * so its Deployment counts it available) and a real PostgreSQL.
 *
 * What it proves: the operator's metrics and `poolpolicy diagnose` give the pooler's sizes of its
 * PoolerSized condition; an app of a via: Pooler policy is pointed at the pooler's Service
 * (DB_POSTGRES_HOST / DB_POSTGRES_PORT, and the route annotation beside them) only once the
 * pooler's Deployment has an available pod; an app of a direct policy of the same server is left
 * alone; going Direct again takes both entries and the annotation away, the pool entries staying.
 * kwok runs no PgBouncer process: test/integration/pooler/pgbouncer.test.ts proves the traffic.
 */
import type { KubeConfig } from "@kubernetes/client-node";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { runCli } from "../../../src/cli/main.js";
import type { DiagnoseReport } from "../../../src/cli/report.js";
import { POOLER_ROUTE_ANNOTATION } from "../../../src/controller/env-injection.js";
import { installPoolPolicyCrd } from "../../harness/crd.js";
import { loadKubeConfig } from "../../harness/kube.js";
import { OperatorProcess, runLogFile } from "../../harness/operator.js";
import { waitFor } from "../../harness/processes.js";
import { Scenario } from "./scenario.js";

let kc: KubeConfig;
let kubeconfigPath: string;
let operator: OperatorProcess;
let s: Scenario | undefined;
const shop = { "app.kubernetes.io/part-of": "shop" };
const jobs = { "app.kubernetes.io/part-of": "jobs" };

beforeAll(async () => {
  kubeconfigPath = inject("kubeconfigPath");
  kc = loadKubeConfig(kubeconfigPath);
  await installPoolPolicyCrd(kc);
  operator = new OperatorProcess({ kubeconfigPath, logFile: runLogFile(kubeconfigPath, "operator-pooler-route") });
  await operator.start();
});

afterAll(async () => {
  await operator?.stop();
  await s?.cleanup();
});

describe("the route of via: Pooler apps", () => {
  it("points a pooled app at the pooler's Service once a PgBouncer pod is available (sizes in metrics and diagnose), leaves a direct one alone, and withdraws the route", async () => {
    s = await Scenario.create(kc, { prefix: "route", conf: { max_connections: 30 } });
    const scenario = s;
    await s.deployment("api", { labels: shop, replicas: 1 });
    await s.deployment("cron", { labels: jobs, replicas: 1 });
    const pooler = { name: "pgbouncer", image: "pgbouncer:test", port: 6432 };
    await s.applyPolicy("p", s.policySpec({ pool: { minSize: 1, maxSize: 2, via: "Pooler" }, pooler }));
    await s.applyPolicy(
      "d",
      s.policySpec({ pool: { minSize: 1, maxSize: 2 }, targets: { selector: { matchLabels: jobs } } }),
    );
    const host = `pgbouncer.${s.namespace}.svc`;
    const pool = { LOG_LEVEL: "info", DB_POSTGRES_MIN_CONN: "1", DB_POSTGRES_MAX_CONN: "2" };
    const route = async () => (await scenario.readDeployment("api")).metadata?.annotations?.[POOLER_ROUTE_ANNOTATION];

    await waitFor(
      "api to be pointed at the pooler",
      async () => (await scenario.envOf("api")).DB_POSTGRES_HOST === host,
      {
        timeoutMs: 90_000,
        intervalMs: 250,
      },
    );
    // Not before the pooler could take a connection: its Deployment has an available pod.
    expect((await s.readDeployment("pgbouncer")).status?.availableReplicas).toBeGreaterThan(0);
    expect(await s.envOf("api")).toEqual({ ...pool, DB_POSTGRES_HOST: host, DB_POSTGRES_PORT: "6432" });
    expect(await route()).toBe(`${host}:6432`);
    await waitFor(
      "PoolerSized to say where p's apps connect",
      async () =>
        (await scenario.status("p")).conditions
          ?.find((c) => c.type === "PoolerSized")
          ?.message?.endsWith(
            `; this policy's apps connect through it (DB_POSTGRES_HOST=${host}, DB_POSTGRES_PORT=6432)`,
          ) ?? false,
      { timeoutMs: 60_000, intervalMs: 250 },
    );

    // The same sizes in the operator's metrics and in `poolpolicy diagnose` (one function,
    // planDeclaredPooler): 30 − 5 reserved − 4 direct (d: pool 2 × (1 + 1 surge)) = 21 left, over
    // 1 replica + 1 surge: 10 per pod; max_client_conn = p's 4 + 5 for the admin console.
    const labels = `server="127.0.0.1:${s.server.port}",pooler="${s.namespace}/pgbouncer"`;
    const metrics = await (await fetch(`http://127.0.0.1:${operator.httpPort}/metrics`)).text();
    expect(metrics).toContain(`poolpolicy_pooler_fits{${labels}} 1\n`);
    expect(metrics).toContain(`poolpolicy_pooler_server_connections_per_pod{${labels}} 10\n`);
    expect(metrics).toContain(`poolpolicy_pooler_pods_worst_case{${labels}} 2\n`);
    expect(metrics).toContain(`poolpolicy_pooler_max_client_connections{${labels}} 9\n`);
    const cli = await runCli(["diagnose", `${s.namespace}/p`, "--kubeconfig", kubeconfigPath, "--json"]);
    const report = JSON.parse(cli.stdout) as DiagnoseReport;
    expect(report.budget?.pooler).toMatchObject({
      state: "sized",
      name: `${s.namespace}/pgbouncer`,
      pooled: [`${s.namespace}/p`],
      pods: 2,
      perPod: 10,
      left: 21,
      maxClientConn: 9,
    });
    const sized = (await s.status("p")).conditions?.find((c) => c.type === "PoolerSized")?.message ?? "";
    const explanation = report.budget?.pooler?.state === "sized" ? report.budget.pooler.explanation : "(not sized)";
    expect(sized).toContain(`per pod: ${explanation}`);

    // The direct policy's app keeps its own configuration.
    await s.waitForCondition("d", "Ready", { status: "True" });
    expect(await s.envOf("cron")).toEqual(pool);
    expect((await s.readDeployment("cron")).metadata?.annotations?.[POOLER_ROUTE_ANNOTATION]).toBeUndefined();

    // Direct again: host, port and the annotation go; the pool entries stay.
    await s.patchPolicy("p", { spec: { pool: { via: "Direct" } } });
    await waitFor("the route to be withdrawn", async () => !("DB_POSTGRES_HOST" in (await scenario.envOf("api"))), {
      timeoutMs: 60_000,
      intervalMs: 250,
    });
    expect(await s.envOf("api")).toEqual(pool);
    expect(await route()).toBeUndefined();
  });
});
