import { describe, expect, it } from "vitest";
import { validateSpec } from "../../../src/api/schema.js";
import { formatDuration, parseDuration } from "../../../src/api/duration.js";

const minimal = {
  postgres: { host: "db", credentialsSecret: { name: "pg" } },
  targets: { selector: { matchLabels: { app: "x" } } },
};

describe("validateSpec", () => {
  it("fills in the defaults of a minimal spec", () => {
    const result = validateSpec(minimal);
    expect(result.ok).toBe(true);
    if (!result.ok) return;
    expect(result.spec.pool).toEqual({
      minSize: 5,
      maxSize: 25,
      env: {
        min: "DB_POSTGRES_MIN_CONN",
        max: "DB_POSTGRES_MAX_CONN",
        host: "DB_POSTGRES_HOST",
        port: "DB_POSTGRES_PORT",
      },
      via: "Direct",
    });
    expect(result.spec.pooler).toBeUndefined();
    expect(result.spec.reaper).toMatchObject({
      enabled: true,
      interval: "60s",
      idleInTransactionTimeout: "5m",
      dryRun: false,
    });
    expect(result.spec.postgres).toMatchObject({
      port: 5432,
      database: "postgres",
      sslMode: "prefer",
      requiredExtensions: [],
    });
    expect(result.spec.postgres.credentialsSecret).toEqual({
      name: "pg",
      usernameKey: "username",
      passwordKey: "password",
    });
  });

  it("takes a CloudNativePG Cluster as the restart workload only with its apiVersion", () => {
    const withWorkload = (workload: Record<string, string>) =>
      validateSpec({ ...minimal, postgres: { ...minimal.postgres, restart: { workload } } });
    const cluster = withWorkload({ apiVersion: "postgresql.cnpg.io/v1", kind: "Cluster", name: "pg" });
    expect(cluster.ok && cluster.spec.postgres.restart?.workload).toEqual({
      apiVersion: "postgresql.cnpg.io/v1",
      kind: "Cluster",
      name: "pg",
    });
    const pairing = "kind Cluster goes with apiVersion postgresql.cnpg.io/v1 (CloudNativePG), and only it";
    expect(withWorkload({ kind: "Cluster", name: "pg" })).toMatchObject({
      ok: false,
      message: expect.stringContaining(pairing),
    });
    const mismatched = withWorkload({ apiVersion: "postgresql.cnpg.io/v1", kind: "StatefulSet", name: "pg" });
    expect(mismatched).toMatchObject({ ok: false, message: expect.stringContaining(pairing) });
    expect(withWorkload({ apiVersion: "apps/v1", kind: "Deployment", name: "pg" }).ok).toBe(true);
  });

  it("takes a Zalando postgresql as the restart workload only with its apiVersion", () => {
    const withWorkload = (workload: Record<string, string>) =>
      validateSpec({ ...minimal, postgres: { ...minimal.postgres, restart: { workload } } });
    const zalando = withWorkload({ apiVersion: "acid.zalan.do/v1", kind: "postgresql", name: "pg" });
    expect(zalando.ok && zalando.spec.postgres.restart?.workload).toEqual({
      apiVersion: "acid.zalan.do/v1",
      kind: "postgresql",
      name: "pg",
    });
    const pairing = "kind postgresql goes with apiVersion acid.zalan.do/v1 (Zalando's postgres-operator), and only it";
    expect(withWorkload({ kind: "postgresql", name: "pg" })).toMatchObject({
      ok: false,
      message: expect.stringContaining(pairing),
    });
    const asStatefulSet = withWorkload({ apiVersion: "acid.zalan.do/v1", kind: "StatefulSet", name: "pg" });
    expect(asStatefulSet).toMatchObject({ ok: false, message: expect.stringContaining(pairing) });
    // Each owner's kind with the other's apiVersion: refused by both pairings.
    const crossed = withWorkload({ apiVersion: "postgresql.cnpg.io/v1", kind: "postgresql", name: "pg" });
    expect(crossed).toMatchObject({ ok: false, message: expect.stringContaining(pairing) });
  });

  it.each([
    [{ pool: { minSize: 30, maxSize: 10 } }, "spec.pool.minSize: minSize must not exceed maxSize"],
    [{ postgres: { ...minimal.postgres, maxConnections: 0 } }, "spec.postgres.maxConnections"],
    [{ postgres: { ...minimal.postgres, maxConnections: 262144 } }, "spec.postgres.maxConnections"],
    [{ postgres: { ...minimal.postgres, maxConnections: "100;DROP TABLE x" } }, "spec.postgres.maxConnections"],
    [{ postgres: { ...minimal.postgres, maxConnections: 10.5 } }, "spec.postgres.maxConnections"],
    [{ reaper: { interval: "1s" } }, "spec.reaper.interval: must be at least 5s"],
    [{ reaper: { idleInTransactionTimeout: "5 minutes" } }, "spec.reaper.idleInTransactionTimeout"],
    [{ targets: { selector: {} } }, "spec.targets.selector: selector must not be empty"],
    [
      { targets: { selector: { matchExpressions: [{ key: "a", operator: "In" }] } } },
      "spec.targets.selector.matchExpressions.0.values",
    ],
    [{ pool: { env: { min: "SAME", max: "SAME" } } }, "spec.pool.env"],
    [{ pool: { env: { host: "DB_POSTGRES_MAX_CONN" } } }, "spec.pool.env: env.min, env.max, env.host and env.port"],
    [{ pool: { env: { port: "PG", host: "PG" } } }, "spec.pool.env: env.min, env.max, env.host and env.port"],
    [{ pool: { env: { min: "1BAD" } } }, "spec.pool.env.min"],
    [
      {
        postgres: {
          ...minimal.postgres,
          restart: {
            workload: { name: "pg" },
            maintenanceWindow: { days: ["Sat"], start: "02:00", duration: "2h", timeZone: "Mars/Olympus" },
          },
        },
      },
      "spec.postgres.restart.maintenanceWindow.timeZone",
    ],
  ])("rejects %j naming the field", (patch, expected) => {
    const result = validateSpec({ ...minimal, ...patch });
    expect(result.ok).toBe(false);
    if (!result.ok) expect(result.message).toContain(expected);
  });

  it('accepts maxConnections "auto" and the bounds 1 and 262143', () => {
    for (const maxConnections of ["auto", 1, 262143]) {
      expect(validateSpec({ ...minimal, postgres: { ...minimal.postgres, maxConnections } }).ok).toBe(true);
    }
  });
});

