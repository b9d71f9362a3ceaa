/**
 * `poolpolicy diagnose` against states the test builds on real parts: sessions in each state,
 * a budget spread over two namespaces with an HPA, a missing extension, Redis going down, a
 * server whose every ordinary slot is taken. This file runs no operator: the CLI reads the
 * cluster, PostgreSQL and Redis itself. Operators of other test files, which watch every
 * namespace of the shared control plane, may still act on these policies: hence the reaper
 * is off in them, and the assertions ignore notices (the conditions those operators write)
 * and the operators' own sessions.
 */
import { execFile } from "node:child_process";
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { AutoscalingV2Api, type KubeConfig } from "@kubernetes/client-node";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, inject, it, onTestFinished } from "vitest";
import { runCli } from "../../../src/cli/main.js";
import { captureIo } from "../../../src/cli/io.js";
import type { DiagnoseReport } from "../../../src/cli/report.js";
import { createNamespace, deleteNamespace, loadKubeConfig } from "../../harness/kube.js";
import { appDeployment } from "../../harness/manifests.js";
import { waitFor } from "../../harness/processes.js";
import { RedisServer } from "../../harness/redis.js";
import { repoRoot, toolPath } from "../../harness/tools.js";
import { APP_DATABASE, Scenario } from "../operator/scenario.js";
import { saveSample } from "./helpers.js";
import { installPoolPolicyCrd } from "../../harness/crd.js";

const APP_PASSWORD = "app-pw-7f3a9c";
const REDIS_PASSWORD = "redis-pw-51e0b2";

let kubeconfigPath: string;
let kc: KubeConfig;
let s: Scenario;
let redis: RedisServer;
const clients: pg.Client[] = [];
const cleanups: (() => Promise<void>)[] = [];

/** A session of role `app` in the app database, left open until the end. */
async function appSession(
  applicationName: string,
  server = s.server,
  user = "app",
  password = APP_PASSWORD,
): Promise<pg.Client> {
  const client = new pg.Client({
    host: "127.0.0.1",
    port: server.port,
    user,
    password,
    database: APP_DATABASE,
    application_name: applicationName,
  });
  client.on("error", () => undefined); // a session killed at cleanup errors asynchronously
  await client.connect();
  clients.push(client);
  return client;
}

async function diagnoseJson(...argv: string[]): Promise<{ exitCode: number; report: DiagnoseReport; stderr: string }> {
  const result = await runCli(["diagnose", ...argv, "--json"]);
  expect(result.stderr, "stderr of a successful diagnose").toBe("");
  return { exitCode: result.exitCode, report: JSON.parse(result.stdout) as DiagnoseReport, stderr: result.stderr };
}

const group = (r: DiagnoseReport, app: string) =>
  r.sessions!.byUserAndApplication.find((g) => g.applicationName === app);
/** The findings that decide the exit code; notices only relay what an operator reported. */
const codes = (r: DiagnoseReport) =>
  r.findings.filter((f) => f.severity !== "notice").map((f) => `${f.severity}:${f.code}`);

