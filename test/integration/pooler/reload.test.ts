/**
 * The pooler pod's reload watcher (pgbouncerCommand in src/pooler/pooler-objects.ts) on a real
 * PgBouncer and a real PostgreSQL: the container's command, run as it is, with the files replaced
 * the way the kubelet updates a mounted ConfigMap or Secret (whole, by a rename).
 *
 * What must hold: a growth of the per-pod share written to pgbouncer.ini is in force in the same
 * process (SHOW CONFIG) with no client dropped (its backend is the same); a new password of the
 * auth_user written to the auth_file is taken (the admin console accepts it), so app logins,
 * whose auth_query runs as the auth_user, go on after the rotation; the watcher goes with
 * PgBouncer. With the bare `pgbouncer` command, as the pods ran before, neither file is taken
 * (checked to fail so: SHOW CONFIG keeps 11, the admin console refuses the new password).
 *
 * The watcher looks every second here (5 s in the pods); the kubelet's own delay before it
 * writes the files (up to about a minute) is not part of this test.
 */
import { readdirSync, readFileSync } from "node:fs";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { renderPgBouncerConfig } from "../../../src/pooler/pgbouncer-config.js";
import { type PoolerSizing, planPooler } from "../../../src/server/pooler-plan.js";
import { PgBouncerProcess, type RenderedConfig } from "../../harness/pgbouncer.js";
import { freePort } from "../../harness/ports.js";
import { PostgresServer } from "../../harness/postgres.js";
import { waitFor } from "../../harness/processes.js";

const DATABASE = "appdb";
/** PgBouncer's auth_user and admin: a superuser of its own, so that its password can rotate. */
const AUTH_USER = "pooler_auth";

let server: PostgresServer;
let bouncer: PgBouncerProcess;
let port: number;
let authFile: string;

function sizing(replicas: number): PoolerSizing {
  const p = planPooler(
    {
      maxConnections: 50,
      reserved: 5,
      direct: 0,
      throughPooler: 40,
      pods: { replicas, strategy: { type: "RollingUpdate", rollingUpdate: { maxSurge: 1 } } },
      databases: 1,
      minServerConnectionsPerPod: 2,
      reservePoolSize: 0,
    },
    `127.0.0.1:${server.port}`,
  );
  if (p.kind !== "sized") throw new Error(p.message);
  return p;
}

function render(replicas: number, password: string): RenderedConfig {
  const c = renderPgBouncerConfig({
    target: { ...server.connection, user: AUTH_USER, password, database: DATABASE, sslMode: "disable" },
    databases: [DATABASE],
    sizing: sizing(replicas),
    poolMode: "Session",
    listen: { address: "127.0.0.1", port },
    authFile,
  });
  if (!c.ok) throw new Error(c.message);
  return c;
}

function appClient(): pg.Client {
  const client = new pg.Client({
    host: "127.0.0.1",
    port,
    user: "app",
    password: "app-pw",
    database: DATABASE,
    connectionTimeoutMillis: 5_000,
  });
  client.on("error", () => undefined);
  return client;
}

/** Pids of live processes whose command line names this test's pgbouncer.ini (PgBouncer and its watcher). */
function processesOnOurIni(): number[] {
  const ini = PgBouncerProcess.paths(bouncer.dir).ini;
  return readdirSync("/proc")
    .filter((entry) => /^\d+$/.test(entry))
    .filter((pid) => {
      try {
        return readFileSync(`/proc/${pid}/cmdline`, "utf8").includes(ini);
      } catch {
        return false; // gone meanwhile
      }
    })
    .map(Number);
}

beforeAll(async () => {
  server = await PostgresServer.create({ conf: { max_connections: 50 } });
  await server.query(`CREATE ROLE ${AUTH_USER} SUPERUSER LOGIN PASSWORD 'first-pw'`);
  await server.query("CREATE ROLE app LOGIN PASSWORD 'app-pw'");
  await server.query(`CREATE DATABASE ${DATABASE} OWNER app`);
  port = await freePort();
  bouncer = await PgBouncerProcess.start(
    port,
    { user: AUTH_USER, password: "first-pw" },
    (paths) => {
      authFile = paths.authFile;
      return render(3, "first-pw");
    },
    { asInThePod: { pollSeconds: 1 } },
  );
});

afterAll(async () => {
  await bouncer?.stop();
  await server?.destroy();
});

describe("the pooler pod's command: PgBouncer and its reload watcher", () => {
  it("takes a growth of the share from the replaced pgbouncer.ini in the same process, no client dropped", async () => {
    // 3 replicas + 1 surge: ⌊45 / 4⌋ = 11 each; 1 replica + 1 surge: 22 each.
    expect([sizing(3).maxDbConnections, sizing(1).maxDbConnections]).toEqual([11, 22]);
    expect((await bouncer.config()).max_db_connections).toBe("11");
    const pid = bouncer.pid;
    const client = appClient();
    await client.connect();
    const backend = async () => (await client.query<{ pid: number }>("SELECT pg_backend_pid() AS pid")).rows[0]!.pid;
    const before = await backend();

    bouncer.write(render(1, "first-pw"));
    await waitFor(
      "SHOW CONFIG with max_db_connections 22",
      async () => (await bouncer.config()).max_db_connections === "22",
      { timeoutMs: 30_000 },
    );
    expect(bouncer.pid).toBe(pid);
    expect(await backend()).toBe(before);
    await client.end();
  });

  it("takes a new password of the auth_user from the replaced auth_file, so app logins go on after the rotation", async () => {
    await server.query(`ALTER ROLE ${AUTH_USER} PASSWORD 'second-pw'`);
    bouncer.write(render(1, "second-pw"));
    bouncer.admin = { user: AUTH_USER, password: "second-pw" };
    // The admin console checks its logins against the auth_file: the new password is in force.
    await waitFor("the admin console to take the new password", async () => (await bouncer.config()) !== undefined, {
      timeoutMs: 30_000,
    });
    // PgBouncer's login as the auth_user must happen again: end the one it holds.
    await server.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1", [AUTH_USER]);
    await waitFor(
      "an app login through PgBouncer (its auth_query runs as the auth_user, with the new password)",
      async () => {
        const client = appClient();
        try {
          await client.connect();
          return (await client.query("SELECT 1 AS one")).rows[0]?.one === 1;
        } finally {
          await client.end().catch(() => undefined);
        }
      },
      { timeoutMs: 30_000 },
    );
    expect((await bouncer.config()).auth_user).toBe(AUTH_USER);
  });

  it("ends the watcher with PgBouncer", async () => {
    expect(processesOnOurIni().length).toBeGreaterThanOrEqual(2);
    await bouncer.stop();
    await waitFor("no process left on the pooler's files", () => processesOnOurIni().length === 0, {
      timeoutMs: 10_000,
    });
  });
});
