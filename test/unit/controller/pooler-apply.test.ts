import type { AppsV1Api, CoreV1Api } from "@kubernetes/client-node";
import { describe, expect, it } from "vitest";
import { deletePoolerObject, RecentPoolerApplies, readPoolerObjects } from "../../../src/controller/pooler-apply.js";
import type { PoolerObjectRef, PoolerObjects } from "../../../src/pooler/pooler-objects.js";

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

  it("a deleted pooler is forgotten: declared again, it is applied at once", () => {
    const recent = new RecentPoolerApplies(600_000, () => 0);
    recent.record(objects("a", "x"));
    recent.forgetPooler("shop", "a");
    expect(recent.isFresh(objects("a", "x"))).toBe(false);
  });
});

/** An API error as client-node throws it: the HTTP status in `code`. */
const apiError = (code: number) => Object.assign(new Error(`HTTP ${code}`), { code });

/**
 * Stand-in clients that answer every call from `answer` and log it: the requests these functions
 * make, not the API server's behaviour (test/integration/operator/pooler.test.ts has that).
 */
function clients(answer: (call: string, params: Record<string, unknown>) => unknown) {
  const calls: { call: string; params: Record<string, unknown> }[] = [];
  const handler: ProxyHandler<object> = {
    get: (_target, call: string) => async (params: Record<string, unknown>) => {
      calls.push({ call, params });
      return answer(call, params);
    },
  };
  const proxy = new Proxy({}, handler);
  return { calls, apps: proxy as AppsV1Api, core: proxy as CoreV1Api };
}

describe("deleting a pooler's objects", () => {
  const ref: PoolerObjectRef = {
    pooler: "pgb",
    kind: "Deployment",
    namespace: "shop",
    name: "pgb",
    uid: "uid-deploy",
    owners: [],
  };

  it("deletes that very object (its uid a precondition), its pods with it", async () => {
    const c = clients(() => ({}));
    await deletePoolerObject(c, ref);
    expect(c.calls).toEqual([
      {
        call: "deleteNamespacedDeployment",
        params: {
          namespace: "shop",
          name: "pgb",
          body: { preconditions: { uid: "uid-deploy" }, propagationPolicy: "Background" },
        },
      },
    ]);
  });

  it("counts an object already gone (404) as deleted, and passes a 403 on", async () => {
    await expect(
      deletePoolerObject(
        clients(() => Promise.reject(apiError(404))),
        ref,
      ),
    ).resolves.toBeUndefined();
    await expect(
      deletePoolerObject(
        clients(() => Promise.reject(apiError(403))),
        ref,
      ),
    ).rejects.toMatchObject({
      code: 403,
    });
  });

  it("reads the objects that exist with their owners, and nothing of the Secret's content", async () => {
    const c = clients((call) => {
      if (call === "readNamespacedService") return Promise.reject(apiError(404));
      return {
        metadata: {
          uid: `uid-${call}`,
          ownerReferences: [{ apiVersion: "v1", kind: "PoolPolicy", name: "p", uid: "u" }],
        },
        data: { "userlist.txt": "c2VjcmV0" },
      };
    });
    const found = await readPoolerObjects(c, "shop", "pgb");
    expect(c.calls.map((x) => `${x.call} ${x.params.name}`)).toEqual([
      "readNamespacedConfigMap pgb",
      "readNamespacedSecret pgb-auth",
      "readNamespacedDeployment pgb",
      "readNamespacedService pgb",
    ]);
    expect(found.map((o) => `${o.kind} ${o.name}`)).toEqual(["ConfigMap pgb", "Secret pgb-auth", "Deployment pgb"]);
    expect(found[1]).toEqual({
      pooler: "pgb",
      kind: "Secret",
      namespace: "shop",
      name: "pgb-auth",
      uid: "uid-readNamespacedSecret",
      owners: [{ kind: "PoolPolicy", name: "p", uid: "u" }],
    });
    expect(JSON.stringify(found)).not.toContain("c2VjcmV0");
  });
});