beforeAll(async () => {
  kubeconfigPath = inject("kubeconfigPath");
  kc = loadKubeConfig(kubeconfigPath);
  await installPoolPolicyCrd(kc);
  s = await Scenario.create(kc, { prefix: "cli" });
  cleanups.push(() => s.cleanup());
  await s.server.query(`CREATE ROLE app LOGIN PASSWORD '${APP_PASSWORD}'`);
  await s.server.query(`GRANT ALL ON DATABASE ${APP_DATABASE} TO app`);

  redis = await RedisServer.create({ password: REDIS_PASSWORD });
  cleanups.push(() => redis.destroy());
  await s.core.createNamespacedSecret({
    namespace: s.namespace,
    body: { metadata: { name: "redis" }, stringData: { url: redis.url } },
  });

  // api: 2 replicas, maxSurge 1, an HPA up to 6 → 7 pods worst case; worker: 1 replica + 1 surge.
  await s.deployment("api", { labels: { "app.kubernetes.io/part-of": "shop" }, replicas: 2 });
  await s.deployment("worker", { labels: { "app.kubernetes.io/part-of": "shop" }, replicas: 1 });
  await kc.makeApiClient(AutoscalingV2Api).createNamespacedHorizontalPodAutoscaler({
    namespace: s.namespace,
    body: {
      metadata: { name: "api" },
      spec: {
        scaleTargetRef: { apiVersion: "apps/v1", kind: "Deployment", name: "api" },
        minReplicas: 2,
        maxReplicas: 6,
        metrics: [
          { type: "Resource", resource: { name: "cpu", target: { type: "Utilization", averageUtilization: 80 } } },
        ],
      },
    },
  });
  await s.applyPolicy(
    "p",
    s.policySpec({
      pool: { maxSize: 10 },
      postgres: { requiredExtensions: ["plpgsql"] },
      redis: { urlSecret: { name: "redis" }, required: true },
      reaper: { enabled: false }, // diagnose reads its timeout; no operator may reap the test's sessions
    }),
  );

  // One session in each state.
  void (await appSession("test-active")).query("SELECT pg_sleep(600)").catch(() => undefined);
  await appSession("test-idle");
  await appSession("test-idle");
  await (await appSession("test-iit")).query("BEGIN; SELECT 1");
  const aborted = await appSession("test-aborted");
  await aborted.query("BEGIN");
  await aborted.query("SELECT 1/0").catch(() => undefined);
  await waitFor(
    "the active session to show in pg_stat_activity",
    async () =>
      (
        await s.server.query(
          "SELECT 1 FROM pg_stat_activity WHERE application_name = 'test-active' AND state = 'active'",
        )
      ).length === 1,
  );
});

afterAll(async () => {
  for (const c of clients) await c.end().catch(() => undefined);
  for (const cleanup of cleanups.reverse()) await cleanup().catch(() => undefined);
});

