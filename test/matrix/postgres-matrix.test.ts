/**
 * The PostgreSQL matrix: what the operator reads from and does to a server, on every major users
 * run (13 to 18), against real servers of each (Debian's package where installed, else the npm
 * build tools/install-postgres.sh unpacks). Only what differs by major runs here, and it needs
 * no control plane: the operator's own functions (src/postgres/*, planMaxConnections) and the CLI
 * against a plain DSN. The full suite (control plane, operator process) runs on one major.
 *
 * Every cell of docs/postgres-support.json is proven here: a test asserts the behaviour its cell
 * declares ("yes", or the documented "no"/"n/a"), so a wrong cell fails the test, and the README
 * table rendered from that file says only what ran. POOLPOLICY_PG_MATRIX="16 17" narrows the run.
 */
import fc from "fast-check";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runCli } from "../../src/cli/main.js";
import type { DiagnoseReport } from "../../src/cli/report.js";
import type { ReapReport } from "../../src/cli/reap.js";
import { type MaxConnectionsPlan, planMaxConnections } from "../../src/controller/max-connections.js";
import { PostgresError, PostgresPools, type PostgresTarget } from "../../src/postgres/connection.js";
import { inspectInstance, inspectServer, type ServerFacts } from "../../src/postgres/inspect.js";
import { reapIdleInTransaction } from "../../src/postgres/reap.js";
import { inspectRole, setConnectionLimit } from "../../src/postgres/roles.js";
import { AlterSystemError, alterMaxConnections } from "../../src/postgres/settings.js";
import { ensureRoleTimeouts, ensureServerTimeout } from "../../src/postgres/timeouts.js";
import { MATRIX_MAJORS, PostgresServer } from "../harness/postgres.js";
import { waitFor } from "../harness/processes.js";
import { type Cell, loadSupportMatrix, supportCell } from "../harness/support-table.js";

const support = loadSupportMatrix();
const majors = process.env.POOLPOLICY_PG_MATRIX
  ? process.env.POOLPOLICY_PG_MATRIX.split(/[\s,]+/)
      .filter(Boolean)
      .map(Number)
  : [...MATRIX_MAJORS];

const APP_DB = "appdb";
const APP_PW = "app-pw-3c9d";
const OPERATOR_PW = "operator-pw-8b21";

/** A login of the test's own, closed at the end; errors after a kill are expected, not uncaught. */
async function session(
  server: PostgresServer,
  user: string,
  password: string,
  applicationName: string,
  database = APP_DB,
): Promise<pg.Client> {
  const client = new pg.Client({
    host: server.host,
    port: server.port,
    user,
    password,
    database,
    application_name: applicationName,
  });
  client.on("error", () => undefined);
  await client.connect();
  return client;
}

async function idleInTransaction(
  server: PostgresServer,
  user: string,
  password: string,
  applicationName: string,
  database = APP_DB,
): Promise<{ client: pg.Client; pid: number }> {
  const client = await session(server, user, password, applicationName, database);
  await client.query("BEGIN");
  const pid = (await client.query<{ pid: number }>("SELECT pg_backend_pid() AS pid")).rows[0]!.pid;
  return { client, pid };
}

async function alive(server: PostgresServer, pid: number): Promise<boolean> {
  return (await server.query("SELECT 1 FROM pg_stat_activity WHERE pid = $1", [pid])).length === 1;
}

function target(server: PostgresServer, user: string, password: string, database = "postgres"): PostgresTarget {
  return { host: server.host, port: server.port, database, sslMode: "disable", user, password };
}

/**
 * planMaxConnections for a StatefulSet that has rolled out, under policy Automatic with no window
 * and no restart yet; `record`: the restart to `value` requested when the postmaster had started at `after`.
 */
