import { describe, expect, it } from "vitest";
import fc from "fast-check";
import type { V1Deployment, V2HorizontalPodAutoscaler } from "@kubernetes/client-node";
import type { PoolPolicy } from "../../../src/api/schema.js";
import type { ServerFacts } from "../../../src/postgres/inspect.js";
import { serverFacts } from "../fixtures/server-facts.js";
import { canonicalHost, serverKey } from "../../../src/server/identity.js";
import {
  desiredMaxConnections,
  desireOfPolicy,
  gatherBudgetTargets,
  policiesOnServer,
  serverBudget,
  serverOfPolicy,
  serverMemory,
  serverSettings,
  type TargetReader,
  workloadPolicy,
} from "../../../src/server/model.js";
import { DEFAULT_PER_CONNECTION_BYTES } from "../../../src/server/memory.js";

const facts = (over: Partial<ServerFacts> = {}): ServerFacts =>
  serverFacts({ postmasterStartTime: new Date("2026-11-30T10:00:00Z"), ...over });

interface PolicyShape {
  namespace: string;
  name: string;
  host: string;
  maxConnections?: number | "auto";
  reserve: number;
  headroomPercent: number;
  ceiling: number;
  poolMax: number;
  app: string;
  /** spec.postgres.restart.workload.name: the StatefulSet whose memory limit the ceiling reads. */
  workload?: string;
  perConnection?: string;
}

function policy(s: PolicyShape): PoolPolicy {
  return {
    apiVersion: "pooling.dbops.io/v1alpha1",
    kind: "PoolPolicy",
    metadata: { name: s.name, namespace: s.namespace },
    spec: {
      postgres: {
        host: s.host,
        port: 5432,
        database: "app",
        credentialsSecret: { name: "pg" },
        ...(s.maxConnections === undefined ? {} : { maxConnections: s.maxConnections }),
        ...(s.workload === undefined ? {} : { restart: { workload: { kind: "StatefulSet", name: s.workload } } }),
        ...(s.perConnection === undefined ? {} : { memory: { perConnection: s.perConnection } }),
      },
      budget: { reserve: s.reserve, headroomPercent: s.headroomPercent, ceiling: s.ceiling },
      pool: { minSize: 1, maxSize: s.poolMax },
      targets: { selector: { matchLabels: { app: s.app } } },
    },
  } as unknown as PoolPolicy;
}

/** A cluster of Deployments: `replicas` pods of app label `app`, in every namespace asked. */
function reader(apps: Record<string, number>): TargetReader {
  return {
    deployments: async (_key, _namespace, selector) => {
      const app = selector.replace(/^app=/, "");
      const replicas = apps[app];
      if (replicas === undefined) return [];
      return [{ metadata: { name: app }, spec: { replicas, strategy: { type: "Recreate" } } } as V1Deployment];
    },
    hpas: async () => [] as V2HorizontalPodAutoscaler[],
  };
}

/** The memory limit of each PostgreSQL StatefulSet the policies may name. */
const WORKLOAD_MEMORY: Record<string, number> = { "pg-small": 512 * 2 ** 20, "pg-big": 4 * 2 ** 30 };

/** What one reconcile of `self` decides about the server, given the cache's list in some order. */
async function decide(all: PoolPolicy[], self: PoolPolicy, apps: Record<string, number>, f: ServerFacts) {
  const server = serverOfPolicy({ namespace: self.metadata.namespace, spec: self.spec as never });
  const peers = policiesOnServer(all, server);
  const settings = serverSettings(peers);
  const budget = serverBudget(await gatherBudgetTargets(reader(apps), peers), f, settings);
  const owner = workloadPolicy(peers);
  const name = owner?.spec.postgres.restart?.workload.name;
  const workload = name
    ? {
        found: true,
        description: `StatefulSet ${owner!.namespace}/${name}`,
        memory: {
          known: true as const,
          bytes: WORKLOAD_MEMORY[name]!,
          source: "limit" as const,
          container: "postgres",
        },
      }
    : undefined;
  const memory = serverMemory(workload, f, settings);
  return { budget, memory, desire: desiredMaxConnections(peers, budget, f, memory) };
}

