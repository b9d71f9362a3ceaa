/**
 * `poolpolicy reap` against real sessions: a dry run by default, then only what the operator's
 * own filters allow (the policy's database, past the timeout, never excluded users or
 * applications, never other databases), for a PoolPolicy and for a plain DSN.
 */
import pg from "pg";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { runCli } from "../../../src/cli/main.js";
import type { ReapReport } from "../../../src/cli/reap.js";
import { loadKubeConfig } from "../../harness/kube.js";
import { freePort } from "../../harness/ports.js";
import { waitFor } from "../../harness/processes.js";
import { APP_DATABASE, Scenario } from "../operator/scenario.js";
import { saveSample } from "./helpers.js";
import { installPoolPolicyCrd } from "../../harness/crd.js";

let kubeconfigPath: string;
let s: Scenario;
const clients: pg.Client[] = [];

/** A session left idle in a transaction; returns its pid. */
async function idleInTransaction(
  app: string,
  user = "app",
  password = "app-pw-0c4f",
  database = APP_DATABASE,
): Promise<number> {
  const client = new pg.Client({
    host: "127.0.0.1",
    port: s.server.port,
    user,
    password,
    database,
    application_name: app,
  });
  client.on("error", () => undefined); // terminated sessions error asynchronously
  await client.connect();
  clients.push(client);
  await client.query("BEGIN");
  return (await client.query("SELECT pg_backend_pid() AS pid")).rows[0].pid;
}

const alive = async (pid: number) =>
  (await s.server.query("SELECT 1 FROM pg_stat_activity WHERE pid = $1", [pid])).length === 1;
const idleLongerThanOneSecond = (pid: number) =>
  waitFor(
    `pid ${pid} to be idle in transaction for more than 1s`,
    async () =>
      (
        await s.server.query(
          "SELECT 1 FROM pg_stat_activity WHERE pid = $1 AND state_change < now() - interval '1 second'",
          [pid],
        )
      ).length === 1,
  );

async function reapJson(...argv: string[]): Promise<{ exitCode: number; report: ReapReport }> {
  const result = await runCli(["reap", ...argv, "--json"]);
  expect(result.stderr).toBe("");
  return { exitCode: result.exitCode, report: JSON.parse(result.stdout) as ReapReport };
}

beforeAll(async () => {
  kubeconfigPath = inject("kubeconfigPath");
  const kc = loadKubeConfig(kubeconfigPath);
  await installPoolPolicyCrd(kc);
  s = await Scenario.create(kc, { prefix: "cli-reap" });
  await s.server.query("CREATE ROLE app LOGIN PASSWORD 'app-pw-0c4f'");
  await s.server.query("CREATE ROLE replicator LOGIN PASSWORD 'replicator-pw-9d1e'");
  await s.server.query(`GRANT ALL ON DATABASE ${APP_DATABASE} TO app, replicator`);
  await s.applyPolicy(
    "p",
    s.policySpec({
      // Off, so that the operators of other test files (they watch every namespace) leave the
      // sessions to the CLI; `poolpolicy reap` still takes the timeout and the exclusions from here.
      reaper: {
        enabled: false,
        idleInTransactionTimeout: "1s",
        excludeUsers: ["replicator"],
        excludeApplicationNames: ["pgbackrest"],
      },
    }),
  );
});

afterAll(async () => {
  for (const c of clients) await c.end().catch(() => undefined);
  await s?.cleanup();
});

