/**
 * Items 5 and 6: the operator's dependencies fail under it.
 *
 * 5a breaks PostgreSQL DURING a reconcile: a lock makes the operator's inspection query wait
 *    inside PostgreSQL, then the server is shut down under it (and stays down).
 *    Promises: PostgresReachable=False with a reason, reconciles bounded while it is down, the
 *    same process throughout, recovery once PostgreSQL is back.
 * 5b breaks the credentials: a wrong password in the Secret, then a rotation (new password in
 *    PostgreSQL first, then in the Secret).
 *    Promises: AuthenticationFailed, login attempts bounded (counted in PostgreSQL's own log),
 *    Connected again after the rotation, no crash. The passwords appear nowhere (item 11).
 * 5c breaks Redis (required by the policy): Ready=False RedisUnavailable, then recovery.
 * 6  takes every connection slot with a non-superuser's sessions (some idle in transaction)
 *    and cuts the operator's own connections: it must reconnect through a reserved slot and
 *    reap the idle-in-transaction sessions, which frees slots for the apps again.
 *
 * failures.test.ts covers the conditions of a missing Secret, a wrong password and Redis down
 * with the operator as admin; these add the failure in flight, the bounds, and the full slots.
 */
import { afterAll, beforeAll, describe, expect } from "vitest";
import pg from "pg";
import {
  FaultCluster,
  counterDelta,
  operatorCounters,
  perMinute,
  postgresLog,
  queryServer,
  sleep,
  timeUntil,
} from "../../harness/faults.js";
import { waitFor } from "../../harness/processes.js";
import { RedisServer } from "../../harness/redis.js";
import type { OperatorProcess } from "../../harness/operator.js";
import { APP_DATABASE, Scenario } from "../operator/scenario.js";
import { faultSuite } from "./support.js";

/** How long a fault is held while the operator's retries are counted. */
const WINDOW_MS = 15_000;
const pw = (label: string) => `${label}-${Math.random().toString(36).slice(2)}${Date.now().toString(36)}`;

let cluster: FaultCluster | undefined;
let s: Scenario;
let full: Scenario;
let redis: RedisServer;
let operator: OperatorProcess;
const opsPassword = pw("ops-pw");
const rotatedPassword = pw("ops-rotated");
const wrongPassword = pw("wrong-pw");
const appPassword = pw("app-pw");
const clients: pg.Client[] = [];
const suite = faultSuite("test/integration/faults/dependencies.test.ts", () => cluster);

beforeAll(async () => {
  cluster = await FaultCluster.start();
  s = await Scenario.create(cluster.kc, { prefix: "deps" });
  redis = await RedisServer.create({ password: pw("redis-pw") });
  for (const secret of [
    s.server.password,
    opsPassword,
    rotatedPassword,
    wrongPassword,
    appPassword,
    redis.password!,
    redis.url,
  ])
    suite.secrets.add(secret);
  // The operator's own login, so that rotating it leaves the harness's superuser alone.
  await s.server.query(`CREATE ROLE opsadmin SUPERUSER LOGIN PASSWORD '${opsPassword}'`);
  await s.core.createNamespacedSecret({
    namespace: s.namespace,
    body: { metadata: { name: "ops" }, stringData: { username: "opsadmin", password: opsPassword } },
  });
  await s.core.createNamespacedSecret({
    namespace: s.namespace,
    body: { metadata: { name: "redis" }, stringData: { url: redis.url } },
  });
  await s.deployment("api", { labels: { "app.kubernetes.io/part-of": "shop" }, replicas: 1 });
  operator = cluster.operator({ name: "deps-op" });
  await operator.start();
  await s.applyPolicy(
    "p",
    s.policySpec({
      postgres: { credentialsSecret: { name: "ops" } },
      redis: { urlSecret: { name: "redis" }, required: true },
    }),
  );
  await s.waitForCondition("p", "Ready", { status: "True" }, 120_000);
});

