/**
 * Item 7: the reaper against sessions that flip between active and idle in transaction, under
 * load, for minutes (REAPER_RACE_SECONDS, default 45 s in CI; set it to 600 or more for a soak run).
 *
 * What it breaks: the reaper's one statement races with sessions whose state changes all the
 * time. Four kinds of clients, each of which knows whether it was terminated (FATAL 57P01):
 * - flippers: long transactions (several times the timeout) made of short statements separated
 *   by short idle-in-transaction gaps (≤ a quarter of the timeout). A reaper that measured
 *   from xact_start, query_start or backend_start, or that selected first and killed later,
 *   would kill them;
 * - long-active: a transaction that runs pg_sleep for twice the timeout (active, old xact);
 * - plain-idle: connected, never in a transaction;
 * - sleepers: open a transaction and sit idle in it far past the timeout: these MUST be killed.
 * What it promises: zero wrong kills, and every sleeper killed within timeout + 2 intervals.
 *
 * A wrong kill is judged on the server's clocks, not the test's: every statement returns the
 * server's clock_timestamp() at its end, and PostgreSQL logs each termination with its epoch
 * time and pid (log_line_prefix '%n [%p] '). Idle time at the kill = log time - end of the last
 * statement. Under the timeout, the kill was wrong; over it, the client itself had stalled
 * (the reaper was right) and the row says how often that happened.
 */
import { afterAll, beforeAll, describe, expect } from "vitest";
import pg from "pg";
import { FaultCluster, postgresLog, sleep } from "../../harness/faults.js";
import type { OperatorProcess } from "../../harness/operator.js";
import { waitFor } from "../../harness/processes.js";
import { APP_DATABASE, Scenario } from "../operator/scenario.js";
import { faultSuite } from "./support.js";

const DURATION_S = Number(process.env.REAPER_RACE_SECONDS ?? 45);
const TIMEOUT_S = 2;
const INTERVAL_S = 5;
const FLIPPERS = 24;
const LONG_ACTIVE = 4;
const PLAIN_IDLE = 4;
const SLEEPERS = 4;
/** A sleeper not killed after this long was missed by the reaper. */
const MUST_KILL_WITHIN_S = TIMEOUT_S + 2 * INTERVAL_S + 5;
const APP_PASSWORD = `race-app-${Math.random().toString(36).slice(2)}`;

type Kind = "flipper" | "long-active" | "plain-idle" | "sleeper";

interface Kill {
  kind: Kind;
  pid: number;
  /** A statement was in flight when the termination arrived. */
  inFlight: boolean;
  /** Server epoch seconds at the end of the last statement, while in a transaction. */
  lastEnd: number | undefined;
}

let cluster: FaultCluster | undefined;
let s: Scenario;
let operator: OperatorProcess;
const suite = faultSuite("test/integration/faults/reaper-race.test.ts", () => cluster);

beforeAll(async () => {
  cluster = await FaultCluster.start();
  // Epoch timestamps and pids in the server log: the referee for wrong kills.
  s = await Scenario.create(cluster.kc, {
    prefix: "race",
    conf: { log_line_prefix: "'%n [%p] '", max_connections: 100 },
  });
  suite.secrets.add(s.server.password);
  suite.secrets.add(APP_PASSWORD);
  await s.server.query(`CREATE ROLE app LOGIN PASSWORD '${APP_PASSWORD}'`);
  await s.server.query(`GRANT ALL ON DATABASE ${APP_DATABASE} TO app`);
  await s.deployment("api", { labels: { "app.kubernetes.io/part-of": "shop" }, replicas: 1 });
  operator = cluster.operator({ name: "race-op" });
  await operator.start();
  await s.applyPolicy(
    "p",
    s.policySpec({ reaper: { interval: `${INTERVAL_S}s`, idleInTransactionTimeout: `${TIMEOUT_S}s` } }),
  );
  await s.waitForCondition("p", "Ready", { status: "True" }, 120_000);
});

afterAll(async () => {
  await s?.cleanup();
  await cluster?.stop();
});

const rand = (min: number, max: number) => min + Math.random() * (max - min);
const SERVER_NOW = "extract(epoch FROM clock_timestamp())::float8 AS t";

