/**
 * Every rule of `diagnose`: which facts make a finding, its severity (critical and warning
 * fail the command, notices do not), and recommendations computed with the right numbers.
 */
import { describe, expect, it } from "vitest";
import { analyze, isOk, poolCut } from "../../../src/cli/findings.js";
import { budget, facts, server } from "./fixtures.js";

const ctx = { reapCommand: "poolpolicy reap shop/p" };
const codes = (f: ReturnType<typeof analyze>) => f.map((x) => `${x.severity}:${x.code}`);

describe("findings", () => {
  it("a healthy server has none and is ok", () => {
    const findings = analyze(facts(), ctx);
    expect(findings).toEqual([]);
    expect(isOk(findings)).toBe(true);
  });

  it("demand over capacity: raise max_connections to the auto-sized value, or cut the biggest policy's pool", () => {
    const [f] = analyze(facts({ budget: budget() }), ctx);
    expect(f).toMatchObject({ severity: "critical", code: "BudgetExceeded" });
    expect(f!.message).toMatch(/^demand 115 > capacity 100: /);
    expect(f!.message).toContain("15 more than max_connections");
    // 115 + 20 % headroom = 138, rounded up to a step of 10; 25 needed elsewhere leaves 75 for 9 pods: 8 each.
    expect(f!.recommendation).toBe(
      "raise max_connections to 140 (set spec.postgres.maxConnections of shop/p to 140: the operator applies it with one rolling restart), " +
        "or lower pool.maxSize of shop/p (api, worker) from 10 to 8",
    );
  });

  it("says how to raise max_connections where ALTER SYSTEM cannot, or where the policy sizes it", () => {
    const cmdline = analyze(facts({ budget: budget(), postgres: server({ settingSource: "command line" }) }), ctx)[0]!;
    expect(cmdline.recommendation).toContain("raise max_connections to 140 where the server's command line sets it");
    const auto = analyze(
      facts({ budget: budget({ ceiling: 120 }), policy: { ...facts().policy!, maxConnections: "auto" } }),
      ctx,
    )[0]!;
    expect(auto.recommendation).toContain("spec.budget.ceiling (120) caps it; raise the ceiling to at least 140");
    const dsn = analyze(
      facts({
        subject: { dsn: "postgres://a:***@db/x", server: "db:5432", database: "x", user: "a" },
        policy: undefined,
        budget: budget(),
      }),
      ctx,
    )[0]!;
    expect(dsn.recommendation).toMatch(
      /^raise max_connections to 140 \(ALTER SYSTEM SET max_connections = 140, then restart PostgreSQL\)/,
    );
  });

  it("max_connections above what the container's memory carries: the operator's warning; no advice to raise past it", () => {
    const source = "the memory limit 1 GiB of container postgres in StatefulSet db/pg";
    const memory = {
      known: true as const,
      ceiling: 80,
      source,
      memoryBytes: 2 ** 30,
      fixedBytes: 384 * 2 ** 20,
      perConnectionBytes: 8 * 2 ** 20,
      condition: {
        status: "False",
        reason: "AboveMemoryCeiling",
        message: `max_connections 100 > 80 that fit in ${source}`,
      },
    };
    const found = analyze(facts({ budget: budget({ memory }) }), ctx);
    expect(found.map((f) => f.code)).toEqual(["BudgetExceeded", "AboveMemoryCeiling"]);
    expect(found[1]).toMatchObject({ severity: "warning", message: memory.condition.message });
    expect(found[0]!.recommendation).toContain(
      `max_connections above 80 does not fit in ${source}: give PostgreSQL more memory, or put a connection pooler in front`,
    );
    expect(found[0]!.recommendation).not.toContain("raise max_connections to 140");
    const fits = { ...memory, ceiling: 500, condition: { status: "True", reason: "WithinMemory", message: "" } };
    const within = analyze(facts({ budget: budget({ memory: fits }) }), ctx);
    expect(within.map((f) => f.code)).toEqual(["BudgetExceeded"]);
    expect(within[0]!.recommendation).toContain("raise max_connections to 140");
  });

  it("offers no pool cut when no pool size of at least 1 fits", () => {
    expect(poolCut(budget({ capacity: 20 }))).toBeUndefined();
    expect(poolCut(budget({ demand: 100, capacity: 100 }))).toBeUndefined();
  });

  it("usage: a warning from 85 %, critical from 95 %, with a larger max_connections", () => {
    const at = (total: number) =>
      analyze(
        facts({ postgres: server({ connections: { total, active: total - 10, idle: 5, idleInTransaction: 5 } }) }),
        ctx,
      );
    expect(codes(at(84))).toEqual([]);
    const high = at(85);
    expect(codes(high)).toEqual(["warning:UsageHigh"]);
    expect(high[0]!.message).toMatch(/^85 of 100 connections in use \(85% ≥ 85%\)/);
    // 85 in use + 3 reserved, + 20 % = 105.6 → 110.
    expect(high[0]!.recommendation).toMatch(/^raise max_connections to 110 /);
    expect(isOk(high)).toBe(false);
    expect(codes(at(95))).toEqual(["critical:UsageCritical"]);
  });

  it("no slot left for ordinary roles is critical, and points at idle pools", () => {
    // max_connections 10, 3 reserved: 7 app sessions and ours fill every ordinary slot.
    const full = server({ maxConnections: 10, connections: { total: 8, active: 1, idle: 6, idleInTransaction: 1 } });
    expect(full.ordinarySlotsFree).toBe(0);
    const findings = analyze(facts({ postgres: full }), ctx);
    expect(codes(findings)).toEqual(["critical:NoFreeSlots"]);
    expect(findings[0]!.message).toContain('new connections get "sorry, too many clients already"');
    expect(findings[0]!.recommendation).toContain("raise max_connections to 20");
    expect(findings[0]!.recommendation).toContain("6 of the 8 sessions are idle");
    expect(findings[0]!.recommendation).toContain("pool.minSize of shop/p is 5");
  });

  it("sessions idle in transaction past the threshold: who, and the reap command", () => {
    const sessions = {
      ...facts().sessions!,
      idleInTransactionOverThreshold: 2,
      oldestIdleInTransaction: [
        {
          pid: 4242,
          database: "appdb",
          user: "app",
          applicationName: "orders",
          clientAddress: "10.0.0.7",
          state: "idle in transaction",
          idleSeconds: 3723,
          transactionSeconds: 3730,
          query: "SELECT 1",
        },
        {
          pid: 4243,
          database: "appdb",
          user: "App User",
          applicationName: "orders",
          clientAddress: null,
          state: "idle in transaction",
          idleSeconds: 400,
          transactionSeconds: 401,
          query: "SELECT 2",
        },
      ],
    };
    const [f] = analyze(facts({ sessions }), ctx);
    expect(f).toMatchObject({ severity: "warning", code: "IdleInTransaction" });
    expect(f!.message).toContain("2 session(s) idle in transaction for more than 5m");
    expect(f!.message).toContain(
      'pid 4242 (user app, application "orders", client 10.0.0.7, database appdb), idle for 1h2m3s',
    );
    expect(f!.recommendation).toBe(
      "terminate them: poolpolicy reap shop/p --older-than 5m --execute; to prevent it: " +
        "ALTER ROLE app SET idle_in_transaction_session_timeout = '300s'; ALTER ROLE \"App User\" SET idle_in_transaction_session_timeout = '300s'",
    );
  });

  it("missing extensions say whether CREATE EXTENSION is enough", () => {
    const [f] = analyze(
      facts({
        extensions: {
          database: "appdb",
          required: ["age", "pgcrypto"],
          missing: [
            { name: "age", availableOnServer: false },
            { name: "pgcrypto", availableOnServer: true },
          ],
        },
      }),
      ctx,
    );
    expect(f).toMatchObject({
      severity: "critical",
      code: "ExtensionMissing",
      message: "required extension(s) missing in database appdb: age, pgcrypto",
    });
    expect(f!.recommendation).toBe(
      "install the package that provides age on the server (it is not available there), then CREATE EXTENSION age; CREATE EXTENSION pgcrypto in database appdb",
    );
  });

  it("Redis: down is critical only when required; near maxclients is a warning; rejections are a notice", () => {
    const down = (required: boolean) =>
      analyze(
        facts({
          redis: {
            required,
            available: false,
            reason: "RedisUnavailable",
            message: "Redis at redis://h:6379: connect ECONNREFUSED",
          },
        }),
        ctx,
      );
    expect(codes(down(true))).toEqual(["critical:RedisUnavailable"]);
    expect(codes(down(false))).toEqual(["notice:RedisUnavailable"]);
    expect(isOk(down(false))).toBe(true);
    const busy = analyze(
      facts({
        redis: {
          required: true,
          available: true,
          reason: "NearClientLimit",
          message: "",
          connectedClients: 95,
          maxClients: 100,
          rejectedConnections: 4,
        },
      }),
      ctx,
    );
    expect(codes(busy)).toEqual(["warning:RedisNearClientLimit", "notice:RedisRejectedClients"]);
    expect(busy[0]!.recommendation).toContain("CONFIG SET maxclients 200");
  });

  it("an unreachable server is critical, with advice for the reason", () => {
    const [f] = analyze(
      facts({
        postgres: { reachable: false, reason: "TooManyConnections", message: "sorry, too many clients already" },
      }),
      ctx,
    );
    expect(f).toMatchObject({ severity: "critical", code: "PostgresUnreachable" });
    expect(f!.recommendation).toContain("a role that owns a reserved slot");
  });

  it("passes on what the operator reports, and that it has not reported yet, as notices", () => {
    const conditions = [
      { type: "MaxConnectionsApplied", status: "False", reason: "AwaitingApproval", message: "annotate to approve" },
    ];
    expect(codes(analyze(facts({ policy: { ...facts().policy!, conditions } }), ctx))).toEqual([
      "notice:PolicyCondition",
    ]);
    expect(codes(analyze(facts({ policy: { ...facts().policy!, conditions: [] } }), ctx))).toEqual(["notice:NoStatus"]);
  });

  it("says when the role cannot see other roles' session states", () => {
    const sessions = {
      ...facts().sessions!,
      byUserAndApplication: [
        {
          database: "appdb",
          user: "",
          applicationName: "",
          total: 4,
          active: 0,
          idle: 0,
          idleInTransaction: 0,
          other: 4,
        },
      ],
    };
    const subject = { dsn: "postgres://app:***@db/appdb", server: "db:5432", database: "appdb", user: "app" };
    const findings = analyze(
      facts({ subject, policy: undefined, sessions, postgres: server({ isSuperuser: false }) }),
      ctx,
    );
    expect(findings).toEqual([
      {
        severity: "notice",
        code: "SessionsHidden",
        message: expect.stringContaining("4 session(s) of other roles show no state to app"),
        recommendation: "GRANT pg_read_all_stats TO app",
      },
    ]);
    expect(analyze(facts({ sessions }), ctx)).toEqual([]); // a superuser sees everything
  });

  it("sorts critical before warning before notice", () => {
    const findings = analyze(
      facts({
        policy: { ...facts().policy!, conditions: [] },
        postgres: server({ connections: { total: 88, active: 80, idle: 4, idleInTransaction: 4 } }),
        budget: budget(),
      }),
      ctx,
    );
    expect(codes(findings)).toEqual(["critical:BudgetExceeded", "warning:UsageHigh", "notice:NoStatus"]);
  });
});
