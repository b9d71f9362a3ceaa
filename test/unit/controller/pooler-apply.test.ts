import { describe, expect, it } from "vitest";
import { RecentPoolerApplies } from "../../../src/controller/pooler-apply.js";
import type { PoolerObjects } from "../../../src/pooler/pooler-objects.js";

/** The four objects, reduced to what identifies a pooler and what a change touches. */
function objects(name: string, iniText: string): PoolerObjects {
  const metadata = { name, namespace: "shop" };
  return {
    configMap: { metadata, data: { "pgbouncer.ini": iniText } },
    secret: { metadata: { ...metadata, name: `${name}-auth` }, stringData: { "userlist.txt": '"app" "pw"' } },
    deployment: { metadata, spec: { selector: {}, template: {} } },
    service: { metadata },
  };
}

describe("RecentPoolerApplies: the declaring policy's pass skips an apply of the same objects", () => {
  const clock = () => {
    let t = 0;
    return { now: () => t, advance: (ms: number) => (t += ms) };
  };

  it("the same objects are fresh until the resync period has passed, then applied again", () => {
    const c = clock();
    const recent = new RecentPoolerApplies(600_000, c.now);
    const o = objects("pgb", "pool_size = 10");
    expect(recent.isFresh(o)).toBe(false);
    recent.record(o);
    expect(recent.isFresh(objects("pgb", "pool_size = 10"))).toBe(true);
    c.advance(599_999);
    expect(recent.isFresh(o)).toBe(true);
    c.advance(1);
    expect(recent.isFresh(o), "an object deleted by hand is put back within the resync period").toBe(false);
  });

  it("a change of any object (here the ConfigMap's pool size) is applied at once", () => {
    const recent = new RecentPoolerApplies(600_000, () => 0);
    recent.record(objects("pgb", "pool_size = 10"));
    expect(recent.isFresh(objects("pgb", "pool_size = 12"))).toBe(false);
  });

  it("poolers are told apart by their Deployment, and a failed apply is forgotten", () => {
    const recent = new RecentPoolerApplies(600_000, () => 0);
    recent.record(objects("a", "x"));
    expect(recent.isFresh(objects("b", "x"))).toBe(false);
    recent.forget(objects("a", "x"));
    expect(recent.isFresh(objects("a", "x"))).toBe(false);
  });
});
