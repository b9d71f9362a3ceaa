import { describe, expect, it } from "vitest";
import {
  planMaxConnections,
  parseRestartRecord,
  formatRestartRecord,
  type MaxConnectionsInput,
} from "../../../src/controller/max-connections.js";
import type { ServerFacts } from "../../../src/postgres/inspect.js";

const T0 = new Date("2026-11-26T10:00:00.000Z");
const T1 = new Date("2026-11-26T10:05:00.000Z");

const facts = (over: Partial<ServerFacts> = {}): ServerFacts => ({
  version: "15.18",
  versionNum: 150018,
  maxConnections: 100,
  settingSource: "default",
  pendingRestart: false,
  postmasterStartTime: T0,
  superuserReservedConnections: 3,
  reservedConnections: 0,
  connections: { total: 1, active: 1, idle: 0, idleInTransaction: 0 },
  installedExtensions: [],
  availableExtensions: [],
  isSuperuser: true,
  mayAlterMaxConnections: true,
  allowAlterSystem: true,
  mayReadConfigFiles: true,
  ...over,
});
const workload = {
  configured: true,
  found: true,
  rolledOut: true,
  record: undefined,
  description: "StatefulSet db/postgres",
};
const input = (over: Partial<MaxConnectionsInput> = {}): MaxConnectionsInput => ({
  desired: 200,
  facts: facts(),
  workload,
  restartPolicy: "Automatic",
  approval: undefined,
  ...over,
});

describe("planMaxConnections", () => {
  it("alters, then requests one restart recorded against the current postmaster start", () => {
    const plan = planMaxConnections(input());
    expect(plan.alterTo).toBe(200);
    expect(plan.requestRestart).toEqual({ value: 200, after: T0 });
    expect(plan.restarting).toBe(true);
  });

  it("after a crash past the request, waits instead of restarting again", () => {
    const plan = planMaxConnections(
      input({
        facts: facts({ alterSystemValue: 200, pendingRestart: true }),
        workload: { ...workload, rolledOut: false, record: { value: 200, after: T0 } },
      }),
    );
    expect(plan.requestRestart).toBeUndefined();
    expect(plan.alterTo).toBeUndefined();
    expect(plan.condition.reason).toBe("RestartInProgress");
  });

  it("reports Applied, verified, once the new postmaster runs with the value", () => {
    const plan = planMaxConnections(
      input({
        facts: facts({ maxConnections: 200, postmasterStartTime: T1 }),
        workload: { ...workload, record: { value: 200, after: T0 } },
      }),
    );
    expect(plan.condition).toMatchObject({ status: "True", reason: "Applied" });
    expect(plan.condition.message).toContain("verified after the restart");
    expect(plan.restarting).toBe(false);
  });

  it("does not restart twice when the restart happened but the value did not change", () => {
    const plan = planMaxConnections(
      input({
        facts: facts({ postmasterStartTime: T1, settingSource: "configuration file" }),
        workload: { ...workload, record: { value: 200, after: T0 } },
      }),
    );
    expect(plan.requestRestart).toBeUndefined();
    expect(plan.condition.reason).toBe("VerificationFailed");
  });

  it("refuses to fight a command-line setting", () => {
    const plan = planMaxConnections(input({ facts: facts({ settingSource: "command line" }) }));
    expect(plan.alterTo).toBeUndefined();
    expect(plan.requestRestart).toBeUndefined();
    expect(plan.condition).toMatchObject({ status: "False", reason: "CommandLineOverride" });
    expect(plan.condition.message).toContain("ALTER SYSTEM cannot change it");
  });

  it("without access to pg_file_settings, alters once and then trusts the pending restart", () => {
    expect(planMaxConnections(input({ facts: facts({ mayReadConfigFiles: false }) })).alterTo).toBe(200);
    expect(
      planMaxConnections(input({ facts: facts({ mayReadConfigFiles: false, pendingRestart: true }) })).alterTo,
    ).toBeUndefined();
  });

  it("reports allow_alter_system = off", () => {
    expect(planMaxConnections(input({ facts: facts({ allowAlterSystem: false }) })).condition.reason).toBe(
      "AlterSystemDisabled",
    );
  });

  it("waits for the approval annotation under policy Manual, and proceeds once it names the value", () => {
    const waiting = planMaxConnections(input({ restartPolicy: "Manual", approval: "150" }));
    expect(waiting).toMatchObject({ alterTo: 200, condition: { reason: "AwaitingApproval" } });
    expect(waiting.requestRestart).toBeUndefined();
    expect(waiting.condition.message).toContain("pooling.dbops.io/approve-restart=200");
    expect(planMaxConnections(input({ restartPolicy: "Manual", approval: "200" })).requestRestart).toBeDefined();
  });

  it("without a workload, alters and says a restart is needed", () => {
    const plan = planMaxConnections(input({ workload: { ...workload, configured: false } }));
    expect(plan).toMatchObject({ alterTo: 200, condition: { reason: "RestartRequired" } });
    expect(plan.requestRestart).toBeUndefined();
  });

  it("with a missing workload, reports it", () => {
    expect(planMaxConnections(input({ workload: { ...workload, found: false } })).condition.reason).toBe(
      "WorkloadNotFound",
    );
  });

  it("leaves max_connections alone when not managed, and says auto is not available yet", () => {
    expect(planMaxConnections(input({ desired: undefined })).condition).toMatchObject({
      status: "True",
      reason: "NotManaged",
    });
    expect(planMaxConnections(input({ desired: "auto" })).condition).toMatchObject({
      status: "False",
      reason: "AutoSizingUnavailable",
    });
  });

  it("while PostgreSQL is unreachable mid-restart, keeps the restart in progress", () => {
    const plan = planMaxConnections(
      input({ facts: undefined, workload: { ...workload, record: { value: 200, after: T0 } } }),
    );
    expect(plan).toMatchObject({ restarting: true, condition: { status: "Unknown", reason: "RestartInProgress" } });
  });

  it("round-trips the restart record and ignores garbage", () => {
    expect(parseRestartRecord(formatRestartRecord({ value: 200, after: T0 }))).toEqual({ value: 200, after: T0 });
    expect(parseRestartRecord("200")).toBeUndefined();
    expect(parseRestartRecord("x@y")).toBeUndefined();
    expect(parseRestartRecord(undefined)).toBeUndefined();
  });
});
