/**
 * The memory ceiling on the real parts (issue 16.2): a `postgres` StatefulSet whose container is
 * limited to 512Mi, a real PostgreSQL behind it (the harness's: shared_buffers 32MB, work_mem
 * 4MB, maintenance_work_mem 64MB, 3 autovacuum workers), and pools whose worst case (55
 * connections) does not fit:
 *
 *   512 MiB − 32 MiB shared_buffers − 3 × 64 MiB autovacuum − 64 MiB overhead = 224 MiB
 *   224 MiB / (4 MiB per connection + 4 MiB work_mem) = 28 connections
 *
 * "auto" raises max_connections to 28, not to the 70 that demand + headroom asks; an explicit
 * 60 is applied, with the Warning that names the numbers, and `poolpolicy diagnose` prints the
 * same ceiling.
 */
import type { KubeConfig } from "@kubernetes/client-node";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { runCli } from "../../../src/cli/main.js";
import type { DiagnoseReport } from "../../../src/cli/report.js";
import { installPoolPolicyCrd } from "../../harness/crd.js";
import { loadKubeConfig } from "../../harness/kube.js";
import { OperatorProcess, runLogFile } from "../../harness/operator.js";
import { waitFor } from "../../harness/processes.js";
import { Scenario } from "./scenario.js";

let kubeconfigPath: string;
let kc: KubeConfig;
let operator: OperatorProcess;
const scenarios: Scenario[] = [];

beforeAll(async () => {
  kubeconfigPath = inject("kubeconfigPath");
  kc = loadKubeConfig(kubeconfigPath);
  await installPoolPolicyCrd(kc);
  operator = new OperatorProcess({ kubeconfigPath, logFile: runLogFile(kubeconfigPath, "operator-memory") });
  await operator.start();
});

afterAll(async () => {
  await operator?.stop();
  for (const s of scenarios) await s.cleanup();
});

/** A server at max_connections 20, its StatefulSet limited to 512Mi, and an app whose pools need 55 at worst. */
async function scenario(): Promise<Scenario> {
  const s = await Scenario.create(kc, { prefix: "memory", conf: { max_connections: 20 } });
  scenarios.push(s);
  await s.withPostgresWorkload({ memoryLimit: "512Mi" });
  // (1 replica + 1 surge) × 25 + 3 superuser_reserved + 2 operator = 55
  await s.deployment("api", { labels: { "app.kubernetes.io/part-of": "shop" }, replicas: 1 });
  return s;
}

const policy = (maxConnections: number | "auto") => ({
  postgres: { maxConnections, restart: { workload: { name: "postgres" } } },
  pool: { maxSize: 25 },
});

const maxConnectionsOf = async (s: Scenario) =>
  Number((await s.server.query("SHOW max_connections"))[0]!.max_connections);
const conditionOf = (p: { status?: { conditions?: { type: string; message: string }[] } }, type: string) =>
  p.status?.conditions?.find((c) => c.type === type);

describe("the memory ceiling", () => {
  it('"auto" raises max_connections only as far as the container\'s memory carries, and says memory binds', async () => {
    const s = await scenario();
    await s.applyPolicy("p", s.policySpec(policy("auto")));
    const applied = await s.waitForCondition("p", "MaxConnectionsApplied", { status: "True", reason: "Applied" });
    expect(await maxConnectionsOf(s)).toBe(28); // demand 55 + 20 % headroom would be 70
    expect(applied.status?.budget).toMatchObject({ demand: 55, capacity: 28, memoryCeiling: 28 });
    expect(await operator.metrics()).toContain(
      `poolpolicy_budget_memory_ceiling_connections{server="127.0.0.1:${s.server.port}"} 28\n`,
    );

    const memory = await s.waitForCondition("p", "MemoryWithinLimits", { status: "True", reason: "WithinMemory" });
    expect(conditionOf(memory, "MemoryWithinLimits")?.message).toBe(
      `max_connections 28 ≤ 28 that fit in the memory limit 512 MiB of container postgres in StatefulSet ${s.namespace}/postgres ` +
        "(288 MiB for shared_buffers, autovacuum workers and the server's own processes, then 8 MiB per connection (spec.postgres.memory.perConnection + work_mem))",
    );
    const budget = await s.waitForCondition("p", "BudgetWithinLimits", { status: "False", reason: "OverCommitted" });
    expect(conditionOf(budget, "BudgetWithinLimits")?.message).toContain(
      `the binding bound is memory: 28 connections fit in the memory limit 512 MiB of container postgres in StatefulSet ${s.namespace}/postgres, and 55 would need 728 MiB; ` +
        "lower the pools, give PostgreSQL more memory, or put a connection pooler in front",
    );
  });

  it("an explicit value above the ceiling is applied with a Warning naming the numbers; diagnose prints the same ceiling", async () => {
    const s = await scenario();
    await s.applyPolicy("p", s.policySpec(policy(60)));
    await s.waitForCondition("p", "MaxConnectionsApplied", { status: "True", reason: "Applied" });
    expect(await maxConnectionsOf(s)).toBe(60);
    const above = await s.waitForCondition("p", "MemoryWithinLimits", {
      status: "False",
      reason: "AboveMemoryCeiling",
    });
    const message = conditionOf(above, "MemoryWithinLimits")?.message;
    expect(message).toContain(
      `max_connections 60 > 28 that fit in the memory limit 512 MiB of container postgres in StatefulSet ${s.namespace}/postgres`,
    );
    expect(message).toContain("60 connections would need 768 MiB and may get PostgreSQL OOM-killed");
    expect(message).toContain("lower the pools, give PostgreSQL more memory, or put a connection pooler in front");
    await s.waitForCondition("p", "Ready", { status: "False", reason: "AboveMemoryCeiling" });
    await waitFor("a Warning Event AboveMemoryCeiling", async () =>
      (await s.events()).some((e) => e.type === "Warning" && e.reason === "AboveMemoryCeiling"),
    );

    const json = await runCli(["diagnose", `${s.namespace}/p`, "--kubeconfig", kubeconfigPath, "--json"]);
    const report = JSON.parse(json.stdout) as DiagnoseReport;
    expect(report.budget?.memory).toMatchObject({
      known: true,
      ceiling: 28,
      memoryBytes: 512 * 2 ** 20,
      fixedBytes: 288 * 2 ** 20,
      perConnectionBytes: 8 * 2 ** 20,
      condition: { status: "False", reason: "AboveMemoryCeiling", message },
    });
    expect(report.findings).toContainEqual({ severity: "warning", code: "AboveMemoryCeiling", message });
    expect(json.exitCode).toBe(1);
    const table = await runCli(["diagnose", `${s.namespace}/p`, "--kubeconfig", kubeconfigPath]);
    expect(table.stdout).toContain(
      `  memory     ceiling 28 max_connections: the memory limit 512 MiB of container postgres in StatefulSet ${s.namespace}/postgres, 288 MiB fixed + 8 MiB per connection\n`,
    );
  });
});
