import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { parseDuration } from "../../../src/api/duration.js";
import { type PoolPolicySpec, validateSpec } from "../../../src/api/schema.js";
import { specDurations } from "../../../src/api/spec-durations.js";

const minimal = {
  postgres: { host: "db", credentialsSecret: { name: "pg" } },
  targets: { selector: { matchLabels: { app: "x" } } },
};

function valid(spec: unknown): PoolPolicySpec {
  const result = validateSpec(spec);
  if (!result.ok) throw new Error(result.message);
  return result.spec;
}

describe("specDurations", () => {
  it("gives the defaults of a minimal spec in ms, and no window nor delay without a restart section", () => {
    expect(specDurations(valid(minimal))).toEqual({
      reaperIntervalMs: 60_000,
      idleInTransactionTimeoutMs: 300_000,
      delayBetweenPodsMs: 0,
      maintenanceWindowMs: undefined,
    });
  });

  it("reads every duration the spec sets", () => {
    const spec = valid({
      ...minimal,
      postgres: {
        ...minimal.postgres,
        restart: {
          workload: { name: "postgres" },
          delayBetweenPods: "1.5s",
          maintenanceWindow: { days: ["Sat"], start: "02:00", duration: "1h30m" },
        },
      },
      reaper: { interval: "90s", idleInTransactionTimeout: "2m" },
    });
    expect(specDurations(spec)).toEqual({
      reaperIntervalMs: 90_000,
      idleInTransactionTimeoutMs: 120_000,
      delayBetweenPodsMs: 1_500,
      maintenanceWindowMs: 5_400_000,
    });
  });

  it("takes the schema's default delay between pods when a restart section leaves it out", () => {
    const spec = valid({ ...minimal, postgres: { ...minimal.postgres, restart: { workload: { name: "pg" } } } });
    expect(specDurations(spec).delayBetweenPodsMs).toBe(10_000);
  });

  it("property: for any spec the schema admits, each field is its text parsed", () => {
    const duration = fc
      .array(fc.tuple(fc.integer({ min: 0, max: 500 }), fc.constantFrom("ms", "s", "m", "h")), {
        minLength: 1,
        maxLength: 3,
      })
      // "1m" first: every text is then at or above each field's minimum (the largest is the window's 1m).
      .map((parts) => `1m${parts.map(([n, unit]) => `${n}${unit}`).join("")}`);
    fc.assert(
      fc.property(duration, duration, duration, duration, (interval, timeout, delay, length) => {
        const result = validateSpec({
          ...minimal,
          postgres: {
            ...minimal.postgres,
            restart: {
              workload: { name: "pg" },
              delayBetweenPods: delay,
              maintenanceWindow: { days: ["Sun"], start: "03:00", duration: length },
            },
          },
          reaper: { interval, idleInTransactionTimeout: timeout },
        });
        if (!result.ok) throw new Error(result.message);
        expect(specDurations(result.spec)).toEqual({
          reaperIntervalMs: parseDuration(interval),
          idleInTransactionTimeoutMs: parseDuration(timeout),
          delayBetweenPodsMs: parseDuration(delay),
          maintenanceWindowMs: parseDuration(length),
        });
      }),
    );
  });

  it("throws, naming the field, for a spec that skipped validation", () => {
    const spec = valid(minimal);
    const unvalidated = { ...spec, reaper: { ...spec.reaper, idleInTransactionTimeout: "5 minutes" } };
    expect(() => specDurations(unvalidated)).toThrow(
      'spec.reaper.idleInTransactionTimeout "5 minutes" is not a duration: the spec was used without validateSpec',
    );
  });
});
