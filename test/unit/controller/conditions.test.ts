import { describe, expect, it } from "vitest";
import { setCondition, summarizeReady } from "../../../src/controller/conditions.js";

const t1 = new Date("2026-11-26T10:00:00Z");
const t2 = new Date("2026-11-26T11:00:00Z");

describe("setCondition", () => {
  it("moves lastTransitionTime only when the status flips", () => {
    let list = setCondition(
      [],
      { type: "PostgresReachable", status: "True", reason: "Connected", message: "a" },
      t1,
      1,
    );
    list = setCondition(list, { type: "PostgresReachable", status: "True", reason: "Connected", message: "b" }, t2, 2);
    expect(list[0]).toMatchObject({ lastTransitionTime: "2026-11-26T10:00:00Z", message: "b", observedGeneration: 2 });
    list = setCondition(list, { type: "PostgresReachable", status: "False", reason: "Timeout", message: "c" }, t2, 2);
    expect(list[0]!.lastTransitionTime).toBe("2026-11-26T11:00:00Z");
  });

  it("keeps one entry per type, in a stable order", () => {
    let list = setCondition([], { type: "RedisAvailable", status: "True", reason: "x", message: "" }, t1, 1);
    list = setCondition(list, { type: "Ready", status: "True", reason: "x", message: "" }, t1, 1);
    list = setCondition(list, { type: "Ready", status: "False", reason: "y", message: "" }, t1, 1);
    expect(list.map((c) => c.type)).toEqual(["Ready", "RedisAvailable"]);
  });
});

describe("summarizeReady", () => {
  it("is True when everything else is", () => {
    expect(summarizeReady([{ type: "PostgresReachable", status: "True", reason: "a", message: "" }]).status).toBe(
      "True",
    );
  });
  it("carries the first failing condition's reason and names the others", () => {
    const ready = summarizeReady([
      { type: "PostgresReachable", status: "True", reason: "a", message: "" },
      {
        type: "MaxConnectionsApplied",
        status: "False",
        reason: "CommandLineOverride",
        message: "set on the command line",
      },
      { type: "ExtensionsReady", status: "Unknown", reason: "PostgresUnreachable", message: "" },
    ]);
    expect(ready).toMatchObject({ status: "False", reason: "CommandLineOverride" });
    expect(ready.message).toContain("ExtensionsReady");
  });
});