/** One client connection that knows when it was terminated. */
class Session {
  pid = 0;
  lastEnd: number | undefined;
  inFlight = false;
  killed = false;
  private readonly client: pg.Client;

  constructor(
    readonly kind: Kind,
    name: string,
    private readonly onKill: (k: Kill) => void,
  ) {
    this.client = new pg.Client({
      host: "127.0.0.1",
      port: s.server.port,
      user: "app",
      password: APP_PASSWORD,
      database: APP_DATABASE,
      application_name: name,
    });
    // Terminated while idle: the FATAL arrives as an 'error' event.
    this.client.on("error", (err: Error) => this.noteError(err));
  }

  async connect(): Promise<void> {
    await this.client.connect();
    this.pid = (await this.client.query("SELECT pg_backend_pid() AS pid")).rows[0].pid;
  }

  /** Runs SQL whose last result has a column t (server epoch at its end); returns false once terminated. */
  async run(sql: string, inTransaction: boolean): Promise<boolean> {
    if (this.killed) return false;
    this.inFlight = true;
    try {
      const result = await this.client.query(sql);
      const last = Array.isArray(result) ? result.at(-1) : result;
      this.lastEnd = inTransaction ? (last?.rows?.[0]?.t ?? this.lastEnd) : undefined;
      return true;
    } catch (err) {
      this.noteError(err as Error);
      return false;
    } finally {
      this.inFlight = false;
    }
  }

  async close(): Promise<void> {
    await this.client.end().catch(() => undefined);
  }

  private noteError(err: Error): void {
    if (this.killed) return;
    this.killed = true;
    if ((err as { code?: string }).code === "57P01") {
      this.onKill({ kind: this.kind, pid: this.pid, inFlight: this.inFlight, lastEnd: this.lastEnd });
    }
  }
}

