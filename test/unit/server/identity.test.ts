/**
 * The host read as a Kubernetes Service, and the Postgres operator's resource behind a Service:
 * the two facts discovery (controller/discovery.ts) rests on.
 */
import { describe, expect, it } from "vitest";
import { type ServiceFacts, ownerOfService, serviceOfHost } from "../../../src/server/identity.js";

describe("serviceOfHost", () => {
  it.each([
    ["pg-rw", "shop", { name: "pg-rw", namespace: "shop" }],
    ["pg-rw.db", "shop", { name: "pg-rw", namespace: "db" }],
    ["PG-RW.db.svc", "shop", { name: "pg-rw", namespace: "db" }],
    ["pg-rw.db.svc.cluster.local.", "shop", { name: "pg-rw", namespace: "db" }],
  ])("%s from namespace %s is a Service", (host, namespace, expected) => {
    expect(serviceOfHost(host, namespace)).toEqual(expected);
  });

  it.each([["127.0.0.1"], ["10.0"], ["::1"], ["localhost"], ["db.example.com"], ["pg.db.svc.other.domain"]])(
    "%s names no Service",
    (host) => {
      expect(serviceOfHost(host, "shop")).toBeUndefined();
    },
  );
});

const service = (over: Partial<ServiceFacts>): ServiceFacts => ({
  name: "pg",
  namespace: "db",
  labels: {},
  ownerReferences: [],
  ...over,
});

describe("ownerOfService", () => {
  it("reads CloudNativePG's owner reference, else its cluster label; -ro and -r point to -rw", () => {
    const owned = service({
      name: "pg-rw",
      ownerReferences: [{ apiVersion: "postgresql.cnpg.io/v1", kind: "Cluster", name: "pg", controller: true }],
    });
    expect(ownerOfService(owned)).toMatchObject({
      operator: { name: "CloudNativePG", kind: "Cluster" },
      name: "pg",
      namespace: "db",
      evidence: "its owner reference",
    });
    expect(ownerOfService(owned)?.primaryService).toBeUndefined();
    const labelled = ownerOfService(service({ name: "pg-ro", labels: { "cnpg.io/cluster": "pg" } }));
    expect(labelled).toMatchObject({ name: "pg", evidence: "label cnpg.io/cluster=pg", primaryService: "pg-rw" });
    expect(ownerOfService(service({ name: "pg-r", labels: { "cnpg.io/cluster": "pg" } }))?.primaryService).toBe(
      "pg-rw",
    );
  });

  it("reads Zalando's labels (both of them); -repl points to the cluster's own Service", () => {
    const labels = { application: "spilo", "cluster-name": "acid-shop", "spilo-role": "master", team: "acid" };
    expect(ownerOfService(service({ name: "acid-shop", labels }))).toEqual({
      operator: expect.objectContaining({ name: "Zalando's postgres-operator", kind: "postgresql" }),
      name: "acid-shop",
      namespace: "db",
      evidence: "labels application=spilo, cluster-name=acid-shop",
    });
    const replicas = ownerOfService(
      service({ name: "acid-shop-repl", labels: { ...labels, "spilo-role": "replica" } }),
    );
    expect(replicas?.primaryService).toBe("acid-shop");
    // "cluster-name" alone is a common label: without Spilo's it says nothing.
    expect(ownerOfService(service({ labels: { "cluster-name": "acid-shop" } }))).toBeUndefined();
  });

  it("ignores owner references that are not a controller or not an operator's resource", () => {
    const refs = [
      { apiVersion: "postgresql.cnpg.io/v1", kind: "Cluster", name: "pg", controller: false },
      { apiVersion: "apps/v1", kind: "StatefulSet", name: "pg", controller: true },
    ];
    expect(ownerOfService(service({ ownerReferences: refs }))).toBeUndefined();
  });
});
