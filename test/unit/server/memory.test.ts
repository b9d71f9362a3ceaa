import { describe, expect, it } from "vitest";
import fc from "fast-check";
import {
  autovacuumMemory,
  containerMemory,
  DEFAULT_PER_CONNECTION_BYTES,
  FIXED_OVERHEAD_BYTES,
  formatBytes,
  memoryCeiling,
  postgresPodSpec,
} from "../../../src/server/memory.js";
import { parseMemoryQuantity } from "../../../src/api/quantity.js";
import { validateSpec } from "../../../src/api/schema.js";
import { ApiException } from "@kubernetes/client-node";
import {
  autoCeiling,
  minimumMaxConnections,
  serverMemory,
  serverSettings,
  serverMemoryOfPeers,
} from "../../../src/server/model.js";
import { DEFAULT_MEMORY_SETTINGS, serverFacts } from "../fixtures/server-facts.js";

const MiB = 2 ** 20;
const GiB = 2 ** 30;

const settings = fc.record({
  sharedBuffers: fc.integer({ min: 0, max: 8 * GiB }),
  workMem: fc.integer({ min: 64 * 1024, max: 256 * MiB }),
  maintenanceWorkMem: fc.integer({ min: MiB, max: 2 * GiB }),
  autovacuumWorkMem: fc.oneof(fc.constant(-1), fc.integer({ min: MiB, max: 2 * GiB })),
  autovacuumMaxWorkers: fc.integer({ min: 1, max: 20 }),
});
const memory = fc.integer({ min: 0, max: 256 * GiB });
const perConnection = fc.integer({ min: 256 * 1024, max: GiB });

