import { describe, expect, it } from "vitest";
import { statusChanged, withUsage } from "../../../src/controller/status.js";
import type { ServerFacts } from "../../../src/postgres/inspect.js";
import { serverFacts } from "../fixtures/server-facts.js";

const facts = (total: number, max = 100): ServerFacts =>
  serverFacts({ maxConnections: max, connections: { total, active: total, idle: 0, idleInTransaction: 0 } });

describe("status writes", () => {
  it("keeps connection counts while usage moves less than 5 points, so a busy server does not cause a write a minute", () => {
    const first = withUsage(undefined, facts(10));
    expect(first).toMatchObject({ usagePercent: 10, usage: "10/100 (10%)" });
    const small = withUsage(first, facts(13));
    expect(statusChanged({ postgres: first }, { postgres: small })).toBe(false);
    const big = withUsage(first, facts(15));
    expect(big.usagePercent).toBe(15);
    expect(statusChanged({ postgres: first }, { postgres: big })).toBe(true);
  });

  it("treats absent and undefined fields alike", () => {
    expect(statusChanged({ targets: [] }, { targets: [], redis: undefined })).toBe(false);
  });
});