afterAll(async () => {
  for (const c of clients) await c.end().catch(() => undefined);
  await full?.cleanup();
  await s?.cleanup();
  await redis?.destroy();
  await cluster?.stop();
});

const condition = async (sc: Scenario, name: string, type: string) =>
  (await sc.status(name)).conditions?.find((c) => c.type === type);

/** Once fixed, the whole status says so within a few reconciles (STATS_REFRESH_SECONDS=5 in tests). */
const READY_AFTER_RECOVERY_MS = 15_000;

/**
 * Conditions that still blame PostgreSQL in a status whose PostgresReachable is True: one pass
 * computes them all from the same facts, so such a status contradicts itself.
 */
async function staleBlame(sc: Scenario, name: string): Promise<string[]> {
  const conditions = (await sc.status(name)).conditions ?? [];
  if (conditions.find((c) => c.type === "PostgresReachable")?.status !== "True") return [];
  return conditions
    .filter((c) => c.type !== "Ready" && /PostgresUnreachable|not reachable/.test(`${c.reason} ${c.message}`))
    .map((c) => `${c.type}=${c.status} ${c.reason}: ${c.message}`);
}

async function client(config: pg.ClientConfig): Promise<pg.Client> {
  const c = new pg.Client({ host: "127.0.0.1", connectionTimeoutMillis: 5_000, ...config });
  c.on("error", () => undefined); // terminated sessions error asynchronously; tests check explicitly
  await c.connect();
  clients.push(c);
  return c;
}

/** Counters over a window in which the fault persists: the operator must retry, not hammer. */
async function windowRates(ms: number) {
  const before = await operatorCounters(operator);
  await sleep(ms);
  const after = await operatorCounters(operator);
  return {
    rates: perMinute(before, after, ms),
    delta: counterDelta(before, after),
    sameProcess: after.processStart === before.processStart,
  };
}