describe("the memory ceiling", () => {
  it("PostgreSQL 15's defaults in a 1 GiB container: the numbers the docs use", () => {
    const c = memoryCeiling(GiB, DEFAULT_MEMORY_SETTINGS, DEFAULT_PER_CONNECTION_BYTES);
    // 1024 − 128 shared_buffers − 3 × 64 autovacuum − 64 overhead = 640 MiB, at 4 + 4 MiB each.
    expect(c.fixedBytes).toBe(128 * MiB + 3 * 64 * MiB + FIXED_OVERHEAD_BYTES);
    expect(c.perConnectionBytes).toBe(DEFAULT_PER_CONNECTION_BYTES + 4 * MiB);
    expect(c.ceiling).toBe(Math.floor((GiB - c.fixedBytes) / c.perConnectionBytes));
    expect(c.ceiling).toBe(80);
  });

  it("the reported case: 1 GiB and work_mem 16MB carries far fewer than the 200 connections that were OOM-killed", () => {
    const c = memoryCeiling(GiB, { ...DEFAULT_MEMORY_SETTINGS, workMem: 16 * MiB }, DEFAULT_PER_CONNECTION_BYTES);
    expect(c.ceiling).toBe(32); // 640 MiB / 20 MiB
  });

  it("autovacuum_work_mem counts where set; -1 means maintenance_work_mem", () => {
    expect(autovacuumMemory({ ...DEFAULT_MEMORY_SETTINGS, autovacuumWorkMem: -1 })).toBe(64 * MiB);
    expect(autovacuumMemory({ ...DEFAULT_MEMORY_SETTINGS, autovacuumWorkMem: 16 * MiB })).toBe(16 * MiB);
  });

  it("property: what it allows fits, and one more connection would not", () => {
    fc.assert(
      fc.property(memory, settings, perConnection, (m, s, p) => {
        const c = memoryCeiling(m, s, p);
        expect(Number.isInteger(c.ceiling)).toBe(true);
        expect(c.ceiling).toBeGreaterThanOrEqual(0);
        if (c.ceiling > 0) expect(c.fixedBytes + c.ceiling * c.perConnectionBytes).toBeLessThanOrEqual(m);
        if (c.ceiling < 262143) expect(c.fixedBytes + (c.ceiling + 1) * c.perConnectionBytes).toBeGreaterThan(m);
      }),
      { numRuns: 500 },
    );
  });

  it("property: more memory never lowers it; more of any cost never raises it", () => {
    fc.assert(
      fc.property(memory, memory, settings, perConnection, fc.integer({ min: 0, max: GiB }), (m1, m2, s, p, more) => {
        const [low, high] = m1 <= m2 ? [m1, m2] : [m2, m1];
        const base = memoryCeiling(low, s, p).ceiling;
        expect(memoryCeiling(high, s, p).ceiling).toBeGreaterThanOrEqual(base);
        expect(memoryCeiling(low, s, p + more).ceiling).toBeLessThanOrEqual(base);
        expect(memoryCeiling(low, { ...s, sharedBuffers: s.sharedBuffers + more }, p).ceiling).toBeLessThanOrEqual(
          base,
        );
        expect(memoryCeiling(low, { ...s, workMem: s.workMem + more }, p).ceiling).toBeLessThanOrEqual(base);
        expect(
          memoryCeiling(low, { ...s, autovacuumMaxWorkers: s.autovacuumMaxWorkers + 1 }, p).ceiling,
        ).toBeLessThanOrEqual(base);
      }),
      { numRuns: 500 },
    );
  });

  it("property: auto sizing keeps under it when memory allows the reserved slots, and never below what PostgreSQL starts with", () => {
    fc.assert(
      fc.property(
        memory,
        settings,
        fc.integer({ min: 50, max: 5000 }),
        fc.integer({ min: 0, max: 20 }),
        (m, s, specCeiling, reserved) => {
          const facts = serverFacts({ memory: s, superuserReservedConnections: 3, reservedConnections: reserved });
          const server = serverSettings([]);
          const limit = { found: true, description: "StatefulSet db/pg", memory: containerAt(m) };
          const known = serverMemory(limit, facts, { ...server, ceiling: specCeiling });
          if (!known.known) throw new Error("a limit was given");
          const ceiling = autoCeiling({ ...server, ceiling: specCeiling }, known);
          expect(ceiling).toBeLessThanOrEqual(Math.max(specCeiling, minimumMaxConnections(facts)));
          expect(ceiling).toBeGreaterThanOrEqual(Math.min(specCeiling, minimumMaxConnections(facts)));
          if (known.ceiling.ceiling >= minimumMaxConnections(facts)) {
            expect(ceiling).toBeLessThanOrEqual(known.ceiling.ceiling);
            expect(ceiling).toBeGreaterThanOrEqual(Math.min(specCeiling, minimumMaxConnections(facts)));
          }
        },
      ),
      { numRuns: 300 },
    );
  });
});

function containerAt(bytes: number) {
  return { known: true as const, bytes, source: "limit" as const, container: "postgres" };
}

describe("memory quantities", () => {
  it("reads what Kubernetes writes, and refuses what it is not", () => {
    expect(parseMemoryQuantity("512Mi")).toBe(512 * MiB);
    expect(parseMemoryQuantity("1.5Gi")).toBe(1.5 * GiB);
    expect(parseMemoryQuantity("2G")).toBe(2e9);
    expect(parseMemoryQuantity("129e6")).toBe(129e6);
    expect(parseMemoryQuantity("1048576")).toBe(MiB);
    expect(parseMemoryQuantity("9.1Mi")).toBe(Math.ceil(9.1 * MiB));
    expect(parseMemoryQuantity("1.5")).toBe(2); // a plain decimal is bytes, rounded up to a whole one
    for (const bad of ["", "Mi", "100m", "-1Gi", "1 Gi", "1GiB", "0x10"]) {
      expect(parseMemoryQuantity(bad)).toBeUndefined();
    }
  });

  it("formats bytes for messages", () => {
    expect(formatBytes(1.5 * GiB)).toBe("1.5 GiB");
    expect(formatBytes(96 * MiB)).toBe("96 MiB");
    expect(formatBytes(512)).toBe("512 B");
  });
});

