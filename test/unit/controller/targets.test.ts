import { describe, expect, it } from "vitest";
import type { AppsV1Api, V1Deployment } from "@kubernetes/client-node";
import { validateSpec } from "../../../src/api/schema.js";
import { MAX_TAKES, takesAnnotation, takesOf } from "../../../src/controller/env-conflicts.js";
import { applyPoolEnv, describeInjected } from "../../../src/controller/targets.js";

describe("describeInjected (the one EnvInjected Event of a pass)", () => {
  it("names a single Deployment and its containers", () => {
    expect(describeInjected([{ name: "api", containers: ["app"] }])).toBe("Deployment api (containers: app)");
  });

  it("counts many, names the first ten and merges the containers", () => {
    const many = Array.from({ length: 12 }, (_, i) => ({
      name: `app-${String(i).padStart(2, "0")}`,
      containers: i === 3 ? ["app", "worker"] : ["app"],
    }));
    expect(describeInjected(many)).toBe(
      "12 Deployments: app-00, app-01, app-02, app-03, app-04, app-05, app-06, app-07, app-08, app-09 and 2 more (containers: app, worker)",
    );
  });
});

/**
 * applyPoolEnv against a fake apps API (the real API server is in
 * test/integration/operator/env-conflict.test.ts): which requests a conflict leads to.
 */
describe("applyPoolEnv when another field manager holds the pool env", () => {
  const spec = validateSpec({
    postgres: { host: "pg", database: "app", credentialsSecret: { name: "pg" } },
    pool: { minSize: 2, maxSize: 8 },
    targets: { selector: { matchLabels: { app: "api" } } },
  });
  if (!spec.ok) throw new Error(spec.message);
  const conflict409 = Object.assign(new Error("HTTP 409"), {
    code: 409,
    body: JSON.stringify({
      kind: "Status",
      code: 409,
      details: { causes: [{ reason: "FieldManagerConflict", message: 'conflict with "gitops"', field: ".spec…" }] },
    }),
  });
  const deployment = (max: string, annotations?: Record<string, string>): V1Deployment => ({
    metadata: { name: "api", namespace: "apps", generation: 2, annotations },
    spec: {
      selector: {},
      template: {
        spec: {
          containers: [
            {
              name: "app",
              image: "x",
              env: [
                { name: "DB_POSTGRES_MIN_CONN", value: "2" },
                { name: "DB_POSTGRES_MAX_CONN", value: max },
              ],
            },
          ],
        },
      },
    },
    status: { observedGeneration: 2, replicas: 1, updatedReplicas: 1, availableReplicas: 1 },
  });
  /** An apps API that refuses applies without force, as the API server does while "gitops" owns the value. */
  function fakeApps() {
    const calls: { force: boolean; annotations?: Record<string, string> }[] = [];
    const apps = {
      patchNamespacedDeployment: async (req: { force?: boolean; body: { metadata: { annotations?: object } } }) => {
        calls.push({ force: req.force ?? false, annotations: req.body.metadata.annotations as Record<string, string> });
        if (!req.force) throw conflict409;
        return deployment("8", req.body.metadata.annotations as Record<string, string>);
      },
    } as unknown as AppsV1Api;
    return { apps, calls };
  }
  const now = new Date("2026-11-30T10:00:00Z");

  it("takes the value back with force, writing the count on the Deployment in the same apply", async () => {
    const { apps, calls } = fakeApps();
    const outcome = await applyPoolEnv(apps, { name: "p", namespace: "apps" }, spec.spec, [deployment("50")], [], {
      now,
    });
    expect(calls.map((c) => c.force)).toEqual([false, true]);
    expect(takesOf({ metadata: { annotations: calls[1]!.annotations } })).toMatchObject({
      manager: "gitops",
      takes: 1,
      theirs: "DB_POSTGRES_MAX_CONN=50",
      ours: "DB_POSTGRES_MAX_CONN=8",
    });
    expect(outcome.condition.reason).not.toBe("ConflictingManager");
    expect(outcome.targets[0]).toMatchObject({ injected: true, conflict: { takes: 1 } });
  });

  it(`yields once the count is full: no forced apply, ConflictingManager, one Warning`, async () => {
    const full = {
      manager: "gitops",
      theirs: "DB_POSTGRES_MAX_CONN=60",
      ours: "DB_POSTGRES_MAX_CONN=8",
      takes: MAX_TAKES,
      since: new Date(now.getTime() - 60_000).toISOString(),
      last: new Date(now.getTime() - 30_000).toISOString(),
    };
    const { apps, calls } = fakeApps();
    const outcome = await applyPoolEnv(
      apps,
      { name: "p", namespace: "apps" },
      spec.spec,
      [deployment("50", takesAnnotation(full))],
      [],
      { now },
    );
    expect(calls.map((c) => c.force)).toEqual([false]);
    expect(outcome.condition).toMatchObject({ status: "False", reason: "ConflictingManager" });
    expect(outcome.condition.message).toContain('field manager "gitops" keeps setting DB_POSTGRES_MAX_CONN=50');
    expect(outcome.actions.filter((a) => a.reason === "EnvConflict" && a.warning)).toHaveLength(1);

    // The next pass, nothing changed: not even a request, and no second Warning. (The annotation
    // still says 60, as the last take saw it; the yield reported in the status says 50.)
    const again = fakeApps();
    const next = await applyPoolEnv(
      again.apps,
      { name: "p", namespace: "apps" },
      spec.spec,
      [deployment("50", takesAnnotation(full))],
      outcome.targets,
      { now },
    );
    expect(again.calls).toEqual([]);
    expect(next.condition.reason).toBe("ConflictingManager");
    expect(next.actions.filter((a) => a.reason === "EnvConflict")).toEqual([]);
  });
});

