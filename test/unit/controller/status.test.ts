import { describe, expect, it } from "vitest";
import { statusChanged, withUsage } from "../../../src/controller/status.js";
import type { ServerFacts } from "../../../src/postgres/inspect.js";

const facts = (total: number, max = 100): ServerFacts => ({
  version: "15",
  versionNum: 150000,
  maxConnections: max,
  settingSource: "default",
  pendingRestart: false,
  postmasterStartTime: new Date("2026-11-26T10:00:00Z"),
  superuserReservedConnections: 3,
  reservedConnections: 0,
  connections: { total, active: total, idle: 0, idleInTransaction: 0 },
  installedExtensions: [],
  availableExtensions: [],
  isSuperuser: true,
  mayAlterMaxConnections: true,
  allowAlterSystem: true,
  mayReadConfigFiles: true,
});

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
