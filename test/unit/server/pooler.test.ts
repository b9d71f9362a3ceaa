/**
 * The pooler of a server (src/server/pooler.ts): who declares it, who goes through it, what the
 * planner is given, and that every policy of the server sees the same pooler.
 */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { validateSpec } from "../../../src/api/schema.js";
import { computeBudget } from "../../../src/budget/budget.js";
import type { PolicyOnServer } from "../../../src/server/model.js";
import { poolerAddress, poolerPlanInput, poolerProblem, serverPooler } from "../../../src/server/pooler.js";
import { planPooler } from "../../../src/server/pooler-plan.js";

function onServer(
  key: string,
  over: { via?: "Direct" | "Pooler"; pooler?: Record<string, unknown>; database?: string } = {},
): PolicyOnServer {
  const [namespace] = key.split("/");
  const v = validateSpec({
    postgres: { host: "pg.db.svc", credentialsSecret: { name: "pg" }, database: over.database ?? "app" },
    targets: { selector: { matchLabels: { app: key } } },
    pool: { maxSize: 10, ...(over.via ? { via: over.via } : {}) },
    ...(over.pooler ? { pooler: over.pooler } : {}),
  });
  if (!v.ok) throw new Error(v.message);
  return { key, namespace: namespace!, spec: v.spec };
}

const pgb = { name: "pgbouncer", image: "pgbouncer:1.18" };

describe("the pooler of a server", () => {
  it("is declared by one policy and serves the policies whose pool goes via Pooler", () => {
    const peers = [
      onServer("apps/a", { via: "Pooler", pooler: pgb }),
      onServer("apps/b", { via: "Pooler", database: "reports" }),
      onServer("apps/c"),
    ];
    const pooler = serverPooler(peers);
    expect(pooler).toEqual({
      kind: "declared",
      declaredBy: ["apps/a"],
      namespace: "apps",
      spec: {
        name: "pgbouncer",
        image: "pgbouncer:1.18",
        replicas: 1,
        maxSurge: 1,
        port: 5432,
        poolMode: "Session",
        minServerConnectionsPerPod: 2,
        reservePoolSize: 0,
      },
      pooled: ["apps/a", "apps/b"],
      databases: ["app", "reports"],
    });
    if (pooler.kind !== "declared") return;
    expect(poolerAddress(pooler)).toEqual({ host: "pgbouncer.apps.svc", port: 5432 });
  });

  it("gives the planner the budget split by route, its reserve and the pooler's pods", () => {
    const peers = [onServer("apps/a", { via: "Pooler", pooler: { ...pgb, replicas: 2 } }), onServer("apps/c")];
    const pooler = serverPooler(peers);
    if (pooler.kind !== "declared") throw new Error(pooler.kind);
    const budget = computeBudget(
      [
        { policy: "apps/a", deployment: "apps/api", poolMax: 10, replicas: 30, strategy: { type: "Recreate" } },
        { policy: "apps/c", deployment: "apps/cron", poolMax: 5, replicas: 2, strategy: { type: "Recreate" } },
      ],
      { superuserReserved: 3, reserved: 0, operator: 2, extra: 0 },
      50,
    );
    const input = poolerPlanInput(pooler, budget, 50);
    expect(input).toMatchObject({ maxConnections: 50, reserved: 5, direct: 10, throughPooler: 300, databases: 1 });
    // 50 − 5 − 10 = 35 over 2 replicas + 1 surge: 11 per pod, for 300 clients.
    expect(planPooler(input, "pg.db.svc:5432")).toMatchObject({
      kind: "sized",
      pods: 3,
      perPod: 11,
      maxClientConn: 305,
    });
  });

  it("refuses policies that declare different poolers, and tells a pooled policy when none is declared", () => {
    const conflict = serverPooler([
      onServer("apps/a", { pooler: pgb }),
      onServer("apps/b", { via: "Pooler", pooler: { ...pgb, replicas: 3 } }),
    ]);
    expect(conflict).toMatchObject({ kind: "conflict", pooled: ["apps/b"] });
    expect(conflict.kind === "conflict" && conflict.message).toContain(
      "apps/a (apps/pgbouncer), apps/b (apps/pgbouncer)",
    );
    expect(poolerProblem(onServer("apps/a"), conflict)).toMatchObject({ reason: "PoolerConflict" });

    const none = serverPooler([onServer("apps/a", { via: "Pooler" }), onServer("apps/b")]);
    expect(none).toEqual({ kind: "none", pooled: ["apps/a"] });
    expect(poolerProblem(onServer("apps/a", { via: "Pooler" }), none)).toMatchObject({ reason: "PoolerNotDeclared" });
    expect(poolerProblem(onServer("apps/b"), none)).toBeUndefined();
  });

  it("accepts the same pooler declared on several policies", () => {
    const pooler = serverPooler([onServer("apps/a", { pooler: pgb }), onServer("apps/b", { pooler: pgb })]);
    expect(pooler).toMatchObject({ kind: "declared", declaredBy: ["apps/a", "apps/b"], pooled: [] });
  });

  it("is a function of the set of policies: any order of the peers gives the same pooler", () => {
    fc.assert(
      fc.property(
        fc.array(
          fc.record({
            via: fc.constantFrom("Direct" as const, "Pooler" as const),
            declares: fc.constantFrom(0, 1, 2),
            database: fc.constantFrom("app", "reports"),
          }),
          { minLength: 1, maxLength: 6 },
        ),
        fc.nat(),
        (shapes, seed) => {
          const declared = [pgb, { ...pgb, replicas: 2 }];
          const peers = shapes.map((s, i) =>
            onServer(`apps/p${i}`, {
              via: s.via,
              database: s.database,
              pooler: s.declares === 0 ? undefined : declared[s.declares - 1],
            }),
          );
          const shuffled = [...peers].sort(
            (x, y) => ((x.key.charCodeAt(7) * (seed + 1)) % 7) - ((y.key.charCodeAt(7) * (seed + 1)) % 7),
          );
          expect(serverPooler(shuffled)).toEqual(serverPooler(peers));
        },
      ),
    );
  });
});

describe("spec.pooler and spec.pool.via", () => {
  const minimal = {
    postgres: { host: "db", credentialsSecret: { name: "pg" } },
    targets: { selector: { matchLabels: { app: "x" } } },
  };

  it("defaults via to Direct and leaves the pooler out unless declared", () => {
    const v = validateSpec(minimal);
    expect(v.ok && [v.spec.pool.via, v.spec.pooler]).toEqual(["Direct", undefined]);
  });

  it.each([
    [{ pooler: { name: "PgBouncer", image: "x" } }, "spec.pooler.name: must be a DNS-1035 label"],
    [{ pooler: { name: "1pgb", image: "x" } }, "spec.pooler.name: must be a DNS-1035 label"],
    [{ pooler: { name: "pgb" } }, "spec.pooler.image"],
    [{ pooler: { name: "pgb", image: "x", poolMode: "Statement" } }, "spec.pooler.poolMode"],
    [{ pooler: { name: "pgb", image: "x", replicas: 0 } }, "spec.pooler.replicas"],
    [{ pool: { via: "PgBouncer" } }, "spec.pool.via"],
  ])("rejects %j naming the field", (over, field) => {
    const v = validateSpec({ ...minimal, ...over });
    expect(v).toMatchObject({ ok: false, message: expect.stringContaining(field) });
  });
});