describe("the reaper under load", () => {
  suite.scenario(
    "7",
    async (m) => {
      const kills: Kill[] = [];
      const onKill = (k: Kill) => void kills.push(k);
      const stats = { transactions: 0, idleGaps: 0, sleeperCycles: 0, missed: 0, sessions: 0 };
      let running = true;
      const deadline = Date.now() + DURATION_S * 1000;

      /** Runs `body` on fresh sessions until the time is up; a terminated session is replaced. */
      const worker = (kind: Kind, i: number, body: (x: Session) => Promise<void>) =>
        (async () => {
          while (running && Date.now() < deadline) {
            const x = new Session(kind, `${kind}-${i}`, onKill);
            try {
              await x.connect();
              stats.sessions += 1;
              while (running && Date.now() < deadline && !x.killed) await body(x);
            } catch {
              // a connect that failed: try again
            } finally {
              await x.close();
            }
          }
        })();

      const flipper = async (x: Session) => {
        if (!(await x.run(`BEGIN; SELECT ${SERVER_NOW}`, true))) return;
        const steps = 6 + Math.floor(rand(0, 10));
        for (let k = 0; k < steps; k++) {
          await sleep(rand(0, (TIMEOUT_S * 1000) / 4)); // idle in transaction, well under the timeout
          stats.idleGaps += 1;
          const sql =
            Math.random() < 0.3
              ? `SELECT pg_sleep(${rand(0.05, 0.3).toFixed(2)}), ${SERVER_NOW}`
              : `SELECT ${SERVER_NOW}`;
          if (!(await x.run(sql, true))) return;
        }
        if (!(await x.run(`COMMIT; SELECT ${SERVER_NOW}`, false))) return;
        stats.transactions += 1;
        await sleep(rand(0, 200));
      };
      const longActive = async (x: Session) => {
        if (!(await x.run(`BEGIN; SELECT ${SERVER_NOW}`, true))) return;
        if (!(await x.run(`SELECT pg_sleep(${TIMEOUT_S * 2}), ${SERVER_NOW}`, true))) return;
        await sleep(100);
        await x.run(`COMMIT; SELECT ${SERVER_NOW}`, false);
      };
      const plainIdle = async (x: Session) => {
        await x.run(`SELECT ${SERVER_NOW}`, false);
        await sleep(5_000);
      };
      const sleeper = async (x: Session) => {
        if (!(await x.run(`BEGIN; SELECT ${SERVER_NOW}`, true))) return;
        stats.sleeperCycles += 1;
        const until = Date.now() + MUST_KILL_WITHIN_S * 1000;
        while (!x.killed && Date.now() < until && running) await sleep(100);
        if (!x.killed && running) {
          stats.missed += 1;
          await x.run("ROLLBACK", false);
        }
      };

      const workers = [
        ...Array.from({ length: FLIPPERS }, (_, i) => worker("flipper", i, flipper)),
        ...Array.from({ length: LONG_ACTIVE }, (_, i) => worker("long-active", i, longActive)),
        ...Array.from({ length: PLAIN_IDLE }, (_, i) => worker("plain-idle", i, plainIdle)),
        ...Array.from({ length: SLEEPERS }, (_, i) => worker("sleeper", i, sleeper)),
      ];
      await sleep(DURATION_S * 1000);
      running = false;
      await Promise.all(workers);

      // The server's log: when each pid was terminated (epoch seconds).
      const terminatedAt = new Map<number, number>();
      for (const line of postgresLog(s.server).split("\n")) {
        const match = /^(\d+\.\d+) \[(\d+)\] FATAL:\s+terminating connection due to administrator command/.exec(line);
        if (match) terminatedAt.set(Number(match[2]), Number(match[1]));
      }
      const judged = kills.map((k) => {
        const at = terminatedAt.get(k.pid);
        const idle = at !== undefined && k.lastEnd !== undefined ? at - k.lastEnd : undefined;
        // Never in a transaction, or killed mid-statement of a long active one: wrong whatever the clocks say.
        const wrong =
          k.kind === "sleeper"
            ? false
            : k.kind === "plain-idle" ||
              (k.kind === "long-active" && k.inFlight) ||
              idle === undefined ||
              idle < TIMEOUT_S;
        return { ...k, idle, wrong };
      });
      const wrong = judged.filter((k) => k.wrong);
      const stalled = judged.filter((k) => k.kind !== "sleeper" && !k.wrong);
      const sleeperKills = judged.filter((k) => k.kind === "sleeper").length;
      let reaperTotal = 0;
      await waitFor(
        "the status to count every termination",
        async () => {
          reaperTotal = (await s.status("p")).reaper?.totalTerminated ?? 0;
          return reaperTotal >= terminatedAt.size;
        },
        { timeoutMs: 30_000 },
      ).catch(() => undefined);

      m.note(
        "load",
        `${DURATION_S} s, ${FLIPPERS + LONG_ACTIVE + PLAIN_IDLE + SLEEPERS} clients (${FLIPPERS} flippers, ${LONG_ACTIVE} long-active, ${PLAIN_IDLE} plain-idle, ${SLEEPERS} sleepers), ${stats.transactions} flipper transactions, ${stats.idleGaps} short idle-in-transaction gaps`,
      );
      m.note(
        "kills",
        `${sleeperKills}/${stats.sleeperCycles} sleeper transactions killed, ${stats.missed} missed, ${wrong.length} wrong kills, ${stalled.length} stalled clients rightly killed; reaper status counts ${reaperTotal}`,
      );
      expect(
        wrong.map((k) => `${k.kind} pid ${k.pid} idle ${k.idle?.toFixed(3)} s${k.inFlight ? " (mid-statement)" : ""}`),
        "wrong kills",
      ).toEqual([]);
      expect(stats.missed, "sleepers not killed within timeout + 2 intervals").toBe(0);
      expect(sleeperKills, "the reaper kept killing throughout").toBeGreaterThanOrEqual(
        Math.floor((DURATION_S / MUST_KILL_WITHIN_S) * SLEEPERS * 0.5),
      );
      // Every termination in the server's log is one we saw, and one the operator counted.
      expect(terminatedAt.size).toBe(kills.length);
      expect(reaperTotal).toBe(terminatedAt.size);
      await s.waitForCondition("p", "ReaperHealthy", { status: "True", reason: "Running" }, 30_000);
    },
    (DURATION_S + 180) * 1000,
  );
});