describe("dependencies fail under the operator", () => {
  suite.scenario("5a", async (m) => {
    const startedAs = (await operatorCounters(operator)).processStart;
    // Hold a lock the operator's inspection needs, so that its next reconcile waits inside PostgreSQL…
    const locker = await client({ ...s.server.connection, database: APP_DATABASE });
    await locker.query("BEGIN");
    await locker.query("LOCK TABLE pg_catalog.pg_extension IN ACCESS EXCLUSIVE MODE");
    await waitFor(
      "a reconcile to be waiting on the lock",
      async () =>
        (
          await queryServer(
            s.server,
            "SELECT 1 FROM pg_stat_activity WHERE application_name = 'poolpolicy-operator' AND wait_event_type = 'Lock'",
          )
        ).length > 0,
      { timeoutMs: 30_000, intervalMs: 100 },
    );
    // …and shut PostgreSQL down under it.
    await s.server.stop("fast");
    await s.waitForCondition("p", "PostgresReachable", { status: "False", reason: "ConnectionRefused" }, 60_000);
    const ready = await condition(s, "p", "Ready");
    expect(ready?.status).toBe("False");
    const { rates, delta, sameProcess } = await windowRates(WINDOW_MS);
    m.note(
      "while down",
      `${rates.reconciles} reconciles/min, ${rates.reconcileErrors} errors/min, ${rates.statusWrites} status writes/min`,
    );
    expect(sameProcess).toBe(true);
    expect(rates.reconciles, "retries while PostgreSQL is down").toBeGreaterThanOrEqual(1);
    expect(rates.reconciles, "retries bounded (STATS_REFRESH_SECONDS=5: ~12/min)").toBeLessThanOrEqual(30);
    expect(delta.statusWrites, "a failure that does not change is not rewritten").toBeLessThanOrEqual(1);
    await s.server.start();
    const recoveredMs = await timeUntil(
      "PostgresReachable=True again",
      async () => (await condition(s, "p", "PostgresReachable"))?.status === "True",
      60_000,
      250,
    );
    const stale = await staleBlame(s, "p");
    const readyMs = await timeUntil(
      "Ready=True again",
      async () => (await condition(s, "p", "Ready"))?.status === "True",
      120_000,
      250,
    );
    m.note(
      "recovered",
      `PostgresReachable ${(recoveredMs / 1000).toFixed(1)} s after PostgreSQL started, Ready ${((recoveredMs + readyMs) / 1000).toFixed(1)} s`,
    );
    expect((await operatorCounters(operator)).processStart).toBe(startedAs);
    expect(stale.join("; ") || "none", "conditions still blaming PostgreSQL once it is reachable").toBe("none");
    expect(readyMs, "Ready again within a few reconciles of PostgreSQL's return").toBeLessThanOrEqual(
      READY_AFTER_RECOVERY_MS,
    );
  });

  suite.scenario("5b", async (m) => {
    const startedAs = (await operatorCounters(operator)).processStart;
    const authFailures = () =>
      postgresLog(s.server)
        .split("\n")
        .filter((l) => l.includes('password authentication failed for user "opsadmin"')).length;
    await s.core.patchNamespacedSecret({
      name: "ops",
      namespace: s.namespace,
      body: [{ op: "replace", path: "/data/password", value: Buffer.from(wrongPassword).toString("base64") }],
    });
    await s.waitForCondition("p", "PostgresReachable", { status: "False", reason: "AuthenticationFailed" }, 60_000);
    const failuresBefore = authFailures();
    const { rates, sameProcess } = await windowRates(WINDOW_MS);
    const attemptsPerMinute = Math.round(((authFailures() - failuresBefore) * 60_000) / WINDOW_MS);
    m.note(
      "wrong password",
      `${attemptsPerMinute} failed logins/min (PostgreSQL's log), ${rates.reconciles} reconciles/min`,
    );
    expect(sameProcess).toBe(true);
    expect(attemptsPerMinute).toBeGreaterThanOrEqual(1);
    expect(attemptsPerMinute, "failed logins bounded").toBeLessThanOrEqual(30);
    // Rotation: the server gets the new password first (the old sessions keep working), then the Secret.
    await s.server.query(`ALTER ROLE opsadmin PASSWORD '${rotatedPassword}'`);
    await s.core.patchNamespacedSecret({
      name: "ops",
      namespace: s.namespace,
      body: [{ op: "replace", path: "/data/password", value: Buffer.from(rotatedPassword).toString("base64") }],
    });
    const rotatedMs = await timeUntil(
      "Connected with the rotated password",
      async () => (await condition(s, "p", "PostgresReachable"))?.reason === "Connected",
      60_000,
      250,
    );
    const stale = await staleBlame(s, "p");
    const readyMs = await timeUntil(
      "Ready=True again",
      async () => (await condition(s, "p", "Ready"))?.status === "True",
      120_000,
      250,
    );
    m.note(
      "rotated Secret picked up",
      `Connected ${(rotatedMs / 1000).toFixed(1)} s, Ready ${((rotatedMs + readyMs) / 1000).toFixed(1)} s after the Secret changed`,
    );
    // The pools of the old and the wrong password were closed, not leaked: one pool (≤ 2 sessions) remains.
    const sessions = await queryServer<{ n: number }>(
      s.server,
      "SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = 'poolpolicy-operator'",
    );
    m.note("operator sessions after rotation", sessions[0]!.n);
    expect(sessions[0]!.n).toBeLessThanOrEqual(2);
    expect((await operatorCounters(operator)).processStart).toBe(startedAs);
    expect(stale.join("; ") || "none", "conditions still blaming PostgreSQL once it is reachable").toBe("none");
    expect(readyMs, "Ready again within a few reconciles of the rotation").toBeLessThanOrEqual(READY_AFTER_RECOVERY_MS);
  });

  suite.scenario("5c", async (m) => {
    await redis.stop();
    await s.waitForCondition("p", "Ready", { status: "False", reason: "RedisUnavailable" }, 60_000);
    expect((await condition(s, "p", "PostgresReachable"))?.status, "Redis down hides nothing else").toBe("True");
    const { rates, sameProcess } = await windowRates(WINDOW_MS);
    m.note("while Redis is down", `${rates.reconciles} reconciles/min, ${rates.statusWrites} status writes/min`);
    expect(sameProcess).toBe(true);
    expect(rates.reconciles).toBeLessThanOrEqual(30);
    await redis.start();
    const recoveredMs = await timeUntil(
      "Ready again",
      async () => (await condition(s, "p", "Ready"))?.status === "True",
      60_000,
      250,
    );
    m.note("recovered", `${(recoveredMs / 1000).toFixed(1)} s after Redis started`);
  });

  suite.scenario("6", async (m) => {
    // A server with 20 slots, 3 of them reserved for superusers (the operator's login).
    full = await Scenario.create(cluster!.kc, { prefix: "full", conf: { max_connections: 20 } });
    suite.secrets.add(full.server.password);
    await full.server.query(`CREATE ROLE app LOGIN PASSWORD '${appPassword}'`);
    await full.server.query(`GRANT ALL ON DATABASE ${APP_DATABASE} TO app`);
    await full.applyPolicy("q", full.policySpec({ reaper: { interval: "5s", idleInTransactionTimeout: "2s" } }));
    await full.waitForCondition("q", "PostgresReachable", { status: "True" }, 60_000);

    // The test's own observer, taken before the slots run out.
    const observer = await client({ ...full.server.connection, database: APP_DATABASE, application_name: "observer" });
    // The apps take every slot they can.
    const appConfig = { port: full.server.port, user: "app", password: appPassword, database: APP_DATABASE };
    const apps: { c: pg.Client; idleInTx: boolean; killed: boolean }[] = [];
    let refusal = "";
    for (let i = 0; i < 40 && !refusal; i++) {
      try {
        const c = await client({ ...appConfig, application_name: `app-${i}` });
        const entry = { c, idleInTx: i % 3 === 0, killed: false };
        c.on("error", (err: Error) => {
          entry.killed ||= (err as { code?: string }).code === "57P01";
        });
        if (entry.idleInTx) {
          await c.query("BEGIN");
          await c.query("SELECT 1");
        }
        apps.push(entry);
      } catch (err) {
        refusal = (err as Error).message;
      }
    }
    expect(refusal).toMatch(/too many clients|remaining connection slots are reserved/);
    const filledAt = (await observer.query("SELECT now() AS t")).rows[0].t as Date;
    // Cut the operator's pooled connections: it has to come back through a reserved slot.
    await observer.query(
      "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'poolpolicy-operator'",
    );

    const idleInTx = apps.filter((a) => a.idleInTx);
    const reapMs = await timeUntil(
      "the reaper to terminate every idle-in-transaction app session",
      () => idleInTx.every((a) => a.killed),
      60_000,
      200,
    );
    const reconnected = await observer.query(
      "SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = 'poolpolicy-operator' AND backend_start > $1",
      [filledAt],
    );
    expect(reconnected.rows[0].n, "operator sessions opened after the slots ran out").toBeGreaterThanOrEqual(1);
    await full.waitForCondition("q", "PostgresReachable", { status: "True" }, 30_000);
    await waitFor(
      "the status to count the terminations",
      async () => ((await full.status("q")).reaper?.totalTerminated ?? 0) >= idleInTx.length,
      { timeoutMs: 30_000 },
    );
    // Only those: every other app session is alive and usable.
    const others = apps.filter((a) => !a.idleInTx);
    for (const a of others) await a.c.query("SELECT 1");
    expect(others.filter((a) => a.killed)).toEqual([]);
    // The freed slots are usable by the apps again.
    await client({ ...appConfig, application_name: "app-after" });
    m.note(
      "slots",
      `${apps.length} app sessions + 1 observer filled 20 slots (3 reserved); refused: "${refusal.slice(0, 40)}"`,
    );
    m.note(
      "reaped",
      `${idleInTx.length}/${idleInTx.length} idle-in-transaction sessions in ${(reapMs / 1000).toFixed(1)} s, 0 of ${others.length} others`,
    );
  });
});