describe("durations", () => {
  it.each([
    ["90s", 90_000],
    ["5m", 300_000],
    ["1h30m", 5_400_000],
    ["500ms", 500],
    ["1.5s", 1500],
  ])("parses %s", (text, ms) => {
    expect(parseDuration(text)).toBe(ms);
  });
  it.each(["", "5", "5 m", "1d", "-5s", "s"])("refuses %j", (text) => expect(parseDuration(text)).toBeUndefined());
  it("formats back", () => expect(formatDuration(5_400_000)).toBe("1h30m"));
});

describe("spec.postgres.memory.perConnection", () => {
  const withCost = (perConnection: string) =>
    validateSpec({ ...minimal, postgres: { ...minimal.postgres, memory: { perConnection } } });

  it.each(["4Mi", "2.5Mi", "9M", "256Ki", "1Gi"])("accepts %s", (q) => {
    expect(withCost(q).ok).toBe(true);
  });

  it.each([
    ["4MB", "must be a memory size such as 4Mi, 2.5Mi or 9M"],
    ["-1Mi", "must be a memory size such as 4Mi, 2.5Mi or 9M"],
    ["100Ki", "must be from 256Ki to 1Gi"],
    ["2Gi", "must be from 256Ki to 1Gi"],
  ])("refuses %s: %s", (q, message) => {
    const result = withCost(q);
    expect(result.ok).toBe(false);
    if (!result.ok) expect(result.message).toContain(`spec.postgres.memory.perConnection: ${message}`);
  });
});
