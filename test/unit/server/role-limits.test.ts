/**
 * The share of an app role (src/server/role-limits.ts): the arithmetic, the one decision about a
 * role, and the invariance that keeps two policies naming one role from flapping its limit.
 */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { validateSpec } from "../../../src/api/schema.js";
import { computeBudget } from "../../../src/budget/budget.js";
import type { RoleFacts } from "../../../src/postgres/roles.js";
import type { PolicyOnServer } from "../../../src/server/model.js";
import { limitBefore, planRoleLimit, roleShare, roleShares } from "../../../src/server/role-limits.js";

function onServer(key: string, role: string | undefined, margin: number): PolicyOnServer {
  const v = validateSpec({
    postgres: { host: "pg", credentialsSecret: { name: "pg" } },
    targets: { selector: { matchLabels: { app: key } } },
    ...(role === undefined ? {} : { enforcement: { connectionLimit: { role, margin } } }),
  });
  if (!v.ok) throw new Error(v.message);
  return { key, namespace: "ns", spec: v.spec };
}

const reserve = { superuserReserved: 3, reserved: 0, operator: 2, extra: 0 };
const role = (over: Partial<RoleFacts> = {}): RoleFacts => ({
  name: "app",
  exists: true,
  superuser: false,
  isOperator: false,
  connectionLimit: -1,
  connections: 0,
  ...over,
});

describe("the share of a role", () => {
  it("sums the worst-case demand of the policies naming the role, plus their margins, and nothing of the others", () => {
    const peers = [onServer("ns/a", "app", 2), onServer("ns/b", "app", 3), onServer("ns/c", "other", 1)];
    const budget = computeBudget(
      [
        { policy: "ns/a", deployment: "ns/api", poolMax: 10, replicas: 2, strategy: { type: "Recreate" } },
        { policy: "ns/b", deployment: "ns/jobs", poolMax: 5, replicas: 1, hpaMaxReplicas: 3 }, // 3 + 25 % surge → 4
        { policy: "ns/c", deployment: "ns/web", poolMax: 50, replicas: 1 },
      ],
      reserve,
      500,
    );
    expect(roleShare(peers, budget, "app")).toEqual({
      role: "app",
      demand: 20 + 20,
      margin: 5,
      limit: 45,
      policies: ["ns/a", "ns/b"],
    });
    expect(roleShares(peers, budget).map((s) => [s.role, s.limit])).toEqual([
      ["app", 45],
      ["other", 101],
    ]);
  });

  it("is the same whichever policy computes it and in whatever order the peers come (no flapping)", () => {
    fc.assert(
      fc.property(
        fc.array(
          fc.record({
            role: fc.constantFrom("a", "b", undefined),
            margin: fc.nat(5),
            pool: fc.integer({ min: 1, max: 30 }),
            replicas: fc.nat(6),
          }),
          { minLength: 1, maxLength: 8 },
        ),
        fc.nat(),
        (shapes, seed) => {
          const peers = shapes.map((s, i) => onServer(`ns/p${i}`, s.role, s.margin));
          const targets = shapes.map((s, i) => ({
            policy: `ns/p${i}`,
            deployment: `ns/d${i}`,
            poolMax: s.pool,
            replicas: s.replicas,
          }));
          const shuffled = [...peers].sort(
            (x, y) => ((x.key.charCodeAt(2) * (seed + 1)) % 7) - ((y.key.charCodeAt(2) * (seed + 1)) % 7),
          );
          const a = roleShare(peers, computeBudget(targets, reserve, 100), "a");
          const b = roleShare(shuffled, computeBudget([...targets].reverse(), reserve, 100), "a");
          expect(b).toEqual(a);
          expect(a.limit).toBe(a.demand + a.margin);
        },
      ),
    );
  });
});

describe("the decision about a role", () => {
  const share = { role: "app", demand: 10, margin: 2, limit: 12, policies: ["ns/a"] };
  it("raises, lowers (no limit counts as infinity) or leaves a limit in force", () => {
    expect(planRoleLimit(share, role({ connectionLimit: 5 }), "pg:5432")).toEqual({
      kind: "change",
      direction: "raise",
      from: 5,
      limit: 12,
    });
    expect(planRoleLimit(share, role({ connectionLimit: 20 }), "pg:5432")).toMatchObject({ direction: "lower" });
    expect(planRoleLimit(share, role({ connectionLimit: -1 }), "pg:5432")).toMatchObject({
      direction: "lower",
      from: -1,
    });
    expect(planRoleLimit(share, role({ connectionLimit: 12 }), "pg:5432")).toEqual({ kind: "inForce", limit: 12 });
  });

  it("refuses a missing role, a superuser and the operator's own login, in that order", () => {
    const reasons = [
      role({ exists: false, superuser: true }),
      role({ superuser: true, isOperator: true }),
      role({ isOperator: true }),
    ].map((r) => planRoleLimit(share, r, "pg:5432"));
    expect(reasons.map((p) => (p.kind === "refused" ? p.reason : p.kind))).toEqual([
      "RoleNotFound",
      "RoleIsSuperuser",
      "OperatorRole",
    ]);
  });

  it("keeps the limit from before the first change: its own record, else a peer's, else what is in force", () => {
    expect(limitBefore("app", { role: "app", before: 7 }, [{ role: "app", before: 9 }], 12)).toBe(7);
    expect(limitBefore("app", { role: "old", before: 7 }, [undefined, { role: "app", before: 9 }], 12)).toBe(9);
    expect(limitBefore("app", undefined, [{ role: "other", before: 9 }], 12)).toBe(12);
  });
});
