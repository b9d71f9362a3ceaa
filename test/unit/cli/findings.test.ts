/**
 * Every rule of `diagnose`: which facts make a finding, its severity (critical and warning
 * fail the command, notices do not), and recommendations computed with the right numbers.
 */
import { describe, expect, it } from "vitest";
import { analyze, isOk, poolCut } from "../../../src/cli/findings.js";
import { budget, facts, role, server } from "./fixtures.js";

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
    const owned = { ...facts().policy!, restartWorkload: "CloudNativePG Cluster db/pg", restartedBy: "CloudNativePG" };
    expect(analyze(facts({ budget: budget(), policy: owned }), ctx)[0]!.recommendation).toContain(
      "raise max_connections to 140 (set spec.postgres.maxConnections of shop/p to 140: the operator sets it on CloudNativePG Cluster db/pg and CloudNativePG restarts the instances)",
    );
    // Patroni pins it on the command line; through the postgresql resource the policy still sets it.
    const zalando = {
      ...facts().policy!,
      restartWorkload: "Zalando postgresql db/pg",
      restartedBy: "Zalando's postgres-operator",
    };
    const patroni = facts({ budget: budget(), policy: zalando, postgres: server({ settingSource: "command line" }) });
    expect(analyze(patroni, ctx)[0]!.recommendation).toContain(
      "the operator sets it on Zalando postgresql db/pg and Zalando's postgres-operator restarts the instances",
    );
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

  it("a pooler that does not fit: the operator's words, a warning; a sized one: no finding", () => {
    const within = { withinLimits: true, demand: 90 };
    const message =
      "the pooler needs at least 5 server connections per pod; db:5432 has 5 left (max_connections 100 − direct clients 90 − reserved 5), 2 per pod for 2 worst-case pooler pods: raise max_connections, route more apps through the pooler, run fewer pooler pods, or lower spec.pooler.minServerConnectionsPerPod";
    const refused = { state: "refused" as const, name: "shop/pgbouncer", pooled: ["shop/p"], message };
    const found = analyze(facts({ budget: budget({ ...within, pooler: refused }) }), ctx);
    expect(found).toEqual([
      { severity: "warning", code: "PoolerDoesNotFit", message: `pooler shop/pgbouncer is not rolled out: ${message}` },
    ]);
    expect(isOk(found)).toBe(false);
    const sized = {
      state: "sized" as const,
      name: "shop/pgbouncer",
      pooled: ["shop/p"],
      pods: 2,
      perPod: 2,
      left: 5,
      maxClientConn: 25,
      explanation: "",
    };
    expect(analyze(facts({ budget: budget({ ...within, pooler: sized }) }), ctx)).toEqual([]);
    const notDeclared = { state: "notDeclared" as const, pooled: ["shop/p"], message: "no policy declares one" };
    expect(codes(analyze(facts({ budget: budget({ ...within, pooler: notDeclared }) }), ctx))).toEqual([
      "warning:PoolerNotDeclared",
    ]);
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

  it("a role held to its share, in force and under its limit: nothing to say", () => {
    expect(analyze(facts({ roles: [role({ connections: 21 })] }), ctx)).toEqual([]);
  });

  it("a role at its limit: new sessions are refused; who holds them, or a larger margin", () => {
    const findings = analyze(facts({ roles: [role({ connections: 22 })] }), ctx);
    expect(codes(findings)).toEqual(["warning:RoleLimitReached"]);
    expect(findings[0]!.message).toBe(
      'role "app" has 22 session(s), its CONNECTION LIMIT is 22 (share 22: worst-case demand 20 of policy shop/p + margin 2): new sessions of "app" are refused ("too many connections for role")',
    );
    expect(findings[0]!.recommendation).toBe(
      "find who holds them (user app under CONNECTIONS BY USER AND APPLICATION): something connects beyond the pools (a client of its own, a leak, more pods than the budget knows); or raise spec.enforcement.connectionLimit.margin of shop/p",
    );
    // Above the limit too (sessions opened before it was lowered): still refused.
    expect(codes(analyze(facts({ roles: [role({ connections: 30 })] }), ctx))).toEqual(["warning:RoleLimitReached"]);
    expect(isOk(findings)).toBe(false);
  });

  it("a limit below the share: a warning with the share and the ALTER ROLE, quoted; at it, both", () => {
    const below = role({ role: "Shop App", connectionLimit: 3, connections: 1, policies: ["shop/p", "shop/p2"] });
    const [f] = analyze(facts({ roles: [below] }), ctx);
    expect(f).toMatchObject({ severity: "warning", code: "RoleLimitBelowShare" });
    expect(f!.message).toBe(
      'the CONNECTION LIMIT of role "Shop App" is 3, below its share 22 (worst-case demand 20 of 2 policies + margin 2): its apps\' pools cannot all connect at their worst case',
    );
    expect(f!.recommendation).toBe(
      'the operator raises it to 22 before the pools grow: if it stays below, check that the operator runs and read the RoleConnectionLimit condition of shop/p, shop/p2; by hand: ALTER ROLE "Shop App" CONNECTION LIMIT 22',
    );
    const full = analyze(facts({ roles: [{ ...below, connections: 3 }] }), ctx);
    expect(codes(full)).toEqual(["warning:RoleLimitReached", "warning:RoleLimitBelowShare"]);
    expect(full[0]!.recommendation).toBe("its limit is below its share: see RoleLimitBelowShare");
  });

  it("a limit above the share, or none: a notice that the operator lowers it after the rollout", () => {
    for (const connectionLimit of [-1, 40]) {
      const findings = analyze(facts({ roles: [role({ connectionLimit })] }), ctx);
      expect(codes(findings)).toEqual(["notice:RoleLimitAboveShare"]);
      expect(findings[0]!.message).toContain(
        `role "app" has ${connectionLimit < 0 ? "no CONNECTION LIMIT" : "CONNECTION LIMIT 40"}, more than its share 22 (`,
      );
      expect(isOk(findings)).toBe(true);
    }
  });

  it("a role the operator refuses to limit: its reason and what to do; a superuser is never 'at its limit'", () => {
    const superuser = analyze(facts({ roles: [role({ superuser: true, connectionLimit: 2, connections: 9 })] }), ctx);
    expect(codes(superuser)).toEqual(["warning:RoleIsSuperuser"]);
    expect(superuser[0]!.message).toContain("PostgreSQL ignores CONNECTION LIMIT for superusers");
    expect(codes(analyze(facts({ roles: [role({ exists: false, connectionLimit: -1 })] }), ctx))).toEqual([
      "warning:RoleNotFound",
    ]);
    expect(codes(analyze(facts({ roles: [role({ operatorRole: true, connections: 22 })] }), ctx))).toEqual([
      "warning:OperatorRole",
    ]);
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