/** applyPoolEnv with and without a pooler route (the real API server: test/integration/operator/pooler-route.test.ts). */
describe("applyPoolEnv and the pooler route", () => {
  const spec = validateSpec({
    postgres: { host: "pg", database: "app", credentialsSecret: { name: "pg" } },
    pool: { minSize: 2, maxSize: 8, via: "Pooler" },
    targets: { selector: { matchLabels: { app: "api" } } },
  });
  if (!spec.ok) throw new Error(spec.message);
  const route = { host: "pgbouncer.db.svc", port: 6432 };
  type Body = { metadata: { annotations?: Record<string, string> }; spec?: unknown };
  /** A Deployment as an apply of `body` would leave it (env and annotations exactly the applied ones). */
  const asApplied = (body: Body): V1Deployment => {
    type Env = { name: string; value?: string }[];
    const containers = (body.spec as { template: { spec: { containers: { name: string; env: Env }[] } } }).template.spec
      .containers;
    return {
      metadata: { name: "api", namespace: "apps", generation: 3, annotations: body.metadata.annotations },
      spec: { selector: {}, template: { spec: { containers: containers.map((c) => ({ ...c, image: "x" })) } } },
      status: { observedGeneration: 3, replicas: 1, updatedReplicas: 1, availableReplicas: 1 },
    };
  };
  function recordingApps() {
    const bodies: Body[] = [];
    const apps = {
      patchNamespacedDeployment: async (req: { body: Body }) => {
        bodies.push(req.body);
        return asApplied(req.body);
      },
    } as unknown as AppsV1Api;
    return { apps, bodies };
  }
  const unrouted: V1Deployment = asApplied({
    metadata: {},
    spec: {
      template: {
        spec: {
          containers: [
            {
              name: "app",
              env: [
                { name: "DB_POSTGRES_MIN_CONN", value: "2" },
                { name: "DB_POSTGRES_MAX_CONN", value: "8" },
              ],
            },
          ],
        },
      },
    },
  });
  const policy = { name: "p", namespace: "apps" };

  it("points the apps at the pooler, marks the route, and leaves a routed Deployment alone", async () => {
    const first = recordingApps();
    await applyPoolEnv(first.apps, policy, spec.spec, [unrouted], [], { route });
    expect(first.bodies).toHaveLength(1);
    const env = (first.bodies[0]!.spec as { template: { spec: { containers: { env: object[] }[] } } }).template.spec
      .containers[0]!.env;
    expect(env).toContainEqual({ name: "DB_POSTGRES_HOST", value: "pgbouncer.db.svc" });
    expect(env).toContainEqual({ name: "DB_POSTGRES_PORT", value: "6432" });
    expect(first.bodies[0]!.metadata.annotations).toEqual({ "pooling.dbops.io/pooler-route": "pgbouncer.db.svc:6432" });

    const again = recordingApps();
    await applyPoolEnv(again.apps, policy, spec.spec, [asApplied(first.bodies[0]!)], [], { route });
    expect(again.bodies, "routed already: no request").toEqual([]);
  });

  it("withdraws the route by an apply without host, port and annotation, though min and max are in place", async () => {
    const routed = recordingApps();
    await applyPoolEnv(routed.apps, policy, spec.spec, [unrouted], [], { route });
    const withdrawn = recordingApps();
    await applyPoolEnv(withdrawn.apps, policy, spec.spec, [asApplied(routed.bodies[0]!)], [], {});
    expect(withdrawn.bodies).toHaveLength(1);
    const body = withdrawn.bodies[0]!;
    expect(body.metadata.annotations).toBeUndefined();
    const env = (body.spec as { template: { spec: { containers: { env: { name: string }[] }[] } } }).template.spec
      .containers[0]!.env;
    expect(env.map((e) => e.name)).toEqual(["DB_POSTGRES_MIN_CONN", "DB_POSTGRES_MAX_CONN"]);
  });
});
