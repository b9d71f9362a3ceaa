import { describe, expect, it } from "vitest";
import fc from "fast-check";
import {
  autoSizeMaxConnections,
  computeBudget,
  surgePods,
  worstCasePods,
  type BudgetTarget,
} from "../../../src/budget/budget.js";

const reserve = { superuserReserved: 3, reserved: 0, operator: 2, extra: 0 };

describe("the budget arithmetic", () => {
  it("counts the rollout surge: a count, a percentage rounded up, none for Recreate", () => {
    expect(surgePods(4, { type: "RollingUpdate", rollingUpdate: { maxSurge: 1 } })).toBe(1);
    expect(surgePods(4, { type: "RollingUpdate", rollingUpdate: { maxSurge: "25%" } })).toBe(1);
    expect(surgePods(5, { type: "RollingUpdate", rollingUpdate: { maxSurge: "25%" } })).toBe(2);
    expect(surgePods(10, undefined)).toBe(3); // Kubernetes' default 25%
    expect(surgePods(10, { type: "Recreate" })).toBe(0);
  });

  it("takes the HPA's maxReplicas when it is larger than replicas", () => {
    expect(worstCasePods({ replicas: 2, hpaMaxReplicas: 10, strategy: { rollingUpdate: { maxSurge: 1 } } })).toBe(11);
    expect(worstCasePods({ replicas: 3, strategy: { type: "Recreate" } })).toBe(3);
  });

  it("adds pools and reserves, per target", () => {
    const targets: BudgetTarget[] = [
      { policy: "a/p", deployment: "a/api", poolMax: 25, replicas: 3, strategy: { rollingUpdate: { maxSurge: 1 } } },
      {
        policy: "b/q",
        deployment: "b/web",
        poolMax: 10,
        replicas: 2,
        hpaMaxReplicas: 6,
        strategy: { type: "Recreate" },
      },
    ];
    const budget = computeBudget(targets, { ...reserve, extra: 10 }, 150);
    expect(budget).toMatchObject({ demand: 4 * 25 + 6 * 10 + 15, capacity: 150, reserve: 15, withinLimits: false });
    expect(budget.targets.map((t) => t.connections)).toEqual([100, 60]);
  });

  it("property: after auto-sizing, the worst-case demand fits, unless the ceiling forbids it; never below usage", () => {
    fc.assert(
      fc.property(
        fc.array(
          fc.record({
            poolMax: fc.integer({ min: 1, max: 100 }),
            replicas: fc.integer({ min: 0, max: 50 }),
            hpa: fc.option(fc.integer({ min: 1, max: 100 }), { nil: undefined }),
            surge: fc.integer({ min: 0, max: 5 }),
          }),
          { maxLength: 20 },
        ),
        fc.integer({ min: 0, max: 200 }),
        fc.integer({ min: 1, max: 262143 }),
        fc.integer({ min: 0, max: 5000 }),
        (specs, headroomPercent, ceiling, currentUsage) => {
          const targets: BudgetTarget[] = specs.map((s, i) => ({
            policy: "ns/p",
            deployment: `ns/d${i}`,
            poolMax: s.poolMax,
            replicas: s.replicas,
            hpaMaxReplicas: s.hpa,
            strategy: { rollingUpdate: { maxSurge: s.surge } },
          }));
          const demand = computeBudget(targets, reserve, 1).demand;
          const size = autoSizeMaxConnections(demand, { headroomPercent, ceiling, currentUsage });
          const after = computeBudget(targets, reserve, size);
          if (size < ceiling) expect(after.withinLimits).toBe(true);
          expect(size).toBeLessThanOrEqual(Math.min(ceiling, 262143));
          if (currentUsage <= ceiling) expect(size).toBeGreaterThanOrEqual(Math.min(currentUsage, 262143));
          expect(size).toBeGreaterThanOrEqual(1);
        },
      ),
      { numRuns: 1000 },
    );
  });
});
