import type { V1Deployment } from "@kubernetes/client-node";
import { describe, expect, it } from "vitest";
import { liveTemplateCap, POOLER_CAP_ANNOTATION, podTemplateCap } from "../../../src/pooler/pooler-objects.js";

describe("the cap on the pooler's pod template", () => {
  it("takes the planned cap when it is lower than the live one: the pods roll", () => {
    expect(podTemplateCap(8, 10)).toBe(8);
  });

  it("keeps the live cap when the planned one is higher or equal: no roll", () => {
    expect(podTemplateCap(12, 10)).toBe(10);
    expect(podTemplateCap(10, 10)).toBe(10);
  });

  it("takes the planned cap when no live one is known (no Deployment yet, or one applied before the annotation)", () => {
    expect(podTemplateCap(10, undefined)).toBe(10);
  });

  it("reads the live cap off the Deployment's pod template, undefined when absent or not a number", () => {
    const withCap = (value: string | undefined): V1Deployment => ({
      spec: {
        selector: {},
        template: { metadata: { annotations: value === undefined ? {} : { [POOLER_CAP_ANNOTATION]: value } } },
      },
    });
    expect(liveTemplateCap(withCap("17"))).toBe(17);
    expect(liveTemplateCap(withCap(undefined))).toBeUndefined();
    expect(liveTemplateCap(withCap("x"))).toBeUndefined();
    expect(liveTemplateCap(undefined)).toBeUndefined();
  });
});
