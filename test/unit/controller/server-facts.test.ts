/**
 * The shared reading of a server's facts (src/controller/server-facts.ts): when a pass is
 * answered with a reading another pass started, and when it reads again. A fake clock; the
 * reading is a counted fake. The PooledPostgres cases check that the adapter drops the reading
 * after it changed something on the server, and only then.
 */
import { describe, expect, it } from "vitest";
import { PooledPostgres } from "../../../src/controller/adapters.js";
import type { ReaperOutcome } from "../../../src/controller/reaper.js";
import { SharedServerFacts } from "../../../src/controller/server-facts.js";
import type { PostgresPools, PostgresTarget } from "../../../src/postgres/connection.js";
import { inspectServer, type ServerFacts } from "../../../src/postgres/inspect.js";
import { serverFacts } from "../fixtures/server-facts.js";

const target: PostgresTarget = {
  host: "pg",
  port: 5432,
  database: "app",
  sslMode: "disable",
  user: "op",
  password: "s3cret",
};

/** A reading that counts its calls and answers each with facts numbered by the call. */
function counted(over: Partial<ServerFacts> = {}) {
  let calls = 0;
  const inspect = async () => {
    calls += 1;
    return serverFacts({ ...over, maxConnections: 100 + calls });
  };
  return { inspect, calls: () => calls };
}

function clock() {
  let t = 0;
  return { now: () => t, advance: (ms: number) => (t += ms) };
}

describe("SharedServerFacts", () => {
  it("answers the passes of one server within maxAgeMs with one reading, then reads again", async () => {
    const c = clock();
    const shared = new SharedServerFacts(1000, c.now);
    const r = counted();
    const first = await shared.read(target, "ns/a", r.inspect);
    c.advance(1000);
    const second = await shared.read(target, "ns/b", r.inspect);
    expect(r.calls()).toBe(1);
    expect(second).toBe(first);
    c.advance(1);
    const third = await shared.read(target, "ns/c", r.inspect);
    expect(r.calls()).toBe(2);
    expect(third.maxConnections).toBe(102);
  });

  it("lets concurrent passes join a reading in flight", async () => {
    const shared = new SharedServerFacts(1000, clock().now);
    const r = counted();
    const all = await Promise.all([1, 2, 3, 4].map((n) => shared.read(target, `ns/p${n}`, r.inspect)));
    expect(r.calls()).toBe(1);
    expect(new Set(all).size).toBe(1);
  });

  it("never keeps a reading that failed", async () => {
    const shared = new SharedServerFacts(1000, clock().now);
    let calls = 0;
    const failing = async (): Promise<ServerFacts> => {
      calls += 1;
      if (calls === 1) throw new Error("connection refused");
      return serverFacts();
    };
    await expect(shared.read(target, "ns/a", failing)).rejects.toThrow("connection refused");
    await expect(shared.read(target, "ns/b", failing)).resolves.toBeDefined();
    expect(calls).toBe(2);
  });

  it("never shares a reading that shows a restart pending", async () => {
    const shared = new SharedServerFacts(1000, clock().now);
    const r = counted({ pendingRestart: true });
    await shared.read(target, "ns/a", r.inspect);
    await shared.read(target, "ns/b", r.inspect);
    expect(r.calls()).toBe(2);
  });

  it("reads again after invalidate, and does not keep a reading that was in flight then", async () => {
    const shared = new SharedServerFacts(1000, clock().now);
    const r = counted();
    await shared.read(target, "ns/a", r.inspect);
    shared.invalidate(target);
    await shared.read(target, "ns/b", r.inspect);
    expect(r.calls()).toBe(2);

    shared.invalidate(target);
    let land!: (f: ServerFacts) => void;
    const inFlight = shared.read(target, "ns/c", () => new Promise<ServerFacts>((resolve) => (land = resolve)));
    shared.invalidate(target);
    land(serverFacts({ maxConnections: 1 }));
    await inFlight;
    const after = await shared.read(target, "ns/d", r.inspect);
    expect(after.maxConnections).toBe(103);
  });

  it("never answers a policy twice with one reading: its next pass sees the server as it is now", async () => {
    // The case of secret-rotation.test.ts: a pass reads "Connected"; the password then changes
    // in PostgreSQL and a poke asks the same policy again within maxAgeMs. It must read anew.
    const shared = new SharedServerFacts(1000, clock().now);
    const r = counted();
    const first = await shared.read(target, "ns/a", r.inspect);
    const again = await shared.read(target, "ns/a", r.inspect);
    expect(r.calls()).toBe(2);
    expect(again.maxConnections).toBe(102);
    // The newer reading is the one shared: a peer joins it, and "ns/a" is not given the first.
    expect(await shared.read(target, "ns/b", r.inspect)).toBe(again);
    expect(first.maxConnections).toBe(101);
    expect(r.calls()).toBe(2);
  });

  it("keeps servers, roles and passwords apart", async () => {
    const shared = new SharedServerFacts(1000, clock().now);
    const r = counted();
    await shared.read(target, "ns/a", r.inspect);
    await shared.read({ ...target, port: 5433 }, "ns/b", r.inspect);
    await shared.read({ ...target, user: "other" }, "ns/c", r.inspect);
    await shared.read({ ...target, password: "wrong" }, "ns/d", r.inspect);
    await shared.read({ ...target, database: "other" }, "ns/e", r.inspect);
    expect(r.calls()).toBe(5);
  });
});

