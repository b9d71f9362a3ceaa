/**
 * The reaper's safety filters against real sessions: only client backends of the policy's
 * database that sit idle in a transaction past the timeout, never excluded users or
 * applications, and nothing at all in dry-run mode.
 */
import { afterAll, beforeAll, expect, inject, it } from "vitest";
import pg from "pg";
import { installPoolPolicyCrd } from "../../harness/crd.js";
import { loadKubeConfig } from "../../harness/kube.js";
import { OperatorProcess, runLogFile } from "../../harness/operator.js";
import { waitFor } from "../../harness/processes.js";
import { Scenario } from "./scenario.js";

let scenario: Scenario;
let operator: OperatorProcess;
const others: pg.Client[] = [];

beforeAll(async () => {
  const kubeconfigPath = inject("kubeconfigPath");
  const kc = loadKubeConfig(kubeconfigPath);
  await installPoolPolicyCrd(kc);
  scenario = await Scenario.create(kc, { prefix: "reap" });
  await scenario.server.query("CREATE ROLE replicator LOGIN PASSWORD 'replicator-pw'");
  await scenario.server.query("CREATE ROLE app LOGIN PASSWORD 'app-pw'");
  await scenario.server.query("GRANT ALL ON DATABASE appdb TO app, replicator");
  await scenario.deployment("api", { labels: { "app.kubernetes.io/part-of": "shop" }, replicas: 1 });
  operator = new OperatorProcess({ kubeconfigPath, logFile: runLogFile(kubeconfigPath, "operator-reap") });
  await operator.start();
});

afterAll(async () => {
  await operator?.stop();
  for (const c of others) await c.end().catch(() => undefined);
  await scenario?.cleanup();
});

async function idleInTransaction(app: string, user = "app", password = "app-pw", database = "appdb"): Promise<number> {
  const client = new pg.Client({
    host: "127.0.0.1",
    port: scenario.server.port,
    user,
    password,
    database,
    application_name: app,
  });
  client.on("error", () => undefined);
  await client.connect();
  others.push(client);
  await client.query("BEGIN");
  await client.query("SELECT 1");
  return (await client.query("SELECT pg_backend_pid() AS pid")).rows[0].pid;
}

const alive = async (pid: number) =>
  (await scenario.server.query("SELECT 1 FROM pg_stat_activity WHERE pid = $1", [pid])).length === 1;

it("reports in dry-run, then terminates only what the filters allow", async () => {
  const victim = await idleInTransaction("orders");
  const excludedUser = await idleInTransaction("orders", "replicator", "replicator-pw");
  const excludedApp = await idleInTransaction("pgbackrest");
  const otherDatabase = await idleInTransaction("orders", "postgres", scenario.server.password, "postgres");

  await scenario.applyPolicy(
    "p",
    scenario.policySpec({
      reaper: {
        interval: "5s",
        idleInTransactionTimeout: "1s",
        dryRun: true,
        excludeUsers: ["replicator"],
        excludeApplicationNames: ["pgbackrest"],
      },
    }),
  );
  await waitFor("a dry-run report", async () => ((await scenario.status("p")).reaper?.lastDryRunCandidates ?? 0) >= 1, {
    timeoutMs: 60_000,
  });
  expect((await scenario.status("p")).reaper?.lastDryRunCandidates).toBe(1);
  expect((await scenario.events()).find((e) => e.reason === "ReapDryRun")?.note).toContain(`pid ${victim}`);
  expect(await alive(victim)).toBe(true);
  await scenario.waitForCondition("p", "ReaperHealthy", { status: "True", reason: "DryRun" });

  await scenario.patchPolicy("p", { spec: { reaper: { dryRun: false } } });
  await waitFor("the victim to be terminated", async () => !(await alive(victim)), { timeoutMs: 60_000 });
  expect(await alive(excludedUser)).toBe(true);
  expect(await alive(excludedApp)).toBe(true);
  expect(await alive(otherDatabase)).toBe(true);
  await waitFor("status to count it", async () => (await scenario.status("p")).reaper?.totalTerminated === 1);
  await scenario.waitForCondition("p", "ReaperHealthy", { status: "True", reason: "Running" });
  expect(await operator.metrics()).toMatch(/^poolpolicy_reaper_sessions_terminated_total\{[^}]*\} 1$/m);
});
