import { describe, expect, it } from "vitest";
import type { V1Deployment } from "@kubernetes/client-node";
import {
  POOLER_ROUTE_ANNOTATION,
  desiredEnv,
  injectionApplyConfig,
  isInjected,
  routeIsCurrent,
  selectContainers,
} from "../../../src/controller/env-injection.js";
import { labelSelectorString } from "../../../src/kube/selectors.js";

const deployment = (containers: { name: string; env?: { name: string; value?: string }[] }[]): V1Deployment => ({
  metadata: { name: "api", namespace: "apps" },
  spec: { selector: {}, template: { spec: { containers: containers.map((c) => ({ ...c, image: "x" })) } } },
});
const pool = {
  minSize: 5,
  maxSize: 25,
  env: { min: "DB_POSTGRES_MIN_CONN", max: "DB_POSTGRES_MAX_CONN", host: "DB_POSTGRES_HOST", port: "DB_POSTGRES_PORT" },
  via: "Direct" as const,
};
const route = { host: "pgbouncer.db.svc", port: 6432 };

describe("env injection", () => {
  it("selects every container when none is named, else the named ones that exist", () => {
    const d = deployment([{ name: "app" }, { name: "proxy" }]);
    expect(selectContainers(d, [])).toEqual(["app", "proxy"]);
    expect(selectContainers(d, ["proxy", "missing"])).toEqual(["proxy"]);
  });

  it("sees the env as injected only when every selected container has both values", () => {
    const env = desiredEnv(pool);
    const ok = [
      { name: "DB_POSTGRES_MIN_CONN", value: "5" },
      { name: "DB_POSTGRES_MAX_CONN", value: "25" },
    ];
    expect(isInjected(deployment([{ name: "app", env: ok }]), ["app"], env)).toBe(true);
    expect(
      isInjected(
        deployment([{ name: "app", env: [ok[0]!, { name: "DB_POSTGRES_MAX_CONN", value: "10" }] }]),
        ["app"],
        env,
      ),
    ).toBe(false);
    expect(isInjected(deployment([{ name: "app", env: ok }, { name: "proxy" }]), ["app", "proxy"], env)).toBe(false);
  });

  it("applies only our two entries in the selected containers", () => {
    const body = injectionApplyConfig(deployment([{ name: "app" }]), ["app"], desiredEnv(pool));
    expect(body).toEqual({
      apiVersion: "apps/v1",
      kind: "Deployment",
      metadata: { name: "api", namespace: "apps" },
      spec: {
        template: {
          spec: {
            containers: [
              {
                name: "app",
                env: [
                  { name: "DB_POSTGRES_MIN_CONN", value: "5" },
                  { name: "DB_POSTGRES_MAX_CONN", value: "25" },
                ],
              },
            ],
          },
        },
      },
    });
  });

  it("adds host and port only with a pooler route, under the policy's names", () => {
    expect(desiredEnv(pool).map((e) => e.name)).toEqual(["DB_POSTGRES_MIN_CONN", "DB_POSTGRES_MAX_CONN"]);
    const named = { ...pool, env: { ...pool.env, host: "PGHOST", port: "PGPORT" } };
    expect(desiredEnv(named, route)).toEqual([
      { name: "DB_POSTGRES_MIN_CONN", value: "5" },
      { name: "DB_POSTGRES_MAX_CONN", value: "25" },
      { name: "PGHOST", value: "pgbouncer.db.svc" },
      { name: "PGPORT", value: "6432" },
    ]);
  });

  it("sees a withdrawn route as not current, though every wanted entry is there", () => {
    // The route was withdrawn: min and max are all that is wanted, and they are there; only the
    // annotation says that the host and port the policy set must go.
    const routed = deployment([{ name: "app", env: desiredEnv(pool, route) }]);
    routed.metadata!.annotations = { [POOLER_ROUTE_ANNOTATION]: "pgbouncer.db.svc:6432" };
    expect(isInjected(routed, ["app"], desiredEnv(pool))).toBe(true);
    expect(routeIsCurrent(routed, undefined)).toBe(false);
    expect(routeIsCurrent(routed, route)).toBe(true);
    expect(routeIsCurrent(routed, { ...route, port: 5432 })).toBe(false);
    // Never routed: no annotation, none wanted.
    expect(routeIsCurrent(deployment([{ name: "app" }]), undefined)).toBe(true);
  });

  it("renders label selectors as the list API takes them", () => {
    expect(
      labelSelectorString({
        matchLabels: { app: "x", tier: "web" },
        matchExpressions: [
          { key: "env", operator: "In", values: ["a", "b"] },
          { key: "canary", operator: "DoesNotExist" },
          { key: "team", operator: "Exists" },
          { key: "zone", operator: "NotIn", values: ["z"] },
        ],
      }),
    ).toBe("app=x,tier=web,env in (a,b),!canary,team,zone notin (z)");
  });
});