describe("the PostgreSQL container's memory", () => {
  const pod = (containers: { name: string; resources?: object }[]) => ({ containers });

  it("is the limit of the container named postgres, else its request, else the only container's", () => {
    const both = { limits: { memory: "2Gi" }, requests: { memory: "1Gi" } };
    expect(containerMemory(pod([{ name: "exporter" }, { name: "postgres", resources: both }]), "w")).toEqual({
      known: true,
      bytes: 2 * GiB,
      source: "limit",
      container: "postgres",
    });
    expect(containerMemory(pod([{ name: "db", resources: { requests: { memory: "1Gi" } } }]), "w")).toMatchObject({
      bytes: GiB,
      source: "request",
      container: "db",
    });
  });

  it("of a CloudNativePG Cluster is its spec.resources", () => {
    const cluster = { spec: { instances: 3, resources: { limits: { memory: "4Gi" } } } };
    expect(containerMemory(postgresPodSpec({ kind: "Cluster", object: cluster }), "w")).toMatchObject({
      bytes: 4 * GiB,
      source: "limit",
    });
    const none = containerMemory(postgresPodSpec({ kind: "Cluster", object: { spec: { instances: 1 } } }), "w");
    expect(none).toMatchObject({ known: false, reason: "NoMemoryLimit" });
  });

  it("says why it is not known, and what to do", () => {
    const two = containerMemory(pod([{ name: "db" }, { name: "exporter" }]), "StatefulSet db/pg");
    expect(two).toMatchObject({ known: false, reason: "NoPostgresContainer" });
    expect(!two.known && two.message).toContain('name the PostgreSQL container "postgres"');
    const none = containerMemory(pod([{ name: "postgres" }]), "StatefulSet db/pg");
    expect(none).toMatchObject({ known: false, reason: "NoMemoryLimit" });
    expect(!none.known && none.message).toContain("set resources.limits.memory");
    expect(containerMemory(pod([{ name: "postgres", resources: { limits: { memory: "lots" } } }]), "w")).toMatchObject({
      known: false,
      reason: "UnreadableMemoryLimit",
    });
  });

  it("the server's ceiling says why it is not known: no workload, workload missing", () => {
    const facts = serverFacts();
    const s = serverSettings([]);
    expect(serverMemory(undefined, facts, s)).toMatchObject({ known: false, reason: "NoWorkload" });
    expect(serverMemory({ found: false, description: "StatefulSet db/pg" }, facts, s)).toMatchObject({
      known: false,
      reason: "WorkloadNotFound",
    });
    const known = serverMemory({ found: true, description: "StatefulSet db/pg", memory: containerAt(GiB) }, facts, s);
    expect(known).toMatchObject({ known: true, minimum: 4, ceiling: { ceiling: 80 } });
    expect(known.known && known.source).toBe("the memory limit 1 GiB of container postgres in StatefulSet db/pg");
  });
});

describe("a workload that cannot be read", () => {
  it("leaves the ceiling unknown with the API's message, never the exception's headers", async () => {
    const v = validateSpec({
      postgres: {
        host: "pg",
        database: "app",
        credentialsSecret: { name: "s" },
        restart: { workload: { name: "pg" } },
      },
      targets: { selector: { matchLabels: { app: "a" } } },
    });
    if (!v.ok) throw new Error(v.message);
    const body = JSON.stringify({
      kind: "Status",
      message: 'statefulsets.apps "pg" is forbidden',
      reason: "Forbidden",
    });
    const err = new ApiException(403, `HTTP-Code: 403\nMessage: ${body}\nHeaders: {"audit-id":"secret-ish"}`, body, {});
    const peers = [{ key: "db/orders", namespace: "db", spec: v.spec }];
    const read: string[] = [];
    const memory = await serverMemoryOfPeers(peers, serverFacts(), serverSettings(peers), async (restart, ns) => {
      read.push(`${ns}/${restart.workload.name}`);
      throw err;
    });
    expect(read).toEqual(["db/pg"]);
    expect(memory).toEqual({
      known: false,
      reason: "WorkloadUnreadable",
      message:
        'cannot read the workload named by db/orders (statefulsets.apps "pg" is forbidden): the memory ceiling is not known',
    });
  });
});
