/**
 * The pooler's sizes against the real thing (issue 17, proof): a real PostgreSQL with
 * max_connections 50, real PgBouncer processes (Debian's package) running the config the
 * operator's renderer produces from the planner's sizes, 300 app clients through them.
 *
 * No control plane is used here: the planner's inputs are the numbers the budget would give
 * (10 direct connections held open, the reserve of 3 superuser slots + 2 for the operator), and
 * two PgBouncer processes stand in for the pooler's worst case of 2 pods (1 replica + a surge
 * of 1: old and new pod of a rollout, each holding its own server connections).
 *
 * What must hold: no client sees "too many clients" or any other error; clients wait instead
 * (PgBouncer's SHOW STATS counts the wait); the pooler's server connections, sampled from
 * pg_stat_activity and from each process's SHOW POOLS, never exceed pods × per-pod share; a
 * resize (replicas 1 → 3) is applied by RELOAD (+ RECONNECT, as reloadCommands says) under
 * load without dropping a client, and SHOW CONFIG and SHOW POOLS reflect it.
 */
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type PgBouncerConfig, reloadCommands, renderPgBouncerConfig } from "../../../src/pooler/pgbouncer-config.js";
import { type PoolerPlanInput, type PoolerSizing, planPooler } from "../../../src/server/pooler-plan.js";
import { PgBouncerProcess } from "../../harness/pgbouncer.js";
import { freePort } from "../../harness/ports.js";
import { PostgresServer } from "../../harness/postgres.js";
import { waitFor } from "../../harness/processes.js";

type Rendered = Extract<PgBouncerConfig, { ok: true }>;

const MAX_CONNECTIONS = 50;
const DIRECT = 10;
const APP_CLIENTS = 300;
const DATABASE = "appdb";

let server: PostgresServer;
const bouncers: PgBouncerProcess[] = [];
const direct: pg.Client[] = [];
const configs = new Map<PgBouncerProcess, Rendered>();

function plan(replicas: number): PoolerSizing {
  const input: PoolerPlanInput = {
    maxConnections: MAX_CONNECTIONS,
    reserved: 3 + 2, // superuser_reserved_connections + the operator's own pool (OPERATOR_POOL_SIZE)
    direct: DIRECT,
    throughPooler: APP_CLIENTS,
    pods: { replicas, strategy: { type: "RollingUpdate", rollingUpdate: { maxSurge: 1 } } },
    databases: 1,
    minServerConnectionsPerPod: 2,
    reservePoolSize: 0,
  };
  const p = planPooler(input, `127.0.0.1:${server.port}`);
  if (p.kind !== "sized") throw new Error(p.message);
  return p;
}

function render(sizing: PoolerSizing, port: number, authFile: string): Rendered {
  const c = renderPgBouncerConfig({
    target: { ...server.connection, database: DATABASE, sslMode: "disable" },
    databases: [DATABASE],
    sizing,
    poolMode: "Session",
    listen: { address: "127.0.0.1", port },
    authFile,
  });
  if (!c.ok) throw new Error(c.message);
  return c;
}

/** The server connections one PgBouncer holds to the app database, from its SHOW POOLS. */
async function serverConnectionsOf(b: PgBouncerProcess): Promise<number> {
  const rows = await b.adminQuery<Record<string, string | number>>("SHOW POOLS");
  const fields = ["sv_active", "sv_active_cancel", "sv_being_canceled", "sv_idle", "sv_used", "sv_tested", "sv_login"];
  return rows
    .filter((r) => r.database === DATABASE)
    .reduce((sum, r) => sum + fields.reduce((s, f) => s + Number(r[f] ?? 0), 0), 0);
}

/** Samples, until stopped, the pooler's connections as PostgreSQL and as each PgBouncer count them. */
function sampler() {
  let running = true;
  const seen = { server: 0, perBouncer: bouncers.map(() => 0), samples: 0 };
  const done = (async () => {
    const client = new pg.Client({ ...server.connection, connectionTimeoutMillis: 5_000 });
    await client.connect();
    try {
      while (running) {
        const [row] = (
          await client.query<{ n: number }>(
            "SELECT count(*)::int AS n FROM pg_stat_activity WHERE backend_type = 'client backend' AND datname = $1",
            [DATABASE],
          )
        ).rows;
        seen.server = Math.max(seen.server, row!.n);
        const counts = await Promise.all(bouncers.map(serverConnectionsOf));
        counts.forEach((n, i) => {
          seen.perBouncer[i] = Math.max(seen.perBouncer[i]!, n);
        });
        seen.samples += 1;
        await new Promise((r) => setTimeout(r, 20));
      }
    } finally {
      await client.end();
    }
  })();
  return {
    seen,
    async stop() {
      running = false;
      await done;
      return seen;
    },
  };
}

/** APP_CLIENTS clients spread over the poolers, each: connect, `queries` short queries, disconnect. */
function wave(queries: number) {
  const progress = { finished: 0, errors: [] as string[] };
  const done = Promise.all(
    Array.from({ length: APP_CLIENTS }, async (_, i) => {
      const b = bouncers[i % bouncers.length]!;
      const client = new pg.Client({
        host: "127.0.0.1",
        port: b.port,
        user: "app",
        password: "app-pw",
        database: DATABASE,
      });
      client.on("error", (err) => progress.errors.push(`client ${i}: ${err.message}`));
      try {
        await client.connect();
        for (let q = 0; q < queries; q++) await client.query("SELECT pg_sleep(0.01)");
      } catch (err) {
        progress.errors.push(`client ${i}: ${(err as Error).message}`);
      } finally {
        await client.end().catch(() => undefined);
        progress.finished += 1;
      }
    }),
  );
  return { progress, done };
}