function plan(facts: ServerFacts, desired: number, record?: { value: number; after: Date }): MaxConnectionsPlan {
  const workload = { kind: "StatefulSet" as const, name: "postgres", namespace: "db" };
  return planMaxConnections({
    desired,
    facts,
    workload: { configured: true, found: true, rolledOut: true, record, description: "StatefulSet db/postgres" },
    gate: {
      policyName: "db/p",
      workload,
      restartPolicy: "Automatic",
      approval: undefined,
      limit: { max: 3, history: [] },
      now: new Date(),
    },
  });
}

describe.each(majors)("PostgreSQL %i", (major) => {
  const cell = (feature: string): Cell => supportCell(support, feature, major);
  const pools = new PostgresPools({ applicationName: "poolpolicy-matrix", connectTimeoutMs: 5_000 });
  const open: pg.Client[] = [];
  let server: PostgresServer;
  let superuser: PostgresTarget;
  let operator: PostgresTarget;

  beforeAll(async () => {
    server = await PostgresServer.create({ major });
    superuser = target(server, server.superuser, server.password);
    operator = target(server, "operator", OPERATOR_PW);
    await server.query(`CREATE DATABASE ${APP_DB}`);
    await server.query(`CREATE ROLE app LOGIN PASSWORD '${APP_PW}'`);
    // The operator's role as the README asks for it: see others' sessions and end them; no superuser.
    await server.query(`CREATE ROLE operator LOGIN PASSWORD '${OPERATOR_PW}'`);
    await server.query("GRANT pg_read_all_stats, pg_signal_backend TO operator");
  });

  afterAll(async () => {
    for (const c of open) await c.end().catch(() => undefined);
    await pools.closeAll();
    await server?.destroy();
  });

  it("runs the major it was asked for", async () => {
    const facts = await pools.withClient(superuser, inspectServer);
    expect(Math.floor(facts.versionNum / 10_000)).toBe(major);
    expect(facts.version).toMatch(new RegExp(`^${major}\\.`));
  });

  it("facts: max_connections and its source, sessions by state, reserved slots, extensions", async () => {
    expect(cell("facts").status).toBe("yes");
    const active = await session(server, "app", APP_PW, "matrix-active");
    const idle = await session(server, "app", APP_PW, "matrix-idle");
    const iit = await idleInTransaction(server, "app", APP_PW, "matrix-iit");
    open.push(active, idle, iit.client);
    void active.query("SELECT pg_sleep(600)").catch(() => undefined);
    // Ours and the three above; the harness's own short sessions may linger a moment as they exit.
    let facts: ServerFacts | undefined;
    await waitFor("the sessions to be counted by state", async () => {
      facts = await pools.withClient(superuser, inspectServer);
      return facts.connections.total === 4 && facts.connections.active === 2;
    });
    expect(facts!.connections).toEqual({ total: 4, active: 2, idle: 1, idleInTransaction: 1 });
    expect(facts).toMatchObject({
      maxConnections: 100,
      settingSource: "configuration file", // initdb writes the value it chose into postgresql.conf
      pendingRestart: false,
      mayReadConfigFiles: true,
      alterSystemValue: undefined,
      superuserReservedConnections: 3,
      reservedConnections: 0,
      isSuperuser: true,
      mayAlterMaxConnections: true,
      allowAlterSystem: true,
    });
    expect(facts!.installedExtensions).toEqual(["plpgsql"]);
    expect(facts!.availableExtensions).toEqual(expect.arrayContaining(["plpgsql", "pg_stat_statements"]));
    await pools.withClient(target(server, "app", APP_PW, APP_DB), async (client) => {
      const asApp = await inspectServer(client);
      // pg_file_settings is the superuser's: an ordinary role cannot see what ALTER SYSTEM holds.
      expect(asApp).toMatchObject({ isSuperuser: false, mayReadConfigFiles: false, alterSystemValue: undefined });
    });
    await server.query("SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE application_name = 'matrix-active'");
  });

  it("instance facts on a primary: not in recovery, a WAL position, replay not paused", async () => {
    expect(cell("instance-facts").status).toBe("yes");
    const facts = await pools.withClient(superuser, inspectInstance);
    expect(facts).toMatchObject({ inRecovery: false, maxConnections: 100, pendingRestart: false, replayPaused: false });
    expect(facts.lsn).toBeGreaterThan(0n);
  });

  it("instance facts on a streaming replica", async () => {
    // pg_basebackup where Debian has one of this major or newer (13–15), else the harness's
    // low-level base backup (16–18): either way a real streaming replica of this major.
    expect(cell("replica-facts").status).toBe("yes");
    const replica = await PostgresServer.createReplica(server, { host: "127.0.0.2" });
    try {
      await server.query("CREATE TABLE replicated (n int); INSERT INTO replicated VALUES (1)");
      const primaryLsn = (await pools.withClient(superuser, inspectInstance)).lsn!;
      await waitFor("the replica to replay the primary's WAL", async () => {
        const facts = await pools.withClient(target(replica, replica.superuser, replica.password), inspectInstance);
        return facts.lsn !== undefined && facts.lsn >= primaryLsn;
      });
      const facts = await pools.withClient(target(replica, replica.superuser, replica.password), inspectInstance);
      expect(facts).toMatchObject({ inRecovery: true, replayPaused: false, maxConnections: 100 });
      await replica.query("SELECT pg_wal_replay_pause()");
      await waitFor("the replica to report its replay paused", async () => {
        return (await pools.withClient(target(replica, replica.superuser, replica.password), inspectInstance))
          .replayPaused;
      });
    } finally {
      await pools.discard(target(replica, replica.superuser, replica.password));
      await replica.destroy();
    }
  });

  it("ALTER SYSTEM by a superuser: pending until the restart, then in force and verified", async () => {
    expect(cell("alter-superuser").status).toBe("yes");
    const before = await pools.withClient(superuser, inspectServer);
    expect(plan(before, 120)).toMatchObject({
      alterTo: 120,
      requestRestart: { value: 120, after: before.postmasterStartTime },
      condition: { reason: "RestartInProgress" },
    });
    await pools.withClient(superuser, (client) => alterMaxConnections(client, 120));
    // pg_reload_conf() only signals the postmaster: pending_restart turns true once it re-read the files.
    await waitFor(
      "pending_restart after the reload",
      async () => (await pools.withClient(superuser, inspectServer)).pendingRestart,
    );
    const pending = await pools.withClient(superuser, inspectServer);
    expect(pending).toMatchObject({ maxConnections: 100, pendingRestart: true, alterSystemValue: 120 });
    await server.restart();
    const after = await pools.withClient(superuser, inspectServer);
    expect(after).toMatchObject({
      maxConnections: 120,
      settingSource: "configuration file",
      pendingRestart: false,
      alterSystemValue: 120,
    });
    expect(after.postmasterStartTime.getTime()).toBeGreaterThan(before.postmasterStartTime.getTime());
    const verified = plan(after, 120, { value: 120, after: before.postmasterStartTime });
    expect(verified).toMatchObject({ verifiedRestart: true, condition: { status: "True", reason: "Applied" } });
  });

  it("ALTER SYSTEM by a role without superuser: granted per parameter from 15, refused with the reason before", async () => {
    const declared = cell("alter-granted");
    const asOperator = () => pools.withClient(operator, inspectServer);
    expect(await asOperator()).toMatchObject({ isSuperuser: false, mayAlterMaxConnections: false });
    // Refused before the grant, on every major, with what to do for this one.
    const refused = await pools
      .withClient(operator, (client) => alterMaxConnections(client, 130))
      .then(
        () => undefined,
        (err: unknown) => err,
      );
    expect(refused).toBeInstanceOf(AlterSystemError);
    expect(refused).toMatchObject({ failure: "PermissionDenied", code: "42501" });
    const planned = plan(await asOperator(), 130);
    expect(planned.condition).toMatchObject({ status: "False", reason: "PermissionDenied" });
    expect(planned.alterTo).toBeUndefined();

    if (declared.status === "no") {
      expect((refused as Error).message).toContain(
        `On PostgreSQL ${major} only a superuser may run ALTER SYSTEM (GRANT ALTER SYSTEM ON PARAMETER exists from PostgreSQL 15)`,
      );
      // The grant itself does not exist in this major.
      await expect(server.query("GRANT ALTER SYSTEM ON PARAMETER max_connections TO operator")).rejects.toThrow(
        /syntax error/,
      );
      return;
    }
    expect(declared.status).toBe("yes");
    expect((refused as Error).message).toContain(
      "Grant it with `GRANT ALTER SYSTEM ON PARAMETER max_connections TO <role>` and `GRANT EXECUTE ON FUNCTION pg_reload_conf() TO <role>`",
    );
    // The parameter's grant alone: ALTER SYSTEM would pass and the reload after it be refused.
    await server.query("GRANT ALTER SYSTEM ON PARAMETER max_connections TO operator");
    expect(await asOperator()).toMatchObject({ mayAlterMaxConnections: false });
    const reloadRefused = await pools
      .withClient(operator, (client) => alterMaxConnections(client, 125))
      .then(
        () => undefined,
        (err: unknown) => err,
      );
    expect(reloadRefused).toMatchObject({ failure: "PermissionDenied", code: "42501" });
    expect((reloadRefused as Error).message).toContain(
      "changed max_connections with ALTER SYSTEM but may not reload the configuration: permission denied for function pg_reload_conf. Grant it with `GRANT EXECUTE ON FUNCTION pg_reload_conf() TO <role>`",
    );
    await server.query("GRANT EXECUTE ON FUNCTION pg_reload_conf() TO operator");
    const granted = await asOperator();
    expect(granted).toMatchObject({ isSuperuser: false, mayAlterMaxConnections: true, mayReadConfigFiles: false });
    expect(plan(granted, 130)).toMatchObject({ alterTo: 130 });
    await pools.withClient(operator, (client) => alterMaxConnections(client, 130));
    await waitFor("pending_restart after the reload", async () => (await asOperator()).pendingRestart);
    expect(await asOperator()).toMatchObject({ maxConnections: 120, pendingRestart: true });
    const start = granted.postmasterStartTime;
    await server.restart();
    const after = await asOperator();
    expect(after).toMatchObject({ maxConnections: 130, pendingRestart: false });
    expect(plan(after, 130, { value: 130, after: start })).toMatchObject({ verifiedRestart: true });
  });

  it("the reaper terminates exactly the sessions idle in transaction past the limit", async () => {
    expect(cell("reaper").status).toBe("yes");
    const LIMIT_MS = 2_000;
    // Start from an app database without sessions: earlier tests' would be candidates too.
    await server.query(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '${APP_DB}'`);
    await server.query("CREATE DATABASE otherdb");
    await server.query(`CREATE ROLE replicator LOGIN PASSWORD '${APP_PW}'`);
    const target1 = await idleInTransaction(server, "app", APP_PW, "web");
    const target2 = await idleInTransaction(server, "app", APP_PW, "web");
    // "idle in transaction (aborted)": a statement failed inside the transaction.
    const aborted = await idleInTransaction(server, "app", APP_PW, "web");
    await aborted.client.query("SELECT 1/0").catch(() => undefined);
    const young = await idleInTransaction(server, "app", APP_PW, "web");
    const otherDb = await idleInTransaction(server, "app", APP_PW, "web", "otherdb");
    const excludedApp = await idleInTransaction(server, "app", APP_PW, "pg_dump");
    const excludedUser = await idleInTransaction(server, "replicator", APP_PW, "web");
    const ofSuperuser = await idleInTransaction(server, server.superuser, server.password, "admin");
    const idle = await session(server, "app", APP_PW, "web");
    const active = await session(server, "app", APP_PW, "web");
    open.push(target1.client, target2.client, aborted.client, young.client, otherDb.client, excludedApp.client);
    open.push(excludedUser.client, ofSuperuser.client, idle, active);
    void active.query("SELECT pg_sleep(600)").catch(() => undefined);
    // Let the older ones age by the limit, then make one young again. With the wait equal to the
    // limit, the old ones are past it whenever the reap runs, and the young one stays under it
    // unless the two reaps take longer than the limit itself.
    await new Promise((r) => setTimeout(r, LIMIT_MS));
    await young.client.query("SELECT 1"); // a statement inside the transaction resets state_change
    const options = {
      database: APP_DB,
      idleLongerThanMs: LIMIT_MS,
      excludeUsers: ["replicator"],
      excludeApplicationNames: ["pg_dump"],
    };
    const asOperator = target(server, "operator", OPERATOR_PW, APP_DB);
    const dry = await pools.withClient(asOperator, (c) => reapIdleInTransaction(c, { ...options, dryRun: true }));
    const targets = [target1.pid, target2.pid, aborted.pid].sort();
    expect(
      await server.query<{ state: string }>("SELECT state FROM pg_stat_activity WHERE pid = $1", [aborted.pid]),
    ).toEqual([{ state: "idle in transaction (aborted)" }]);
    expect(dry.map((s) => s.pid).sort()).toEqual(targets);
    expect(dry.every((s) => !s.terminated)).toBe(true);
    const reaped = await pools.withClient(asOperator, (c) => reapIdleInTransaction(c, { ...options, dryRun: false }));
    expect(reaped.map((s) => s.pid).sort()).toEqual(targets);
    expect(reaped.every((s) => s.terminated && s.user === "app" && s.applicationName === "web")).toBe(true);
    await waitFor("the three to be gone", async () => {
      for (const pid of targets) if (await alive(server, pid)) return false;
      return true;
    });
    for (const spared of [young, otherDb, excludedApp, excludedUser, ofSuperuser]) {
      expect(await alive(server, spared.pid), `pid ${spared.pid}`).toBe(true);
    }
    await server.query("SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(600)'");
  });

  it("idle_in_transaction_session_timeout, server-wide and per role: the server ends the session itself", async () => {
    expect(cell("server-timeout").status).toBe("yes");
    // pg_reload_conf() only signals: a new session sees the value once the postmaster re-read it.
    const inForce = (value: string) =>
      waitFor(`new sessions to see idle_in_transaction_session_timeout = ${value}`, async () => {
        return (await server.setting("idle_in_transaction_session_timeout")) === value;
      });
    expect(await pools.withClient(superuser, (client) => ensureServerTimeout(client, 600))).toBe(true);
    try {
      await inForce("600ms");
      expect(await pools.withClient(superuser, (client) => ensureServerTimeout(client, 600))).toBe(false);
      const victim = await idleInTransaction(server, "app", APP_PW, "slow");
      open.push(victim.client);
      await waitFor("the server to end the idle transaction", async () => !(await alive(server, victim.pid)));
      await expect(victim.client.query("SELECT 1")).rejects.toThrow();
    } finally {
      await pools.withClient(superuser, (client) => ensureServerTimeout(client, 0));
      await inForce("0");
    }
    await pools.withClient(superuser, async (client) => {
      expect(await ensureRoleTimeouts(client, ["app"], 700)).toEqual(["app"]);
      expect(await ensureRoleTimeouts(client, ["app"], 700)).toEqual([]);
    });
    const fresh = await session(server, "app", APP_PW, "fresh");
    open.push(fresh);
    expect((await fresh.query("SHOW idle_in_transaction_session_timeout")).rows[0]).toEqual({
      idle_in_transaction_session_timeout: "700ms",
    });
    await server.query("ALTER ROLE app RESET idle_in_transaction_session_timeout");
  });

  it("poolpolicy diagnose and reap against a plain DSN", async () => {
    expect(cell("cli-dsn").status).toBe("yes");
    const dsn = `postgres://app:${APP_PW}@${server.host}:${server.port}/${APP_DB}?sslmode=disable`;
    const diagnosed = await runCli(["diagnose", "--dsn", dsn, "--idle-threshold", "1h", "--json"]);
    expect(diagnosed.stderr).toBe("");
    const report = JSON.parse(diagnosed.stdout) as DiagnoseReport;
    expect(diagnosed.exitCode).toBe(0);
    expect(report.postgres).toMatchObject({ reachable: true, isSuperuser: false });
    expect((report.postgres as { version: string }).version).toMatch(new RegExp(`^${major}\\.`));
    expect(JSON.stringify(report)).not.toContain(APP_PW);

    const stuck = await idleInTransaction(server, "app", APP_PW, "stuck");
    open.push(stuck.client);
    await new Promise((r) => setTimeout(r, 1_200));
    const superDsn = `postgres://postgres:${server.password}@${server.host}:${server.port}/${APP_DB}?sslmode=disable`;
    const reaped = await runCli(["reap", "--dsn", superDsn, "--older-than", "1s", "--execute", "--json"]);
    expect(reaped.exitCode).toBe(0);
    const reapReport = JSON.parse(reaped.stdout) as ReapReport;
    expect(reapReport.sessions.map((s) => s.pid)).toContain(stuck.pid);
    expect(reapReport.terminated).toBe(reapReport.sessions.length);
    await waitFor("the stuck session to be gone", async () => !(await alive(server, stuck.pid)));
  });

  it("an app role held to its share by a CREATEROLE operator (16+: with ADMIN OPTION), sessions beyond it refused", async () => {
    const declared = cell("role-limit");
    expect(declared.status).toBe("yes");
    const SHOP_PW = "shop-pw-5e1a";
    await server.query(`CREATE ROLE shop_app LOGIN PASSWORD '${SHOP_PW}'`);
    await server.query("ALTER ROLE operator CREATEROLE");
    const roleAsOperator = (name: string) => pools.withClient(operator, (c) => inspectRole(c, name));
    expect(await roleAsOperator("shop_app")).toEqual({
      name: "shop_app",
      exists: true,
      superuser: false,
      isOperator: false,
      connectionLimit: -1,
      connections: 0,
    });
    expect(await roleAsOperator("operator")).toMatchObject({ isOperator: true, superuser: false });
    expect(await roleAsOperator(server.superuser)).toMatchObject({ superuser: true });
    expect(await roleAsOperator("no_such_role")).toMatchObject({ exists: false });

    const setTo = (limit: number) => pools.withClient(operator, (c) => setConnectionLimit(c, "shop_app", limit));
    if (major >= 16) {
      // CREATEROLE alone no longer lets a role alter roles it did not create.
      await expect(setTo(2)).rejects.toMatchObject({ reason: "PermissionDenied", code: "42501" });
      expect(declared.reason).toContain("ADMIN OPTION");
      await server.query("GRANT shop_app TO operator WITH ADMIN OPTION");
    } else {
      expect(declared.reason).toBeUndefined();
    }
    await setTo(2);
    const inside = [await session(server, "shop_app", SHOP_PW, "a"), await session(server, "shop_app", SHOP_PW, "b")];
    open.push(...inside);
    await expect(session(server, "shop_app", SHOP_PW, "c")).rejects.toThrow('too many connections for role "shop_app"');
    expect(await roleAsOperator("shop_app")).toMatchObject({ connectionLimit: 2, connections: 2 });
    // A login without pg_read_all_stats sees other roles' sessions without their backend_type: still counted.
    await server.query("CREATE ROLE viewer LOGIN PASSWORD 'viewer-pw-7d2f'");
    const viewer = target(server, "viewer", "viewer-pw-7d2f");
    expect(await pools.withClient(viewer, (c) => inspectRole(c, "shop_app"))).toMatchObject({ connections: 2 });
    // Another role is not held by it.
    open.push(await session(server, "app", APP_PW, "other"));
    await setTo(-1);
    expect(await roleAsOperator("shop_app")).toMatchObject({ connectionLimit: -1 });
    for (const c of inside) await c.end();
  });

  it("role names that need quoting: the limit lands on exactly the named role (fuzzed)", async () => {
    await server.query("CREATE ROLE canary CONNECTION LIMIT 3");
    const reserved = new Set(["public", "none", "current_user", "session_user", "current_role"]);
    const nasty = fc.constantFrom(
      'x"; DROP ROLE canary; --',
      "Mixed Case",
      "with  spaces",
      "it's",
      'a""b',
      "back\\slash",
      "ünïcødé",
      "$1",
      "canary ",
      "CANARY",
    );
    const names = fc
      .oneof(nasty, fc.string({ minLength: 1, maxLength: 24 }))
      .filter(
        (n) =>
          !n.includes("\u0000") &&
          Buffer.byteLength(n) <= 63 &&
          !n.startsWith("pg_") &&
          !reserved.has(n) &&
          !["canary", "app", "operator", server.superuser].includes(n),
      );
    await fc.assert(
      fc.asyncProperty(names, fc.integer({ min: 0, max: 50 }), async (name, limit) => {
        // Created and dropped with the server's own quoting (format %I), not the driver's under test.
        const ddl = async (verb: string) => {
          const [row] = await server.query<{ sql: string }>(`SELECT format('${verb} ROLE %I', $1::text) AS sql`, [
            name,
          ]);
          await server.query(row!.sql);
        };
        await ddl("CREATE");
        try {
          await pools.withClient(superuser, (c) => setConnectionLimit(c, name, limit));
          const role = await pools.withClient(superuser, (c) => inspectRole(c, name));
          expect(role).toMatchObject({ name, exists: true, connectionLimit: limit });
          const [canary] = await server.query<{ rolconnlimit: number }>(
            "SELECT rolconnlimit FROM pg_roles WHERE rolname = 'canary'",
          );
          expect(canary?.rolconnlimit).toBe(3);
        } finally {
          await ddl("DROP");
        }
      }),
      { numRuns: 40 },
    );
  });
});

/**
 * A server whose every ordinary slot is taken: max_connections 10, of which 3 are the
 * superuser's and, from 16, 2 are reserved_connections for pg_use_reserved_connections; on 17+
 * ALTER SYSTEM is switched off as well (it exists there only).
 */
describe.each(majors)("PostgreSQL %i, a full server", (major) => {
  const cell = (feature: string): Cell => supportCell(support, feature, major);
  const pools = new PostgresPools({ applicationName: "poolpolicy-matrix", connectTimeoutMs: 5_000 });
  const open: pg.Client[] = [];
  let server: PostgresServer;
  let ordinarySlots = 0;

  beforeAll(async () => {
    const conf: Record<string, string | number> = { max_connections: 10, superuser_reserved_connections: 3 };
    if (major >= 16) conf.reserved_connections = 2;
    if (major >= 17) conf.allow_alter_system = "off";
    server = await PostgresServer.create({ major, conf });
    await server.query(`CREATE DATABASE ${APP_DB}`);
    await server.query(`CREATE ROLE app LOGIN PASSWORD '${APP_PW}'`);
    await server.query(`CREATE ROLE operator LOGIN PASSWORD '${OPERATOR_PW}'`);
    await server.query("GRANT pg_read_all_stats TO operator"); // to count others' sessions
    if (major >= 16) await server.query("GRANT pg_use_reserved_connections TO operator");
    // Fill every ordinary slot. The harness's superuser connections are closed by now, but their
    // backends may take a moment to exit: wait until the count of client backends is zero.
    await waitFor("no client backend left", async () => {
      const [row] = await server.query<{ n: number }>(
        "SELECT count(*)::int - 1 AS n FROM pg_stat_activity WHERE backend_type = 'client backend'",
      );
      return row!.n === 0;
    });
    for (;;) {
      try {
        open.push(await session(server, "app", APP_PW, `filler-${ordinarySlots}`));
        ordinarySlots += 1;
      } catch (err) {
        expect((err as Error).message).toMatch(/too many clients|remaining connection slots are reserved/);
        break;
      }
      if (ordinarySlots > 10) throw new Error("more ordinary sessions than max_connections: the server is not full");
    }
  });

  afterAll(async () => {
    for (const c of open) await c.end().catch(() => undefined);
    await pools.closeAll();
    await server?.destroy();
  });

  it("every ordinary slot is taken: 10 − 3 superuser slots − reserved_connections (16+)", () => {
    expect(ordinarySlots).toBe(major >= 16 ? 5 : 7);
  });

  it("an ordinary role is refused with what to do", async () => {
    const err = await pools
      .withClient(target(server, "app", APP_PW, APP_DB), async () => undefined)
      .then(
        () => undefined,
        (e: unknown) => e,
      );
    expect(err).toBeInstanceOf(PostgresError);
    expect(err).toMatchObject({ reason: "TooManyConnections", code: "53300" });
    expect((err as Error).message).toContain(
      "the operator's role should own a reserved slot: a superuser, or on PostgreSQL 16+ a member of pg_use_reserved_connections",
    );
  });

  it("the operator's non-superuser role gets in on a reserved slot (pg_use_reserved_connections, 16+)", async () => {
    const declared = cell("reserved-role");
    const asOperator = target(server, "operator", OPERATOR_PW);
    if (declared.status === "no") {
      await expect(pools.withClient(asOperator, inspectServer)).rejects.toMatchObject({ reason: "TooManyConnections" });
      return;
    }
    expect(declared.status).toBe("yes");
    const facts = await pools.withClient(asOperator, inspectServer);
    expect(facts).toMatchObject({ isSuperuser: false, maxConnections: 10, reservedConnections: 2 });
    expect(facts.connections.total).toBe(ordinarySlots + 1);
  });

  it("a superuser operator gets in on superuser_reserved_connections", async () => {
    expect(cell("reserved-superuser").status).toBe("yes");
    const facts = await pools.withClient(target(server, server.superuser, server.password), inspectServer);
    expect(facts).toMatchObject({ isSuperuser: true, maxConnections: 10, superuserReservedConnections: 3 });
    expect(facts.reservedConnections).toBe(major >= 16 ? 2 : 0);
  });

  it("allow_alter_system = off (17+): AlterSystemDisabled, with what to do", async () => {
    const declared = cell("alter-disabled");
    const asSuperuser = target(server, server.superuser, server.password);
    const facts = await pools.withClient(asSuperuser, inspectServer);
    if (declared.status === "n/a") {
      // The setting does not exist before 17: ALTER SYSTEM is always allowed there.
      expect(facts.allowAlterSystem).toBe(true);
      expect(await server.query("SELECT 1 FROM pg_settings WHERE name = 'allow_alter_system'")).toEqual([]);
      return;
    }
    expect(declared.status).toBe("yes");
    expect(facts.allowAlterSystem).toBe(false);
    expect(plan(facts, 40).condition).toMatchObject({
      status: "False",
      reason: "AlterSystemDisabled",
      message: expect.stringMatching(
        /^ALTER SYSTEM is disabled on this server \(allow_alter_system = off\): set max_connections where .* or set allow_alter_system = on$/,
      ),
    });
    const attempts: ((c: pg.PoolClient) => Promise<unknown>)[] = [
      (c) => alterMaxConnections(c, 40),
      (c) => ensureServerTimeout(c, 60_000),
    ];
    for (const attempt of attempts) {
      const err = await pools.withClient(asSuperuser, attempt).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(AlterSystemError);
      expect(err).toMatchObject({ failure: "AlterSystemDisabled" });
      expect((err as Error).message).toMatch(
        /^ALTER SYSTEM is disabled on this server \(allow_alter_system = off\): set (max_connections|idle_in_transaction_session_timeout) in the server's configuration \(postgresql\.conf, or the parameters of whatever manages PostgreSQL\) and (restart|reload) it, or set allow_alter_system = on$/,
      );
    }
  });
});