const shape = fc.record({
  namespace: fc.constantFrom("apps", "team-b"),
  name: fc.string({ minLength: 1, maxLength: 6, unit: fc.constantFrom("a", "b", "c", "-") }).map((n) => `p${n}`),
  // One server, spelled several ways.
  host: fc.constantFrom("pg.db.svc.cluster.local", "PG.db.svc.cluster.local.", "pg.db.svc"),
  maxConnections: fc.option(fc.constantFrom<number | "auto">("auto", "auto", 300), { nil: undefined }),
  reserve: fc.integer({ min: 0, max: 100 }),
  headroomPercent: fc.integer({ min: 0, max: 100 }),
  ceiling: fc.integer({ min: 50, max: 2000 }),
  poolMax: fc.integer({ min: 1, max: 40 }),
  app: fc.constantFrom("api", "web", "worker"),
  workload: fc.option(fc.constantFrom("pg-small", "pg-big"), { nil: undefined }),
  perConnection: fc.option(fc.constantFrom("2Mi", "4Mi", "9.1Mi"), { nil: undefined }),
});

describe("which server", () => {
  it("ignores case and a trailing dot, completes Service names, keeps other names and addresses", () => {
    expect(canonicalHost("PG.db.svc.Cluster.Local.", "apps")).toBe("pg.db.svc.cluster.local");
    expect(canonicalHost("postgres", "apps")).toBe("postgres.apps.svc.cluster.local");
    expect(canonicalHost("postgres.db.svc", "apps")).toBe("postgres.db.svc.cluster.local");
    expect(canonicalHost("localhost", "apps")).toBe("localhost");
    expect(canonicalHost("10.0.0.7", "apps")).toBe("10.0.0.7");
    expect(canonicalHost("db.example.com", "apps")).toBe("db.example.com");
    expect(canonicalHost("::1", "apps")).toBe("::1");
  });

  it("tells apart one short Service name in two namespaces, and joins it with its full name", () => {
    expect(serverKey({ host: "postgres", port: 5432 }, "a")).not.toBe(serverKey({ host: "postgres", port: 5432 }, "b"));
    expect(serverKey({ host: "postgres", port: 5432 }, "a")).toBe(
      serverKey({ host: "postgres.a.svc.cluster.local", port: 5432 }, "b"),
    );
    expect(serverKey({ host: "pg", port: 5432 }, "a")).not.toBe(serverKey({ host: "pg", port: 5433 }, "a"));
  });
});

