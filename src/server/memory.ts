/**
 * The largest max_connections that fits in the memory of the PostgreSQL container: the ceiling
 * `maxConnections: auto` never sizes above, and the number an explicit value is warned against.
 * Pure functions; the operator (src/controller/reconciler.ts) and `poolpolicy diagnose`
 * (src/cli/cluster.ts) both call serverMemoryCeiling, so that they cannot disagree.
 *
 *   ceiling = ⌊ (memory − shared_buffers − autovacuum_max_workers × autovacuum memory − overhead)
 *               / (per-connection cost + work_mem) ⌋
 *
 * memory            the container's memory limit, else its request (what the kernel OOM-kills at)
 * shared_buffers    allocated once, at start, in shared memory charged to the container
 * autovacuum memory autovacuum_work_mem, or maintenance_work_mem where it is -1 (the default):
 *                   each autovacuum worker may take that much for its dead-tuple list
 * overhead          the postmaster, checkpointer, background writer, WAL writer, autovacuum
 *                   launcher and the other shared structures (WAL buffers, lock table…)
 * per connection    what a backend costs once it has run ordinary queries (catalog caches,
 *                   plan caches, its page tables): measured by bench/scenarios/backend-memory.ts
 * work_mem          one sort or hash per connection at a time; a query with several such nodes
 *                   uses a multiple, and not every connection sorts at once: the two errors
 *                   point in opposite directions, and docs/operations.md says when to change it.
 *
 * docs/operations.md ("The memory ceiling") explains the figures and their sources.
 */

import { parseMemoryQuantity } from "../api/quantity.js";
import type { WorkloadObject } from "../kube/workloads.js";
import type { MemorySettings } from "../postgres/inspect.js";

export type { MemorySettings };

const MiB = 1024 * 1024;

/**
 * What a backend costs besides work_mem, by default: twice the published 2 MiB per idle
 * connection with huge pages (Andres Freund, 2020), because containers rarely run with huge
 * pages and a backend that has run queries keeps its catalog and plan caches. The RDS default
 * formula (max_connections = memory / 9,531,392 bytes) budgets about 9.1 MiB, work_mem included.
 * Measured by bench/scenarios/backends.ts (bench/findings.md): 1.4 MiB idle, 2.0 MiB after a
 * typical query mix (Pss_Anon + VmPTE, PostgreSQL 15, huge pages off); the default is twice that.
 */
export const DEFAULT_PER_CONNECTION_BYTES = 4 * MiB;

/** The processes and shared structures every server has, whatever its connections. */
export const FIXED_OVERHEAD_BYTES = 64 * MiB;

/** PostgreSQL's upper bound for max_connections. */
const MAX_CONNECTIONS_MAX = 262143;

export interface MemoryCeiling {
  /** The largest max_connections that fits; 0 when not even the fixed costs fit. */
  ceiling: number;
  memoryBytes: number;
  /** shared_buffers + autovacuum workers + overhead: what is spent before any connection. */
  fixedBytes: number;
  /** per-connection cost + work_mem */
  perConnectionBytes: number;
}

/** The memory each autovacuum worker may take for its dead-tuple list. */
export function autovacuumMemory(s: MemorySettings): number {
  return s.autovacuumWorkMem > 0 ? s.autovacuumWorkMem : s.maintenanceWorkMem;
}

/** The largest max_connections that fits in `memoryBytes` (the formula at the top of this file). */
export function memoryCeiling(memoryBytes: number, s: MemorySettings, perConnectionBytes: number): MemoryCeiling {
  const fixedBytes = s.sharedBuffers + s.autovacuumMaxWorkers * autovacuumMemory(s) + FIXED_OVERHEAD_BYTES;
  const perConnection = perConnectionBytes + s.workMem;
  const fits = Math.floor((memoryBytes - fixedBytes) / perConnection);
  return {
    ceiling: Math.min(MAX_CONNECTIONS_MAX, Math.max(0, fits)),
    memoryBytes,
    fixedBytes,
    perConnectionBytes: perConnection,
  };
}

/** "1.5 GiB", "96 MiB", "512 KiB": for messages. */
export function formatBytes(bytes: number): string {
  for (const [unit, size] of [
    ["GiB", 2 ** 30],
    ["MiB", 2 ** 20],
    ["KiB", 2 ** 10],
  ] as const) {
    if (Math.abs(bytes) >= size) return `${Number((bytes / size).toFixed(1))} ${unit}`;
  }
  return `${bytes} B`;
}

/** The memory the PostgreSQL container may use, as its workload's pod template says, or why it is not known. */
export type ContainerMemory =
  | { known: true; bytes: number; source: "limit" | "request"; container: string }
  | { known: false; reason: string; message: string };

/** The container that runs PostgreSQL: the one named "postgres", else the only one. */
export const POSTGRES_CONTAINER = "postgres";

/**
 * The PostgreSQL container's memory limit, else its request. The limit is what the kernel
 * OOM-kills at; a request alone is what the scheduler promised, the closest known figure.
 */
/**
 * The pod spec whose "postgres" container the memory ceiling reads: a CloudNativePG Cluster's
 * instances and a Zalando postgresql's pods run with its spec.resources (the PostgreSQL
 * container is named "postgres" in both).
 */
export function postgresPodSpec(w: WorkloadObject) {
  if (w.kind === "StatefulSet" || w.kind === "Deployment") return w.object.spec?.template.spec;
  return { containers: [{ name: POSTGRES_CONTAINER, resources: w.object.spec?.resources ?? {} }] };
}

export function containerMemory(
  pod: { containers?: { name: string; resources?: { limits?: object; requests?: object } }[] } | undefined,
  workload: string,
): ContainerMemory {
  const containers = pod?.containers ?? [];
  const container =
    containers.find((c) => c.name === POSTGRES_CONTAINER) ?? (containers.length === 1 ? containers[0] : undefined);
  if (!container) {
    return {
      known: false,
      reason: "NoPostgresContainer",
      message: `${workload} has ${containers.length} containers and none is named "${POSTGRES_CONTAINER}": name the PostgreSQL container "${POSTGRES_CONTAINER}" so that its memory limit is read`,
    };
  }
  for (const source of ["limit", "request"] as const) {
    const quantities = (source === "limit" ? container.resources?.limits : container.resources?.requests) as
      | Record<string, unknown>
      | undefined;
    const text = quantities?.memory;
    if (text === undefined) continue;
    const bytes = parseMemoryQuantity(String(text));
    if (bytes === undefined) {
      return {
        known: false,
        reason: "UnreadableMemoryLimit",
        message: `the memory ${source} "${String(text)}" of container ${container.name} in ${workload} is not a quantity the operator reads (e.g. 2Gi)`,
      };
    }
    return { known: true, bytes, source, container: container.name };
  }
  return {
    known: false,
    reason: "NoMemoryLimit",
    message: `container ${container.name} of ${workload} sets no memory limit or request: set resources.limits.memory to have max_connections held to what fits`,
  };
}