describe("poolpolicy reap", () => {
  it("for a PoolPolicy: a dry run by default, then terminates only what the policy's filters allow", async () => {
    const victim = await idleInTransaction("orders");
    const excludedUser = await idleInTransaction("orders", "replicator", "replicator-pw-9d1e");
    const excludedApp = await idleInTransaction("pgbackrest");
    const otherDatabase = await idleInTransaction("orders", "postgres", s.server.password, "postgres");
    for (const pid of [victim, excludedUser, excludedApp, otherDatabase]) await idleLongerThanOneSecond(pid);

    const dry = await reapJson(`${s.namespace}/p`, "--kubeconfig", kubeconfigPath);
    expect(dry.exitCode).toBe(0);
    expect(dry.report).toMatchObject({
      subject: { policy: `${s.namespace}/p`, database: APP_DATABASE, user: "postgres" },
      dryRun: true,
      olderThan: "1s",
      excludeUsers: ["replicator"],
      excludeApplicationNames: ["pgbackrest"],
      terminated: 0,
    });
    expect(dry.report.sessions.map((x) => x.pid)).toEqual([victim]);
    expect(dry.report.sessions[0]).toMatchObject({
      user: "app",
      applicationName: "orders",
      clientAddress: "127.0.0.1",
      terminated: false,
    });
    expect(await alive(victim)).toBe(true);

    const table = await runCli(["reap", "p", "-n", s.namespace, "--kubeconfig", kubeconfigPath]);
    expect(table.exitCode).toBe(0);
    expect(table.stdout).toContain(
      `Dry run on PoolPolicy ${s.namespace}/p (postgres@127.0.0.1:${s.server.port}/appdb): 1 session(s) idle in transaction for more than 1s would be terminated; pass --execute to terminate them.`,
    );
    expect(table.stdout).toMatch(
      new RegExp(`\\n  ${victim}\\s+\\d+s\\s+app\\s+orders\\s+127\\.0\\.0\\.1\\s+would terminate\\n`),
    );
    saveSample("reap-dry-run.txt", table.stdout);

    const executed = await runCli(["reap", `${s.namespace}/p`, "--kubeconfig", kubeconfigPath, "--execute"]);
    expect(executed.exitCode).toBe(0);
    expect(executed.stdout).toContain("terminated 1 of 1 session(s) idle in transaction for more than 1s");
    expect(executed.stdout).toMatch(new RegExp(`\\n  ${victim}\\s+.*\\s+terminated\\n`));
    saveSample("reap-execute.txt", executed.stdout);
    await waitFor("the victim to be gone", async () => !(await alive(victim)));
    for (const pid of [excludedUser, excludedApp, otherDatabase]) expect(await alive(pid), `pid ${pid}`).toBe(true);
    expect(executed.stdout + table.stdout + JSON.stringify(dry.report)).not.toContain(s.server.password);
  });

  it("for a DSN: --older-than and --exclude-app instead of a policy's settings", async () => {
    // Start from an empty app database: the first test's survivors would be candidates here.
    await s.server.query(
      `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '${APP_DATABASE}' AND pid <> pg_backend_pid()`,
    );
    const young = await idleInTransaction("young");
    const byApp = await idleInTransaction("pg_dump");
    const byUser = await idleInTransaction("orders", "replicator", "replicator-pw-9d1e");
    for (const pid of [young, byApp, byUser]) await idleLongerThanOneSecond(pid);
    const dsn = `postgres://postgres:${s.server.password}@127.0.0.1:${s.server.port}/${APP_DATABASE}?sslmode=disable`;

    const none = await reapJson("--dsn", dsn, "--older-than", "1h", "--execute");
    expect(none.report).toMatchObject({ dryRun: false, olderThan: "1h", sessions: [], terminated: 0 });

    const some = await reapJson(
      "--dsn",
      dsn,
      "--older-than",
      "1s",
      "--exclude-app",
      "pg_dump",
      "--exclude-app",
      "pgbackrest",
      "--execute",
    );
    expect(some.exitCode).toBe(0);
    expect(some.report.subject.dsn).toBe(
      `postgres://postgres:***@127.0.0.1:${s.server.port}/${APP_DATABASE}?sslmode=disable`,
    );
    expect(some.report.excludeApplicationNames).toEqual(["pg_dump", "pgbackrest"]);
    // Without a policy nobody is excluded by user: the replicator's session goes too.
    expect(some.report.sessions.map((x) => x.pid).sort()).toEqual([young, byUser].sort());
    expect(some.report.terminated).toBe(2);
    await waitFor("both to be gone", async () => !(await alive(young)) && !(await alive(byUser)));
    expect(await alive(byApp)).toBe(true);
    expect(JSON.stringify(some.report)).not.toContain(s.server.password);
  });

  it("exits 1 with the reason when PostgreSQL cannot be reached", async () => {
    const result = await runCli([
      "reap",
      "--dsn",
      `postgres://postgres:not-the-pw-3e1@127.0.0.1:${await freePort()}/db`,
      "--older-than",
      "1m",
    ]);
    expect(result.exitCode).toBe(1);
    expect(result.stderr).toContain("connection refused");
    expect(result.stderr).not.toContain("not-the-pw-3e1");
  });
});