describe("one server, one decision", () => {
  it("the pair that restarted PostgreSQL 67 times asks for one value, and keeps asking for it once applied", async () => {
    const a = policy({
      ...{ namespace: "apps", name: "a", host: "pg.db", maxConnections: "auto", poolMax: 20, app: "api" },
      ...{ reserve: 5, headroomPercent: 20, ceiling: 1000 },
    });
    const b = policy({
      ...{ namespace: "apps", name: "b", host: "pg.db", maxConnections: "auto", poolMax: 20, app: "web" },
      ...{ reserve: 80, headroomPercent: 50, ceiling: 1000 },
    });
    const apps = { api: 3, web: 3 };
    const fromA = await decide([a, b], a, apps, facts());
    const fromB = await decide([b, a], b, apps, facts());
    expect(fromA.desire).toEqual(fromB.desire);
    // demand = 2 × 3 × 20 + (3 superuser + 2 operator + 80 reserve) = 205; +50 % → 307.5 → 310.
    expect(fromA.budget.demand).toBe(205);
    expect(fromA.desire).toMatchObject({ kind: "value", value: 310 });
    const applied = await decide([a, b], a, apps, facts({ maxConnections: 310 }));
    expect(applied.desire).toMatchObject({ kind: "value", value: 310 });
  });

  it("property: whichever policy is reconciled, in whatever order the cache lists them, one value", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.uniqueArray(shape, { minLength: 1, maxLength: 6, selector: (s) => `${s.namespace}/${s.name}` }),
        fc.integer({ min: 0, max: 1000 }),
        fc.record({ api: fc.integer({ min: 0, max: 10 }), web: fc.integer({ min: 0, max: 10 }) }),
        fc.integer({ min: 10, max: 3000 }),
        async (shapes, seed, apps, current) => {
          const all = shapes.map(policy);
          const f = facts({ maxConnections: current });
          const decisions = [];
          for (const [i, self] of all.entries()) {
            const order = [...all].sort(() => ((seed * (i + 7)) % 3) - 1);
            decisions.push(await decide(order, self, apps, f));
          }
          for (const d of decisions) {
            expect(d.desire).toEqual(decisions[0]!.desire);
            expect(d.budget.demand).toBe(decisions[0]!.budget.demand);
            expect(d.memory).toEqual(decisions[0]!.memory);
          }
        },
      ),
      { numRuns: 200 },
    );
  });

  it("property: the value asked for is a fixed point: once it is in force (sessions in use unchanged), the same value is asked again", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.uniqueArray(shape, { minLength: 1, maxLength: 6, selector: (s) => `${s.namespace}/${s.name}` }),
        fc.record({ api: fc.integer({ min: 0, max: 10 }), web: fc.integer({ min: 0, max: 10 }) }),
        fc.integer({ min: 10, max: 3000 }),
        fc.integer({ min: 0, max: 400 }),
        async (shapes, apps, current, inUse) => {
          const all = shapes.map(policy);
          // Fewer sessions later may allow one lowering (the next test); with the same sessions,
          // the value in force must be asked for again, or the server would restart in a loop.
          const connections = { total: inUse, active: inUse, idle: 0, idleInTransaction: 0 };
          const first = await decide(all, all[0]!, apps, facts({ maxConnections: current, connections }));
          if (first.desire.kind !== "value") return;
          const value = first.desire.value;
          const next = await decide(all, all[0]!, apps, facts({ maxConnections: value, connections }));
          expect(next.desire).toMatchObject({ kind: "value", value });
        },
      ),
      { numRuns: 200 },
    );
  });

  it("property: auto never sizes above what fits in the container's memory, unless sessions in use hold the current value", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.uniqueArray(shape, { minLength: 1, maxLength: 6, selector: (s) => `${s.namespace}/${s.name}` }),
        fc.record({ api: fc.integer({ min: 0, max: 60 }), web: fc.integer({ min: 0, max: 60 }) }),
        fc.integer({ min: 10, max: 3000 }),
        fc.integer({ min: 0, max: 400 }),
        async (shapes, apps, current, inUse) => {
          const all = shapes.map((s) => policy({ ...s, maxConnections: "auto", workload: s.workload ?? "pg-small" }));
          const connections = { total: inUse, active: inUse, idle: 0, idleInTransaction: 0 };
          const { desire, memory } = await decide(all, all[0]!, apps, facts({ maxConnections: current, connections }));
          if (desire.kind !== "value" || !memory.known) throw new Error("auto with a known limit always sizes");
          if (desire.value === current && desire.source.includes("not lowering")) return;
          expect(desire.value).toBeLessThanOrEqual(Math.max(memory.ceiling.ceiling, memory.minimum));
          expect(desire.value).toBeGreaterThanOrEqual(
            Math.min(memory.minimum, ...all.map((p) => (p.spec as any).budget.ceiling)),
          );
        },
      ),
      { numRuns: 200 },
    );
  });

  it("does not lower an auto value below the sessions in use; lowers it once they fit", async () => {
    const p = policy({
      ...{ namespace: "apps", name: "a", host: "pg", maxConnections: "auto", poolMax: 10, app: "api" },
      ...{ reserve: 0, headroomPercent: 0, ceiling: 1000 },
    });
    const busy = { total: 150, active: 150, idle: 0, idleInTransaction: 0 };
    const held = await decide([p], p, { api: 2 }, facts({ maxConnections: 200, connections: busy }));
    expect(held.desire).toMatchObject({ kind: "value", value: 200 });
    const quiet = await decide([p], p, { api: 2 }, facts({ maxConnections: 200 }));
    expect(quiet.desire).toMatchObject({ kind: "value", value: 30 }); // 2 × 10 + 5 reserved → 25 → 30
  });

  it("explicit values win over auto; two explicit values are a conflict; no value leaves the server alone", async () => {
    const base = { namespace: "apps", host: "pg", reserve: 0, headroomPercent: 20, ceiling: 1000, poolMax: 5 };
    const auto = policy({ ...base, name: "a", maxConnections: "auto", app: "api" });
    const fixed = policy({ ...base, name: "b", maxConnections: 300, app: "web" });
    const other = policy({ ...base, name: "c", maxConnections: 400, app: "web" });
    const none = policy({ ...base, name: "d", app: "web" });
    expect((await decide([auto, fixed], auto, {}, facts())).desire).toMatchObject({ kind: "value", value: 300 });
    expect((await decide([fixed, other], fixed, {}, facts())).desire.kind).toBe("conflict");
    expect((await decide([none], none, {}, facts())).desire.kind).toBe("unmanaged");
    // A policy that sets nothing leaves the value to the others.
    const peers = policiesOnServer([none, fixed], serverOfPolicy({ namespace: "apps", spec: none.spec as never }));
    const self = peers.find((p) => p.key === "apps/d")!;
    expect(desireOfPolicy(self, { kind: "value", value: 300, source: "x" })).toEqual({ kind: "unmanaged" });
  });

  it("lists each policy's targets by name, whatever order the caches answer in", async () => {
    const p = policy({
      ...{ namespace: "apps", name: "a", host: "pg", poolMax: 5, app: "api" },
      ...{ reserve: 0, headroomPercent: 0, ceiling: 1000 },
    });
    const names = ["web", "api", "worker", "batch"];
    const read: TargetReader = {
      deployments: async () => names.map((name) => ({ metadata: { name }, spec: { replicas: 1 } }) as V1Deployment),
      hpas: async () => [],
    };
    const peers = policiesOnServer([p], serverKey({ host: "pg", port: 5432 }, "apps"));
    const targets = await gatherBudgetTargets(read, peers);
    expect(targets.map((t) => t.deployment)).toEqual(["apps/api", "apps/batch", "apps/web", "apps/worker"]);
  });

  it("the server's reserve is the largest declared, counted once; headroom the largest, ceiling the lowest", () => {
    const base = { namespace: "apps", host: "pg", poolMax: 5, app: "api", maxConnections: "auto" as const };
    const peers = policiesOnServer(
      [
        policy({ ...base, name: "a", reserve: 5, headroomPercent: 10, ceiling: 900 }),
        policy({ ...base, name: "b", reserve: 80, headroomPercent: 50, ceiling: 500 }),
      ],
      serverKey({ host: "pg", port: 5432 }, "apps"),
    );
    expect(serverSettings(peers)).toEqual({
      reserve: 80,
      headroomPercent: 50,
      ceiling: 500,
      perConnectionBytes: DEFAULT_PER_CONNECTION_BYTES,
    });
    const costs = policiesOnServer(
      [
        policy({ ...base, name: "a", reserve: 0, headroomPercent: 0, ceiling: 900, perConnection: "2Mi" }),
        policy({ ...base, name: "b", reserve: 0, headroomPercent: 0, ceiling: 900, perConnection: "9.1Mi" }),
        policy({ ...base, name: "c", reserve: 0, headroomPercent: 0, ceiling: 900 }),
      ],
      serverKey({ host: "pg", port: 5432 }, "apps"),
    );
    expect(serverSettings(costs).perConnectionBytes).toBe(Math.ceil(9.1 * 2 ** 20)); // the largest set counts
  });
});
