import { describe, expect, it } from "vitest";
import { keyOf, objectKey, splitKey } from "../../../src/kube/keys.js";

describe("keys", () => {
  it("are namespace/name, or name for cluster-scoped objects", () => {
    expect(objectKey({ metadata: { namespace: "ns", name: "a" } })).toBe("ns/a");
    expect(objectKey({ metadata: { name: "node-1" } })).toBe("node-1");
    expect(keyOf(undefined, "x")).toBe("x");
    expect(splitKey("ns/a")).toEqual({ namespace: "ns", name: "a" });
    expect(splitKey("x")).toEqual({ name: "x" });
  });
});