describe("poolpolicy diagnose", () => {
  it("a healthy policy: sessions by state, the budget with the HPA, extensions, Redis; exit 0", async () => {
    const { exitCode, report } = await diagnoseJson(`${s.namespace}/p`, "--kubeconfig", kubeconfigPath);
    expect(codes(report)).toEqual([]);
    expect(exitCode).toBe(0);
    expect(report.ok).toBe(true);
    expect(report.subject).toEqual({
      policy: `${s.namespace}/p`,
      server: `127.0.0.1:${s.server.port}`,
      database: APP_DATABASE,
      user: "postgres",
    });

    const pgSection = report.postgres;
    if (!pgSection.reachable) throw new Error(`unreachable: ${pgSection.message}`);
    expect(pgSection).toMatchObject({
      maxConnections: 100,
      settingSource: "configuration file",
      pendingRestart: false,
      superuserReservedConnections: 3,
      reservedConnections: 0,
      isSuperuser: true,
    });

    expect(group(report, "test-active")).toMatchObject({ user: "app", database: APP_DATABASE, total: 1, active: 1 });
    expect(group(report, "test-idle")).toMatchObject({ total: 2, idle: 2 });
    expect(group(report, "test-iit")).toMatchObject({ total: 1, idleInTransaction: 1 });
    expect(group(report, "test-aborted")).toMatchObject({ total: 1, idleInTransaction: 1 });
    expect(group(report, "poolpolicy-cli")).toMatchObject({ user: "postgres", total: 1, active: 1 }); // ourselves
    // The views add up: per database = Σ groups of that database; the server's total = Σ groups.
    const groups = report.sessions!.byUserAndApplication;
    const appdb = report.sessions!.byDatabase.find((d) => d.database === APP_DATABASE)!;
    expect(appdb.total).toBe(groups.filter((g) => g.database === APP_DATABASE).reduce((n, g) => n + g.total, 0));
    expect(appdb.idleInTransaction).toBeGreaterThanOrEqual(2);
    expect(pgSection.connections.total).toBe(groups.reduce((n, g) => n + g.total, 0));

    const oldest = report.sessions!.oldestIdleInTransaction;
    expect(oldest.map((x) => x.applicationName)).toEqual(["test-iit", "test-aborted"]);
    expect(oldest[0]).toMatchObject({
      user: "app",
      clientAddress: "127.0.0.1",
      database: APP_DATABASE,
      state: "idle in transaction",
      query: "BEGIN; SELECT 1",
    });
    expect(oldest[1]).toMatchObject({ state: "idle in transaction (aborted)", query: "SELECT 1/0" });
    expect(report.sessions!.idleThreshold).toBe("5m");
    expect(report.sessions!.idleInTransactionOverThreshold).toBe(0);

    expect(report.budget).toMatchObject({
      policies: [`${s.namespace}/p`],
      reserve: { superuserReserved: 3, reserved: 0, operator: 2, total: 5 },
      demand: 95,
      capacity: 100,
      withinLimits: true,
    });
    expect(report.budget!.targets).toEqual([
      { policy: `${s.namespace}/p`, deployment: `${s.namespace}/api`, poolMax: 10, podsWorstCase: 7, connections: 70 },
      {
        policy: `${s.namespace}/p`,
        deployment: `${s.namespace}/worker`,
        poolMax: 10,
        podsWorstCase: 2,
        connections: 20,
      },
    ]);
    expect(report.extensions).toEqual({ database: APP_DATABASE, required: ["plpgsql"], missing: [] });
    expect(report.redis).toMatchObject({
      required: true,
      available: true,
      reason: "Available",
      maxClients: 10000,
      rejectedConnections: 0,
    });
  });

  it("the same as a table for people", async () => {
    const result = await runCli(["diagnose", "p", "-n", s.namespace, "--kubeconfig", kubeconfigPath]);
    expect(result.exitCode).toBe(0);
    const text = result.stdout;
    expect(text).toMatch(
      new RegExp(`^PoolPolicy ${s.namespace}/p: postgres@127\\.0\\.0\\.1:${s.server.port}/appdb\\n`),
    );
    expect(text).toContain("  max_connections   100 (source: configuration file; no restart pending)\n");
    expect(text).toMatch(
      /CONNECTIONS BY DATABASE\n {2}DATABASE\s+TOTAL\s+ACTIVE\s+IDLE\s+IDLE IN TX\s+OTHER\n {2}appdb\s+\d+\s+\d+\s+\d+\s+\d+\s+\d+\n/,
    );
    expect(text).toMatch(/\n {2}app\s+test-idle\s+appdb\s+2\s+0\s+2\s+0\s+0\n/);
    expect(text).toMatch(
      /OLDEST IDLE IN TRANSACTION \(0 longer than 5m\)\n {2}PID .*\n {2}\d+\s+\d+s\s+app\s+test-iit\s+127\.0\.0\.1\s+appdb\s+BEGIN; SELECT 1\n/,
    );
    expect(text).toMatch(new RegExp(`BUDGET ON 127\\.0\\.0\\.1:${s.server.port} \\(1 PoolPolicy\\)\\n`));
    expect(text).toMatch(/\n {2}\S+\/p\s+\S+\/api\s+10\s+7\s+70\n/);
    expect(text).toContain("  demand     95 of capacity 100: within limits\n");
    expect(text).toContain("  PING ok; clients ");
    expect(text.endsWith("\nOK\n")).toBe(true);
    expect(text).not.toContain(s.server.password);
    saveSample("diagnose-ok.txt", text);
  });

  it("progress goes to stderr, never into --json", async () => {
    const io = captureIo(true);
    const result = await runCli(["diagnose", `${s.namespace}/p`, "--kubeconfig", kubeconfigPath, "--json"], { io });
    expect(result.exitCode).toBe(0);
    expect(io.stderr()).toContain(`… reading PoolPolicy ${s.namespace}/p\n`);
    expect(io.stderr()).toContain(`… connecting to postgres@127.0.0.1:${s.server.port}/appdb\n`);
    expect(() => JSON.parse(io.stdout())).not.toThrow();
  });

  it("finds what is wrong, with the numbers: a second namespace's policy overflows the budget, an extension is missing, sessions idle in transaction too long, Redis is down", async () => {
    // Another team's policy on the same server, in its own namespace: 2 pods × 10.
    const other = await createNamespace(kc, "cli-other");
    cleanups.push(() => deleteNamespace(kc, other));
    await s.core.createNamespacedSecret({
      namespace: other,
      body: { metadata: { name: "pg-admin" }, stringData: { username: "postgres", password: s.server.password } },
    });
    await s.apps.createNamespacedDeployment({
      namespace: other,
      body: appDeployment(other, "reports", { labels: { "app.kubernetes.io/part-of": "reports" }, replicas: 1 }),
    });
    await s.custom.createNamespacedCustomObject({
      group: "pooling.dbops.io",
      version: "v1alpha1",
      plural: "poolpolicies",
      namespace: other,
      body: {
        apiVersion: "pooling.dbops.io/v1alpha1",
        kind: "PoolPolicy",
        metadata: { name: "q" },
        spec: {
          ...s.policySpec({ pool: { maxSize: 10 } }),
          targets: { selector: { matchLabels: { "app.kubernetes.io/part-of": "reports" } } },
        },
      },
    });
    await s.patchPolicy("p", {
      spec: {
        postgres: { requiredExtensions: ["plpgsql", "pgcrypto"] },
        reaper: { enabled: false, idleInTransactionTimeout: "1s" },
      },
    });
    const iitPid = (
      await s.server.query<{ pid: number }>("SELECT pid FROM pg_stat_activity WHERE application_name = 'test-iit'")
    )[0]!.pid;
    await waitFor(
      "the sessions to be idle in transaction for more than 1s",
      async () =>
        (
          await s.server.query(
            "SELECT 1 FROM pg_stat_activity WHERE pid = $1 AND state_change < now() - interval '1 second'",
            [iitPid],
          )
        ).length === 1,
    );
    await redis.stop();

    const { exitCode, report } = await diagnoseJson(`${s.namespace}/p`, "--kubeconfig", kubeconfigPath);
    expect(exitCode).toBe(1);
    expect(report.ok).toBe(false);
    expect(codes(report)).toEqual([
      "critical:BudgetExceeded",
      "critical:ExtensionMissing",
      "critical:RedisUnavailable",
      "warning:IdleInTransaction",
    ]);
    const finding = (code: string) => report.findings.find((f) => f.code === code)!;

    expect(report.budget).toMatchObject({
      policies: [`${other}/q`, `${s.namespace}/p`].sort(),
      demand: 115,
      capacity: 100,
      withinLimits: false,
    });
    expect(finding("BudgetExceeded").message).toMatch(/^demand 115 > capacity 100: /);
    // 115 × 1.2 = 138 → 140; p's 9 pods must fit in 100 − 25: 8 each.
    expect(finding("BudgetExceeded").recommendation).toBe(
      `raise max_connections to 140 (set spec.postgres.maxConnections of ${s.namespace}/p to 140: the operator applies it with one rolling restart), ` +
        `or lower pool.maxSize of ${s.namespace}/p (api, worker) from 10 to 8`,
    );
    expect(finding("ExtensionMissing").recommendation).toBe("CREATE EXTENSION pgcrypto in database appdb");
    expect(finding("RedisUnavailable").message).not.toContain(REDIS_PASSWORD);
    expect(report.sessions!.idleInTransactionOverThreshold).toBe(2);
    expect(finding("IdleInTransaction").message).toContain(
      `pid ${iitPid} (user app, application "test-iit", client 127.0.0.1, database appdb)`,
    );
    expect(finding("IdleInTransaction").recommendation).toBe(
      `terminate them: poolpolicy reap ${s.namespace}/p --older-than 1s --execute; to prevent it: ALTER ROLE app SET idle_in_transaction_session_timeout = '1s'`,
    );

    const table = await runCli(["diagnose", `${s.namespace}/p`, "--kubeconfig", kubeconfigPath]);
    expect(table.exitCode).toBe(1);
    expect(table.stdout).toContain(`BUDGET ON 127.0.0.1:${s.server.port} (2 PoolPolicies)\n`);
    expect(table.stdout).toContain("  demand     115 of capacity 100: 15 over\n");
    expect(table.stdout).toContain("  CRITICAL  BudgetExceeded: demand 115 > capacity 100: ");
    expect(table.stdout).toContain("            → raise max_connections to 140 ");
    expect(table.stdout).toContain("  pgcrypto    missing (available: CREATE EXTENSION)\n");
    expect(table.stdout.endsWith("\nPROBLEMS FOUND\n")).toBe(true);
    for (const secret of [s.server.password, REDIS_PASSWORD])
      expect(table.stdout + JSON.stringify(report)).not.toContain(secret);
    saveSample("diagnose-problems.txt", table.stdout);
    await redis.start();
  });

  it("--dsn: the server and its sessions without a budget; the password is never printed", async () => {
    const dsn = `postgres://app:${APP_PASSWORD}@127.0.0.1:${s.server.port}/${APP_DATABASE}?sslmode=disable`;
    const { exitCode, report } = await diagnoseJson("--dsn", dsn, "--idle-threshold", "1h", "--redis-url", redis.url);
    expect(exitCode).toBe(0);
    expect(report.subject).toEqual({
      dsn: `postgres://app:***@127.0.0.1:${s.server.port}/${APP_DATABASE}?sslmode=disable`,
      server: `127.0.0.1:${s.server.port}`,
      database: APP_DATABASE,
      user: "app",
    });
    expect(report.budget).toBeUndefined();
    expect(report.policy).toBeUndefined();
    expect(report.postgres).toMatchObject({ reachable: true, isSuperuser: false, maxConnections: 100 });
    expect(group(report, "test-idle")).toMatchObject({ idle: 2 });
    expect(report.redis).toMatchObject({ available: true, required: false });

    const missing = await runCli(["diagnose", "--dsn", dsn, "--require-extension", "no_such_ext"]);
    expect(missing.exitCode).toBe(1);
    expect(missing.stdout).toContain("ExtensionMissing: required extension(s) missing in database appdb: no_such_ext");
    expect(missing.stdout).toContain("install the package that provides no_such_ext on the server");
    // The default threshold without a policy is 5m: the test's sessions are younger.
    expect(missing.stdout).toContain("OLDEST IDLE IN TRANSACTION (0 longer than 5m)");
    expect(missing.stdout).toContain(`postgres://app:***@127.0.0.1:${s.server.port}/appdb`);
    for (const out of [JSON.stringify(report), missing.stdout, missing.stderr]) {
      expect(out).not.toContain(APP_PASSWORD);
      expect(out).not.toContain(REDIS_PASSWORD);
    }
  });

  it("a full server: the policy's superuser gets in on a reserved slot and says no ordinary slot is left; an ordinary role is told why it cannot connect", async () => {
    const full = await Scenario.create(kc, { prefix: "cli-full", conf: { max_connections: 10 } });
    cleanups.push(() => full.cleanup());
    await full.server.query(`CREATE ROLE app LOGIN PASSWORD '${APP_PASSWORD}'`);
    await full.server.query(`GRANT ALL ON DATABASE ${APP_DATABASE} TO app`);
    // Fill every slot an ordinary role may take: max_connections 10 − 3 superuser_reserved_connections.
    // The policy comes after, so that no operator's sessions take ordinary slots first.
    let opened = 0;
    let refusal = "";
    while (!refusal && opened < 20) {
      try {
        await appSession(`filler-${opened}`, full.server);
        opened += 1;
      } catch (err) {
        refusal = (err as Error).message;
      }
    }
    expect(opened).toBe(7);
    expect(refusal).toMatch(/too many clients|remaining connection slots are reserved/);
    await full.applyPolicy("p", full.policySpec({ pool: { maxSize: 5 }, reaper: { enabled: false } }));

    const { exitCode, report } = await diagnoseJson(`${full.namespace}/p`, "--kubeconfig", kubeconfigPath);
    expect(exitCode).toBe(1);
    // 7 app sessions and ours (an operator of another test file may hold the other reserved slots).
    expect(report.postgres).toMatchObject({ reachable: true, maxConnections: 10 });
    const pgFull = report.postgres as Extract<DiagnoseReport["postgres"], { reachable: true }>;
    expect(pgFull.connections.total).toBeGreaterThanOrEqual(8);
    expect(pgFull.usagePercent).toBeGreaterThanOrEqual(80);
    expect(pgFull.ordinarySlotsFree).toBeLessThanOrEqual(0);
    expect(codes(report)).toEqual(["critical:NoFreeSlots"]);
    const noSlots = report.findings.find((f) => f.code === "NoFreeSlots")!;
    expect(noSlots.message).toMatch(
      /^no connection slot left for ordinary roles: \d+ sessions \(\d+ active, \d+ idle, 0 idle in transaction\) on max_connections 10, of which 3 are reserved; new connections get "sorry, too many clients already"$/,
    );
    // 8 to 10 in use + 3 reserved, + 20 % → 20; and most are idle: pools hold what they do not use.
    expect(noSlots.recommendation).toMatch(
      new RegExp(
        `^raise max_connections to 20 \\(set spec\\.postgres\\.maxConnections of ${full.namespace}/p to 20: the operator applies it with one rolling restart\\); ` +
          `\\d+ of the \\d+ sessions are idle: pools keep connections they do not use; lower the pools' minimum size \\(pool\\.minSize of ${full.namespace}/p is 5\\)$`,
      ),
    );

    const asApp = await diagnoseJson(
      "--dsn",
      `postgres://app:${APP_PASSWORD}@127.0.0.1:${full.server.port}/${APP_DATABASE}?sslmode=disable`,
    );
    expect(asApp.exitCode).toBe(1);
    expect(asApp.report.postgres).toMatchObject({ reachable: false, reason: "TooManyConnections" });
    expect(codes(asApp.report)).toEqual(["critical:PostgresUnreachable"]);
    expect(asApp.report.findings[0]!.message).toMatch(/too many clients|remaining connection slots are reserved/);
    expect(asApp.report.findings[0]!.recommendation).toContain("a role that owns a reserved slot");
    expect(JSON.stringify(asApp.report)).not.toContain(APP_PASSWORD);
  });

  it("roles held to their share: each role's share (demand + margin, the policies naming it), its CONNECTION LIMIT as read and its sessions; at its limit, or a limit below its share, is a warning", async () => {
    // A server of its own, whose role limits only this test sets: no operator runs while this
    // file does (vitest runs integration files one at a time), so the limits are as set here.
    const r = await Scenario.create(kc, { prefix: "cli-roles" });
    cleanups.push(() => r.cleanup());
    const ns = r.namespace;
    // A name that needs quoting in SQL, held to 3 connections; and one held to exactly its share.
    await r.server.query(`CREATE ROLE "Shop App" LOGIN PASSWORD '${APP_PASSWORD}' CONNECTION LIMIT 3`);
    await r.server.query(`CREATE ROLE reports LOGIN PASSWORD '${APP_PASSWORD}' CONNECTION LIMIT 12`);
    await r.server.query(`GRANT ALL ON DATABASE ${APP_DATABASE} TO "Shop App", reports`);
    // Worst-case pods: replicas + maxSurge 1.
    await r.deployment("api", { labels: { "app.kubernetes.io/part-of": "shop" }, replicas: 2 });
    await r.deployment("worker", { labels: { "app.kubernetes.io/part-of": "jobs" }, replicas: 1 });
    await r.deployment("reports", { labels: { "app.kubernetes.io/part-of": "reports" }, replicas: 1 });
    const policy = (part: string, maxSize: number, role: string, margin: number) =>
      r.policySpec({
        pool: { minSize: 1, maxSize },
        targets: { selector: { matchLabels: { "app.kubernetes.io/part-of": part } } },
        reaper: { enabled: false },
        enforcement: { connectionLimit: { role, margin } },
      });
    // Two policies name "Shop App": 3 pods × 4 + 2 pods × 3 = 18, margins 2 + 1.
    await r.applyPolicy("p", policy("shop", 4, "Shop App", 2));
    await r.applyPolicy("w", policy("jobs", 3, "Shop App", 1));
    // reports: 2 pods × 5 = 10, margin 2: a share of 12, its limit.
    await r.applyPolicy("q", policy("reports", 5, "reports", 2));

    const asRole = (user: string, n: number) =>
      appSession(`role-${user}-${n}`, r.server, user).then((c) => c.query("SELECT 1"));
    for (let i = 0; i < 3; i++) await asRole("Shop App", i);
    await asRole("reports", 0);
    // What the finding says, PostgreSQL does: the role's next session is refused.
    await expect(asRole("Shop App", 3)).rejects.toThrow('too many connections for role "Shop App"');

    const { exitCode, report } = await diagnoseJson(`${ns}/w`, "--kubeconfig", kubeconfigPath);
    expect(exitCode).toBe(1);
    expect(report.budget!.targets.map((t) => [t.deployment, t.poolMax, t.podsWorstCase, t.connections])).toEqual([
      [`${ns}/api`, 4, 3, 12],
      [`${ns}/reports`, 5, 2, 10],
      [`${ns}/worker`, 3, 2, 6],
    ]);
    expect(report.roles).toEqual([
      {
        role: "Shop App",
        share: { demand: 18, margin: 3, limit: 21, policies: [`${ns}/p`, `${ns}/w`] },
        exists: true,
        superuser: false,
        operatorRole: false,
        connectionLimit: 3,
        connections: 3,
        plan: { kind: "change", direction: "raise", from: 3, limit: 21 },
      },
      {
        role: "reports",
        share: { demand: 10, margin: 2, limit: 12, policies: [`${ns}/q`] },
        exists: true,
        superuser: false,
        operatorRole: false,
        connectionLimit: 12,
        connections: 1,
        plan: { kind: "inForce", limit: 12 },
      },
    ]);
    expect(codes(report)).toEqual(["warning:RoleLimitReached", "warning:RoleLimitBelowShare"]);
    const finding = (code: string) => report.findings.find((f) => f.code === code)!;
    expect(finding("RoleLimitReached").message).toBe(
      'role "Shop App" has 3 session(s), its CONNECTION LIMIT is 3 (share 21: worst-case demand 18 of 2 policies + margin 3): new sessions of "Shop App" are refused ("too many connections for role")',
    );
    expect(finding("RoleLimitBelowShare").recommendation).toContain(
      'by hand: ALTER ROLE "Shop App" CONNECTION LIMIT 21',
    );

    const table = await runCli(["diagnose", `${ns}/p`, "--kubeconfig", kubeconfigPath]);
    expect(table.exitCode).toBe(1);
    expect(table.stdout).toMatch(
      new RegExp(
        [
          "\\nROLES HELD TO THEIR SHARE \\(spec\\.enforcement\\.connectionLimit\\)\\n",
          " {2}ROLE\\s+SHARE\\s+DEMAND \\+ MARGIN\\s+CONNECTION LIMIT\\s+SESSIONS\\s+THE OPERATOR\\s+POLICIES\\n",
          ` {2}"Shop App"\\s+21\\s+18 \\+ 3\\s+3\\s+3\\s+raises it to 21\\s+${ns}/p, ${ns}/w\\n`,
          ` {2}reports\\s+12\\s+10 \\+ 2\\s+12\\s+1\\s+keeps it\\s+${ns}/q\\n`,
        ].join(""),
      ),
    );
    expect(table.stdout).toContain('  WARNING   RoleLimitReached: role "Shop App" has 3 session(s)');
    expect(table.stdout).toContain(
      '  WARNING   RoleLimitBelowShare: the CONNECTION LIMIT of role "Shop App" is 3, below',
    );
    saveSample("diagnose-roles.txt", table.stdout);

    // The limit the operator would set: in force, room for the role's sessions, nothing to warn about.
    await r.server.query(`ALTER ROLE "Shop App" CONNECTION LIMIT 21`);
    await asRole("Shop App", 3);
    const fixed = await diagnoseJson(`${ns}/q`, "--kubeconfig", kubeconfigPath);
    expect(fixed.report.roles!.map((x) => [x.role, x.connectionLimit, x.connections, x.plan.kind])).toEqual([
      ["Shop App", 21, 4, "inForce"],
      ["reports", 12, 1, "inForce"],
    ]);
    expect(codes(fixed.report)).toEqual([]);
    expect(fixed.exitCode).toBe(0);
  });

  it("runs as a real process (the bin) and as the kubectl plugin `kubectl poolpolicy`", async () => {
    const inProcess = await diagnoseJson(`${s.namespace}/p`, "--kubeconfig", kubeconfigPath);
    const bin = await run(process.execPath, [
      "--import",
      "tsx",
      "src/cli/main.ts",
      "diagnose",
      `${s.namespace}/p`,
      "--kubeconfig",
      kubeconfigPath,
      "--json",
    ]);
    expect(bin.code, bin.stderr).toBe(inProcess.exitCode);
    const report = JSON.parse(bin.stdout) as DiagnoseReport;
    expect(report.subject.policy).toBe(`${s.namespace}/p`);
    expect(codes(report)).toEqual(codes(inProcess.report));

    // kubectl finds plugins as executables named kubectl-<name> on the PATH; the npm bin
    // (dist/src/cli/main.js) linked under that name is what users install. Here a shim runs
    // the sources under tsx.
    const shimDir = mkdtempSync(join(tmpdir(), "poolpolicy-plugin-"));
    onTestFinished(() => rmSync(shimDir, { recursive: true, force: true }));
    const shim = join(shimDir, "kubectl-poolpolicy");
    writeFileSync(
      shim,
      `#!/bin/sh\nexec "${process.execPath}" --import "${createRequire(import.meta.url).resolve("tsx")}" "${join(repoRoot, "src/cli/main.ts")}" "$@"\n`,
    );
    chmodSync(shim, 0o755);
    const env = { ...process.env, PATH: `${shimDir}:${process.env.PATH}`, KUBECONFIG: kubeconfigPath };
    const listed = await run(toolPath("kubectl"), ["plugin", "list"], env);
    expect(listed.stdout).toContain(shim);
    const plugin = await run(toolPath("kubectl"), ["poolpolicy", "diagnose", `${s.namespace}/p`, "--json"], env);
    expect(plugin.code).toBe(inProcess.exitCode);
    expect((JSON.parse(plugin.stdout) as DiagnoseReport).subject.policy).toBe(`${s.namespace}/p`);
  });
});

function run(
  command: string,
  args: string[],
  env: NodeJS.ProcessEnv = process.env,
): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(command, args, { cwd: repoRoot, env, timeout: 120_000, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === "number" ? err.code : -1) : 0, stdout, stderr });
    });
  });
}
