import { describe, expect, it } from "vitest";
import { describeInjected } from "../../../src/controller/targets.js";

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