beforeAll(async () => {
  server = await PostgresServer.create({
    conf: { max_connections: MAX_CONNECTIONS, superuser_reserved_connections: 3 },
  });
  await server.query("CREATE ROLE app LOGIN PASSWORD 'app-pw'");
  await server.query("CREATE ROLE direct LOGIN PASSWORD 'direct-pw'");
  await server.query(`CREATE DATABASE ${DATABASE} OWNER app`);
  // The direct apps' worst case, held for the whole test.
  for (let i = 0; i < DIRECT; i++) {
    const c = new pg.Client({ ...server.connection, user: "direct", password: "direct-pw" });
    await c.connect();
    direct.push(c);
  }
  const sizing = plan(1);
  for (let pod = 0; pod < sizing.pods; pod++) {
    const port = await freePort();
    let rendered: Rendered | undefined;
    const b = await PgBouncerProcess.start(
      port,
      { user: server.superuser, password: server.password },
      ({ authFile }) => {
        rendered = render(sizing, port, authFile);
        return rendered;
      },
    );
    bouncers.push(b);
    configs.set(b, rendered!);
  }
});

afterAll(async () => {
  await Promise.all(direct.map((c) => c.end().catch(() => undefined)));
  for (const b of bouncers) await b.stop();
  await server?.destroy();
});

describe("PgBouncer sized from the budget, on a server with max_connections 50", () => {
  it("takes 300 clients onto the planned share: none fails, they wait, the server's count stays within the plan", async () => {
    const sizing = plan(1);
    // 50 − 5 reserved − 10 direct = 35 left, over 2 worst-case pods: 17 each.
    expect(sizing).toMatchObject({ pods: 2, perPod: 17, maxDbConnections: 17, maxClientConn: 305 });
    expect(bouncers).toHaveLength(sizing.pods);

    const sample = sampler();
    const w = wave(5);
    await w.done;
    const seen = await sample.stop();

    expect(w.progress.errors).toEqual([]);
    expect(w.progress.finished).toBe(APP_CLIENTS);
    expect(seen.samples).toBeGreaterThan(0);
    expect(seen.server).toBeGreaterThan(0);
    expect(seen.server).toBeLessThanOrEqual(sizing.pods * sizing.perPod);
    for (const n of seen.perBouncer) expect(n).toBeLessThanOrEqual(sizing.perPod);
    expect(seen.server + DIRECT + 5).toBeLessThanOrEqual(MAX_CONNECTIONS);
    // Clients waited for a server connection instead of being refused.
    for (const b of bouncers) {
      const stats = await b.adminQuery<{ database: string; total_wait_time: string }>("SHOW STATS");
      const waited = stats
        .filter((s) => s.database === DATABASE)
        .reduce((sum, s) => sum + Number(s.total_wait_time), 0);
      expect(waited).toBeGreaterThan(0);
    }
    // The direct apps kept their connections throughout.
    for (const c of direct) expect((await c.query("SELECT 1 AS one")).rows).toEqual([{ one: 1 }]);
  });

  it("applies a smaller share (replicas 1 → 3) by RELOAD under load without dropping a client", async () => {
    const after = plan(3);
    // 3 replicas + 1 surge = 4 worst-case pods: ⌊35 / 4⌋ = 8 each.
    expect(after).toMatchObject({ pods: 4, perPod: 8, maxDbConnections: 8 });

    const w = wave(20);
    await waitFor("the first clients of the wave to finish", () => w.progress.finished >= 20, { timeoutMs: 60_000 });
    const inFlightAtReload = APP_CLIENTS - w.progress.finished;
    for (const b of bouncers) {
      const current = configs.get(b)!;
      const next = render(after, b.port, PgBouncerProcess.paths(b.dir).authFile);
      const commands = reloadCommands(current, next);
      expect(commands).toEqual(["RELOAD", "RECONNECT"]);
      b.write(next);
      for (const command of commands) await b.adminQuery(command);
      configs.set(b, next);
    }
    await w.done;
    expect(inFlightAtReload).toBeGreaterThan(0);
    expect(w.progress.errors).toEqual([]);
    expect(w.progress.finished).toBe(APP_CLIENTS);

    for (const b of bouncers) {
      const config = await b.config();
      expect([config.max_db_connections, config.default_pool_size, config.max_client_conn]).toEqual([
        String(after.maxDbConnections),
        String(after.defaultPoolSize),
        String(after.maxClientConn),
      ]);
      // Once the clients of the old share left, no pooler holds more than the new one.
      await waitFor(`pgbouncer on ${b.port} to hold at most ${after.perPod} server connections`, async () => {
        return (await serverConnectionsOf(b)) <= after.perPod;
      });
    }

    const sample = sampler();
    const again = wave(5);
    await again.done;
    const seen = await sample.stop();
    expect(again.progress.errors).toEqual([]);
    expect(seen.server).toBeGreaterThan(0);
    for (const n of seen.perBouncer) expect(n).toBeLessThanOrEqual(after.perPod);
    expect(seen.server).toBeLessThanOrEqual(bouncers.length * after.perPod);
    // SHOW POOLS answers per pool with the new mode and no client left waiting.
    const pools = await bouncers[0]!.adminQuery<{ database: string; cl_waiting: number; pool_mode: string }>(
      "SHOW POOLS",
    );
    const app = pools.filter((p) => p.database === DATABASE);
    expect(app.length).toBeGreaterThan(0);
    for (const p of app) expect([p.pool_mode, Number(p.cl_waiting)]).toEqual(["session", 0]);
  });
});