describe("PooledPostgres shares the facts and drops them after a change", () => {
  /** Pools that answer inspectServer with counted facts and any other work with `next`. */
  function fakePools() {
    const state = { inspections: 0, next: undefined as unknown };
    const pools = {
      async withClient<T>(_t: PostgresTarget, work: unknown): Promise<T> {
        if (work === inspectServer) {
          state.inspections += 1;
          return serverFacts() as T;
        }
        if (state.next instanceof Error) throw state.next;
        return state.next as T;
      },
    } as unknown as PostgresPools;
    return { pools, state };
  }
  const reaped = (terminated: boolean[]): ReaperOutcome =>
    ({ sessions: terminated.map((t) => ({ terminated: t })) }) as unknown as ReaperOutcome;
  const spec = {} as Parameters<PooledPostgres["runReaper"]>[1];

  it("after ALTER SYSTEM, after a timeout that changed, after a reap that ended sessions, after a failure", async () => {
    const { pools, state } = fakePools();
    const pg = new PooledPostgres(pools, new SharedServerFacts(60_000, clock().now));
    await pg.inspectServer(target, "ns/r1");
    await pg.inspectServer(target, "ns/r2");
    expect(state.inspections).toBe(1);

    state.next = undefined;
    await pg.alterMaxConnections(target, 200);
    await pg.inspectServer(target, "ns/r3");
    expect(state.inspections).toBe(2);

    state.next = "set idle_in_transaction_session_timeout";
    await pg.applyServerTimeout(target, { scope: "Server", roles: [] }, 1000);
    await pg.inspectServer(target, "ns/r4");
    expect(state.inspections).toBe(3);

    state.next = reaped([false, true]);
    await pg.runReaper(target, spec, 1000, undefined, new Date());
    await pg.inspectServer(target, "ns/r5");
    expect(state.inspections).toBe(4);

    state.next = new Error("permission denied");
    await expect(pg.runReaper(target, spec, 1000, undefined, new Date())).rejects.toThrow("permission denied");
    await pg.inspectServer(target, "ns/r6");
    expect(state.inspections).toBe(5);
  });

  it("not after a timeout left as it was, nor a reap that ended nothing", async () => {
    const { pools, state } = fakePools();
    const pg = new PooledPostgres(pools, new SharedServerFacts(60_000, clock().now));
    await pg.inspectServer(target, "ns/r7");
    state.next = undefined;
    await pg.applyServerTimeout(target, { scope: "Server", roles: [] }, 1000);
    state.next = reaped([false]);
    await pg.runReaper(target, spec, 1000, undefined, new Date());
    await pg.inspectServer(target, "ns/r8");
    expect(state.inspections).toBe(1);
  });
});
