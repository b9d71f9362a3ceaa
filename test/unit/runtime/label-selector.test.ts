import { describe, expect, it } from "vitest";
import { LabelSelector } from "../../../src/runtime/label-selector.js";
import { labelSelectorString } from "../../../src/kube/selectors.js";

const matches = (selector: string, labels: Record<string, string> | undefined) =>
  LabelSelector.parse(selector).matches(labels);

describe("LabelSelector", () => {
  it("matches equality, inequality and set requirements as the API server does", () => {
    expect(matches("app=shop", { app: "shop", tier: "web" })).toBe(true);
    expect(matches("app==shop", { app: "shop" })).toBe(true);
    expect(matches("app=shop", { app: "blog" })).toBe(false);
    expect(matches("app!=shop", { app: "blog" })).toBe(true);
    expect(matches("app!=shop", {})).toBe(true); // != selects objects without the label too
    expect(matches("app!=shop", { app: "shop" })).toBe(false);
    expect(matches("tier in (web, api)", { tier: "api" })).toBe(true);
    expect(matches("tier in (web,api)", { tier: "db" })).toBe(false);
    expect(matches("tier notin (web,api)", { tier: "db" })).toBe(true);
    expect(matches("tier notin (web,api)", {})).toBe(true);
    expect(matches("tier notin (web,api)", { tier: "web" })).toBe(false);
    expect(matches("tier", { tier: "" })).toBe(true);
    expect(matches("tier", {})).toBe(false);
    expect(matches("!tier", {})).toBe(true);
    expect(matches("!tier", { tier: "x" })).toBe(false);
  });

  it("requires every requirement, and an empty selector selects everything", () => {
    expect(matches("app=shop,tier in (web),!legacy", { app: "shop", tier: "web" })).toBe(true);
    expect(matches("app=shop,tier in (web),!legacy", { app: "shop", tier: "web", legacy: "1" })).toBe(false);
    expect(matches("", undefined)).toBe(true);
    expect(matches("app=shop", undefined)).toBe(false);
  });

  it("reads the string the reconciler makes of a PoolPolicy's matchLabels and matchExpressions", () => {
    const text = labelSelectorString({
      matchLabels: { "app.kubernetes.io/part-of": "shop" },
      matchExpressions: [
        { key: "tier", operator: "In", values: ["web", "api"] },
        { key: "env", operator: "NotIn", values: ["dev"] },
        { key: "team", operator: "Exists" },
        { key: "legacy", operator: "DoesNotExist" },
      ],
    });
    const selector = LabelSelector.parse(text);
    const labels = { "app.kubernetes.io/part-of": "shop", tier: "api", env: "prod", team: "a" };
    expect(selector.matches(labels)).toBe(true);
    expect(selector.matches({ ...labels, env: "dev" })).toBe(false);
    expect(selector.matches({ ...labels, legacy: "yes" })).toBe(false);
    const { team: _team, ...withoutTeam } = labels;
    expect(selector.matches(withoutTeam)).toBe(false);
  });

  it("names the index entries of its most selective equality or set requirement", () => {
    expect(LabelSelector.parse("a in (1,2,3),b=x").indexKeys()).toEqual(["b=x"]);
    expect(LabelSelector.parse("a in (1,2)").indexKeys()).toEqual(["a=1", "a=2"]);
    expect(LabelSelector.parse("a!=1,b,!c").indexKeys()).toBeUndefined();
    expect(LabelSelector.parse("").indexKeys()).toBeUndefined();
  });

  it("refuses what is not a selector, naming the part", () => {
    expect(() => LabelSelector.parse("a=b,in (x)")).toThrow(/"in \(x\)"/);
    expect(() => LabelSelector.parse("a=b=c")).toThrow(/invalid label selector requirement/);
  });
});
