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
