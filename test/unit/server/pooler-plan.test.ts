/**
 * The pooler's sizes (src/server/pooler-plan.ts): the arithmetic on a worked example, the
 * refusal with its numbers, and the promise that a sized pooler never takes the server past
 * max_connections, by property.
 */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { computeBudget } from "../../../src/budget/budget.js";
import {
  POOLER_ADMIN_CLIENTS,
  type PoolerPlanInput,
  planPooler,
  splitByRoute,
} from "../../../src/server/pooler-plan.js";

const base: PoolerPlanInput = {
  maxConnections: 50,
  reserved: 5,
  direct: 10,
  throughPooler: 300,
  pods: { replicas: 1, strategy: { type: "RollingUpdate", rollingUpdate: { maxSurge: 1 } } },
  databases: 1,
  minServerConnectionsPerPod: 2,
  reservePoolSize: 0,
};

describe("sizing a pooler", () => {
  it("divides what direct clients and reserved slots leave among the worst-case pooler pods", () => {
    // 50 − 5 − 10 = 35 left; 1 replica + 1 surge = 2 pods; ⌊35 / 2⌋ = 17 each.
    expect(planPooler(base, "pg:5432")).toEqual({
      kind: "sized",
      pods: 2,
      left: 35,
      perPod: 17,
      maxDbConnections: 17,
      defaultPoolSize: 17,
      reservePoolSize: 0,
      maxClientConn: 300 + POOLER_ADMIN_CLIENTS,
    });
  });

  it("counts the HPA's maxReplicas and the surge, and keeps the reserve pool inside the share", () => {
    const plan = planPooler(
      { ...base, pods: { replicas: 2, hpaMaxReplicas: 4, strategy: { type: "RollingUpdate" } }, reservePoolSize: 2 },
      "pg:5432",
    );
    // 4 replicas + 25 % surge (1) = 5 pods; ⌊35 / 5⌋ = 7, of which 2 are the reserve pool.
    expect(plan).toMatchObject({ kind: "sized", pods: 5, perPod: 7, defaultPoolSize: 5, reservePoolSize: 2 });
  });

  it("splits a pod's share among the databases it serves", () => {
    const plan = planPooler({ ...base, databases: 3 }, "pg:5432");
    // ⌊35 / 2 / 3⌋ = 5 per database and pod.
    expect(plan).toMatchObject({ kind: "sized", perPod: 15, maxDbConnections: 5 });
  });

  it("refuses a pooler that cannot have its minimum per pod, with the numbers", () => {
    const plan = planPooler({ ...base, direct: 40, minServerConnectionsPerPod: 5 }, "pg:5432");
    expect(plan).toEqual({
      kind: "refused",
      reason: "PoolerDoesNotFit",
      needed: 5,
      available: 2,
      message:
        "the pooler needs at least 5 server connections per pod; pg:5432 has 5 left (max_connections 50 − direct clients 40 − reserved 5), " +
        "2 per pod for 2 worst-case pooler pods: raise max_connections, route more apps through the pooler, run fewer pooler pods, " +
        "or lower spec.pooler.minServerConnectionsPerPod",
    });
  });

  it("refuses when direct clients alone exceed the server, rather than sizing from a negative rest", () => {
    const plan = planPooler({ ...base, direct: 100 }, "pg:5432");
    expect(plan).toMatchObject({ kind: "refused", available: 0 });
    expect(plan.kind === "refused" && plan.message).toContain("has 0 left");
  });

  it("never lets pooler pods, direct clients and reserved slots together exceed max_connections", () => {
    fc.assert(
      fc.property(
        fc.record({
          maxConnections: fc.integer({ min: 1, max: 5000 }),
          reserved: fc.nat(50),
          direct: fc.nat(3000),
          throughPooler: fc.nat(10000),
          replicas: fc.integer({ min: 0, max: 40 }),
          hpaMax: fc.option(fc.integer({ min: 1, max: 60 }), { nil: undefined }),
          surge: fc.oneof(fc.nat(5), fc.constantFrom("25%", "50%", "100%")),
          recreate: fc.boolean(),
          databases: fc.integer({ min: 1, max: 6 }),
          min: fc.integer({ min: 1, max: 20 }),
          reservePool: fc.nat(10),
        }),
        (r) => {
          const plan = planPooler(
            {
              maxConnections: r.maxConnections,
              reserved: r.reserved,
              direct: r.direct,
              throughPooler: r.throughPooler,
              pods: {
                replicas: r.replicas,
                hpaMaxReplicas: r.hpaMax,
                strategy: r.recreate
                  ? { type: "Recreate" }
                  : { type: "RollingUpdate", rollingUpdate: { maxSurge: r.surge } },
              },
              databases: r.databases,
              minServerConnectionsPerPod: r.min,
              reservePoolSize: r.reservePool,
            },
            "pg:5432",
          );
          if (plan.kind === "refused") {
            expect(plan.available).toBeLessThan(plan.needed);
            return;
          }
          expect(plan.pods * plan.perPod + r.direct + r.reserved).toBeLessThanOrEqual(r.maxConnections);
          expect(plan.perPod).toBe(plan.maxDbConnections * r.databases);
          expect(plan.defaultPoolSize + plan.reservePoolSize).toBeLessThanOrEqual(plan.maxDbConnections);
          expect(plan.defaultPoolSize).toBeGreaterThanOrEqual(1);
          expect(plan.maxDbConnections).toBeGreaterThanOrEqual(r.min);
          expect(plan.maxClientConn).toBeGreaterThanOrEqual(r.throughPooler);
        },
      ),
      { numRuns: 2000 },
    );
  });

  it("is refused exactly when the even share would be below the minimum (no pooler that fits is refused)", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 500 }),
        fc.integer({ min: 1, max: 10 }),
        fc.integer({ min: 1, max: 10 }),
        (max, replicas, min) => {
          const input = {
            ...base,
            maxConnections: max,
            reserved: 0,
            direct: 0,
            databases: 1,
            minServerConnectionsPerPod: min,
          };
          const plan = planPooler({ ...input, pods: { replicas, strategy: { type: "Recreate" } } }, "pg");
          expect(plan.kind === "refused").toBe(Math.floor(max / replicas) < min);
        },
      ),
    );
  });
});

describe("the budget split by route", () => {
  it("puts the targets of pooled policies through the pooler and leaves the rest direct", () => {
    const budget = computeBudget(
      [
        { policy: "ns/a", deployment: "ns/api", poolMax: 10, replicas: 2, strategy: { type: "Recreate" } },
        { policy: "ns/b", deployment: "ns/jobs", poolMax: 5, replicas: 3, strategy: { type: "Recreate" } },
        { policy: "ns/b", deployment: "ns/cron", poolMax: 2, replicas: 1, strategy: { type: "Recreate" } },
      ],
      { superuserReserved: 3, reserved: 0, operator: 2, extra: 0 },
      100,
    );
    expect(splitByRoute(budget, new Set(["ns/b"]))).toEqual({ direct: 20, throughPooler: 17 });
    expect(splitByRoute(budget, new Set())).toEqual({ direct: 37, throughPooler: 0 });
  });
});
