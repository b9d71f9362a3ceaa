/**
 * One model of a PostgreSQL server as the policies on it see it: which policies point at it,
 * the settings they give it together, its connection budget, and the max_connections they ask
 * for together. The operator's reconcile and the `poolpolicy diagnose` CLI both call these
 * functions, so that they cannot disagree.
 *
 * The rule that keeps the operator from restarting a server in a loop: everything decided about
 * a server is a function of the SET of policies on it and of the server's facts, never of which
 * policy is being reconciled. (When each policy computed the demand with its own reserve, two
 * policies on one server flapped max_connections 160 ↔ 250 and restarted PostgreSQL 67 times in
 * 3 minutes; issue 12.) test/unit/server/model.test.ts proves the invariance by property.
 */
import type { V1Deployment, V2HorizontalPodAutoscaler } from "@kubernetes/client-node";
import type { PoolPolicy, PoolPolicySpec } from "../api/schema.js";
import { MAX_CONNECTIONS_MAX, validateSpec } from "../api/schema.js";
import {
  autoSizeMaxConnections,
  type Budget,
  type BudgetReserve,
  type BudgetTarget,
  computeBudget,
} from "../budget/budget.js";
import { OPERATOR_POOL_SIZE } from "../postgres/connection.js";
import type { ServerFacts } from "../postgres/inspect.js";
import { apiErrorMessage } from "../kube/errors.js";
import { byCodePoint } from "../kube/keys.js";
import { labelSelectorString } from "../kube/selectors.js";
import type { WorkloadRef } from "../kube/workloads.js";
import {
  type ContainerMemory,
  DEFAULT_PER_CONNECTION_BYTES,
  formatBytes,
  type MemoryCeiling,
  memoryCeiling,
} from "./memory.js";
import { parseMemoryQuantity } from "../api/quantity.js";
import { type ServerKey, serverKey } from "./identity.js";

export interface PolicyOnServer {
  /** "namespace/name" */
  key: string;
  namespace: string;
  spec: PoolPolicySpec;
}

export function serverOfPolicy(p: { namespace: string; spec: Pick<PoolPolicySpec, "postgres"> }): ServerKey {
  return serverKey(p.spec.postgres, p.namespace);
}

/**
 * Specs validated once per object: every pass of every policy of a server looks at all its
 * peers, and with hundreds of policies on one server, parsing each peer's spec anew each time
 * made start-up quadratic in zod parses. The informer's objects are replaced, not mutated, on
 * every change, so the spec object is a sound key.
 */
const validated = new WeakMap<object, ReturnType<typeof validateSpec>>();

function validateOnce(spec: unknown): ReturnType<typeof validateSpec> {
  if (typeof spec !== "object" || spec === null) return validateSpec(spec);
  let v = validated.get(spec);
  if (!v) {
    v = validateSpec(spec);
    validated.set(spec, v);
  }
  return v;
}

/** Every valid, live policy that points at `server`, sorted by key (code points). */
export function policiesOnServer(all: readonly PoolPolicy[], server: ServerKey): PolicyOnServer[] {
  const found: PolicyOnServer[] = [];
  for (const p of all) {
    if (p.metadata.deletionTimestamp) continue;
    const v = validateOnce(p.spec);
    const namespace = p.metadata.namespace;
    if (v.ok && serverKey(v.spec.postgres, namespace) === server) {
      found.push({ key: `${namespace}/${p.metadata.name}`, namespace, spec: v.spec });
    }
  }
  return found.sort((a, b) => byCodePoint(a.key, b.key));
}

/** What the policies of one server say about it together (spec.budget of each). */
export interface ServerSettings {
  /**
   * Connections kept for monitoring, backups and replication. Policies of one server describe
   * the same such connections, so the largest declared reserve counts, once.
   */
  reserve: number;
  /**
   * For maxConnections "auto": the largest headroom any auto policy asks for (with no auto
   * policy, any policy: the CLI sizes its advice with it).
   */
  headroomPercent: number;
  /** For maxConnections "auto": the lowest ceiling any auto policy sets (likewise). */
  ceiling: number;
  /**
   * What one connection costs besides work_mem, for the memory ceiling: the largest any policy
   * sets (spec.postgres.memory.perConnection), else the measured default.
   */
  perConnectionBytes: number;
}

export function serverSettings(policies: readonly PolicyOnServer[]): ServerSettings {
  const autoOnly = policies.filter((p) => p.spec.postgres.maxConnections === "auto");
  const auto = autoOnly.length > 0 ? autoOnly : policies;
  return {
    reserve: Math.max(0, ...policies.map((p) => p.spec.budget.reserve)),
    headroomPercent: Math.max(0, ...auto.map((p) => p.spec.budget.headroomPercent)),
    ceiling: Math.min(MAX_CONNECTIONS_MAX, ...auto.map((p) => p.spec.budget.ceiling)),
    perConnectionBytes: perConnectionBytes(policies),
  };
}

function perConnectionBytes(policies: readonly PolicyOnServer[]): number {
  const set = policies.flatMap((p) => {
    const text = p.spec.postgres.memory?.perConnection;
    const bytes = text === undefined ? undefined : parseMemoryQuantity(text);
    return bytes === undefined ? [] : [bytes];
  });
  return set.length > 0 ? Math.max(...set) : DEFAULT_PER_CONNECTION_BYTES;
}

/**
 * The policy whose spec.postgres.restart names the server's workload: the first by key that
 * names one. Chosen from the set of policies, like everything else about the server, so that
 * every policy of the server reads the same workload and computes the same ceiling.
 */
export function workloadPolicy(policies: readonly PolicyOnServer[]): PolicyOnServer | undefined {
  return policies.find((p) => p.spec.postgres.restart !== undefined);
}

type RestartSpec = NonNullable<PoolPolicySpec["postgres"]["restart"]>;

/** The workload spec.postgres.restart names; its namespace defaults to the policy's. */
export function restartWorkloadRef(restart: RestartSpec, policyNamespace: string): WorkloadRef {
  const { kind, name, namespace } = restart.workload;
  return { kind, name, namespace: namespace ?? policyNamespace };
}

/** What the memory ceiling needs of the server's workload (undefined: no policy names one). */
export type WorkloadMemory = { found: boolean; description: string; memory?: ContainerMemory } | undefined;

/**
 * The server's memory ceiling, from the workload its first policy naming one names (see
 * workloadPolicy) and read by `read` (the operator: the pass's read; the CLI: a GET). A
 * workload that cannot be read leaves the ceiling unknown: it only informs, so the caller goes
 * on without it, and the message carries the API's words only, never the exception's (headers).
 */
export async function serverMemoryOfPeers(
  peers: readonly PolicyOnServer[],
  facts: ServerFacts,
  settings: ServerSettings,
  read: (restart: RestartSpec, policyNamespace: string) => Promise<WorkloadMemory>,
): Promise<ServerMemory> {
  const owner = workloadPolicy(peers);
  const restart = owner?.spec.postgres.restart;
  if (!owner || !restart) return serverMemory(undefined, facts, settings);
  try {
    return serverMemory(await read(restart, owner.namespace), facts, settings);
  } catch (err) {
    const message = `cannot read the workload named by ${owner.key} (${apiErrorMessage(err)}): the memory ceiling is not known`;
    return { known: false, reason: "WorkloadUnreadable", message };
  }
}

/** The memory ceiling of a server, or why it is not known. */
export type ServerMemory =
  | { known: true; ceiling: MemoryCeiling; source: string; minimum: number }
  | { known: false; reason: string; message: string };

/**
 * The server's memory ceiling from what its workload's pod template says (undefined: no policy
 * names a workload) and the server's settings.
 */
export function serverMemory(workload: WorkloadMemory, facts: ServerFacts, settings: ServerSettings): ServerMemory {
  if (!workload) {
    return {
      known: false,
      reason: "NoWorkload",
      message:
        "no policy of this server names the workload that runs PostgreSQL (spec.postgres.restart.workload): the memory ceiling is not known",
    };
  }
  if (!workload.found || !workload.memory) {
    return {
      known: false,
      reason: "WorkloadNotFound",
      message: `${workload.description} not found: the memory ceiling is not known`,
    };
  }
  const m = workload.memory;
  if (!m.known) return { known: false, reason: m.reason, message: m.message };
  return {
    known: true,
    ceiling: memoryCeiling(m.bytes, facts.memory, settings.perConnectionBytes),
    source: `the memory ${m.source} ${formatBytes(m.bytes)} of container ${m.container} in ${workload.description}`,
    minimum: minimumMaxConnections(facts),
  };
}

/** PostgreSQL does not start unless max_connections exceeds the reserved slots. */
export function minimumMaxConnections(facts: ServerFacts): number {
  return facts.superuserReservedConnections + facts.reservedConnections + 1;
}

/**
 * The ceiling auto sizing keeps under: spec.budget.ceiling, and what fits in memory when that
 * is known — never below the least PostgreSQL starts with, even where memory would want less
 * (the MemoryWithinLimits condition then says the container is too small).
 */
export function autoCeiling(settings: ServerSettings, memory: ServerMemory | undefined): number {
  if (!memory?.known) return settings.ceiling;
  return Math.min(settings.ceiling, Math.max(memory.ceiling.ceiling, memory.minimum));
}

/** What to do when the connections the apps want do not fit the server's memory (issue 16). */
export const MEMORY_ADVICE = "lower the pools, give PostgreSQL more memory, or put a connection pooler in front";

/** The container memory `connections` need: the fixed costs and the per-connection cost of each. */
export function bytesFor(c: { fixedBytes: number; perConnectionBytes: number }, connections: number): number {
  return c.fixedBytes + connections * c.perConnectionBytes;
}

/** The MemoryWithinLimits condition's status, reason and message; `poolpolicy diagnose` shows the same words. */
export interface MemoryVerdict {
  status: "True" | "False" | "Unknown";
  reason: string;
  message: string;
}

/**
 * MemoryWithinLimits: whether `maxConnections` (the value the policies ask for, else the one in
 * force) fits in the PostgreSQL container's memory. An explicit value above the ceiling is still
 * applied (the user said so); this condition is the warning that names the numbers.
 */
export function memoryCondition(memory: ServerMemory | undefined, maxConnections: number | undefined): MemoryVerdict {
  if (!memory || maxConnections === undefined) {
    return {
      status: "Unknown",
      reason: "PostgresUnreachable",
      message: "cannot compute the memory ceiling: the server's settings are not known (PostgreSQL is not reachable)",
    };
  }
  if (!memory.known) return { status: "Unknown", reason: memory.reason, message: memory.message };
  const c = memory.ceiling;
  const how = `${formatBytes(c.fixedBytes)} for shared_buffers, autovacuum workers and the server's own processes, then ${formatBytes(c.perConnectionBytes)} per connection (spec.postgres.memory.perConnection + work_mem)`;
  if (c.ceiling < memory.minimum) {
    return {
      status: "False",
      reason: "MemoryTooSmall",
      message: `${memory.source} does not carry even the ${memory.minimum} connections PostgreSQL needs to start (${how}): give PostgreSQL more memory or lower shared_buffers`,
    };
  }
  if (maxConnections > c.ceiling) {
    return {
      status: "False",
      reason: "AboveMemoryCeiling",
      message: `max_connections ${maxConnections} > ${c.ceiling} that fit in ${memory.source} (${how}); ${maxConnections} connections would need ${formatBytes(bytesFor(c, maxConnections))} and may get PostgreSQL OOM-killed: ${MEMORY_ADVICE}`,
    };
  }
  return {
    status: "True",
    reason: "WithinMemory",
    message: `max_connections ${maxConnections} ≤ ${c.ceiling} that fit in ${memory.source} (${how})`,
  };
}

/** Where Deployments and HPAs are read from: the operator's watch caches, or the CLI's LISTs. */
export interface TargetReader {
  deployments(policyKey: string, namespace: string, labelSelector: string): Promise<V1Deployment[]>;
  hpas(namespace: string): Promise<V2HorizontalPodAutoscaler[]>;
}

/** Every target Deployment of the given policies, with what its worst-case pod count depends on. */
export async function gatherBudgetTargets(
  read: TargetReader,
  policies: readonly PolicyOnServer[],
): Promise<BudgetTarget[]> {
  const hpasByNamespace = new Map<string, V2HorizontalPodAutoscaler[]>();
  const targets: BudgetTarget[] = [];
  for (const p of policies) {
    let hpas = hpasByNamespace.get(p.namespace);
    if (!hpas) {
      hpas = await read.hpas(p.namespace);
      hpasByNamespace.set(p.namespace, hpas);
    }
    const deployments = await read.deployments(p.key, p.namespace, labelSelectorString(p.spec.targets.selector));
    // By name: the watch caches answer in index order, and a status whose list changes order
    // from pass to pass would be written on every pass.
    deployments.sort((a, b) => byCodePoint(a.metadata!.name!, b.metadata!.name!));
    for (const d of deployments) {
      const name = d.metadata!.name!;
      const hpa = hpas.find((h) => h.spec?.scaleTargetRef.kind === "Deployment" && h.spec.scaleTargetRef.name === name);
      targets.push({
        policy: p.key,
        deployment: `${p.namespace}/${name}`,
        poolMax: p.spec.pool.maxSize,
        replicas: d.spec?.replicas ?? 1,
        hpaMaxReplicas: hpa?.spec?.maxReplicas,
        strategy: d.spec?.strategy as BudgetTarget["strategy"],
      });
    }
  }
  return targets;
}

/** The connections kept out of the apps' reach: the server's reserved slots, ours, the declared reserve. */
export function serverReserve(facts: ServerFacts, settings: ServerSettings): BudgetReserve {
  return {
    superuserReserved: facts.superuserReservedConnections,
    reserved: facts.reservedConnections,
    operator: OPERATOR_POOL_SIZE,
    extra: settings.reserve,
  };
}

export function serverBudget(targets: readonly BudgetTarget[], facts: ServerFacts, settings: ServerSettings): Budget {
  return computeBudget(targets, serverReserve(facts, settings), facts.maxConnections);
}

/** What the policies of one server ask of its max_connections, together. */
export type ServerDesire =
  | { kind: "unmanaged" }
  | { kind: "value"; value: number; source: string }
  | { kind: "conflict"; message: string }
  | { kind: "unknown"; message: string };

/**
 * The max_connections the policies of a server ask for together:
 *   - none sets spec.postgres.maxConnections → unmanaged;
 *   - different explicit values → a conflict, reported on every policy and applied by none;
 *   - one explicit value (however many policies give it) → that value; it wins over "auto";
 *   - only "auto" → sized from the budget with the server's settings (serverSettings). It is
 *     never lowered below what is in use now: then the current value stays. That rule keeps the
 *     value stable: once raised to the demand it stays there; a lowering happens once, when
 *     the sessions in use fit under the new value.
 */
export function desiredMaxConnections(
  policies: readonly PolicyOnServer[],
  budget: Budget | undefined,
  facts: ServerFacts | undefined,
  memory?: ServerMemory,
): ServerDesire {
  const managing = policies.filter((p) => p.spec.postgres.maxConnections !== undefined);
  if (managing.length === 0) return { kind: "unmanaged" };
  const explicit = managing.filter((p) => typeof p.spec.postgres.maxConnections === "number");
  const values = [...new Set(explicit.map((p) => p.spec.postgres.maxConnections as number))];
  if (values.length > 1) {
    const who = explicit.map((p) => `${p.key} (${p.spec.postgres.maxConnections})`).join(", ");
    return { kind: "conflict", message: `policies ask different max_connections of one server: ${who}` };
  }
  if (values.length === 1) {
    return { kind: "value", value: values[0]!, source: `spec of ${explicit.map((p) => p.key).join(", ")}` };
  }
  if (!budget || !facts) {
    return {
      kind: "unknown",
      message: 'maxConnections "auto" needs the server\'s numbers, and PostgreSQL is not reachable',
    };
  }
  const settings = serverSettings(policies);
  const ceiling = autoCeiling(settings, memory);
  const sized = autoSizeMaxConnections(budget.demand, { headroomPercent: settings.headroomPercent, ceiling });
  const inUse = facts.connections.total + budget.reserve;
  if (sized < facts.maxConnections && inUse > sized) {
    return {
      kind: "value",
      value: facts.maxConnections,
      source: `auto: ${sized} would fit the demand, but ${inUse} connections are in use or reserved; not lowering`,
    };
  }
  return {
    kind: "value",
    value: sized,
    source: `auto: demand ${budget.demand} + ${settings.headroomPercent}% headroom, ${ceilingSource(settings, memory, ceiling)}`,
  };
}

function ceilingSource(settings: ServerSettings, memory: ServerMemory | undefined, ceiling: number): string {
  if (memory?.known && ceiling < settings.ceiling) {
    return `ceiling ${ceiling}: what fits in ${memory.source} (spec.budget.ceiling is ${settings.ceiling})`;
  }
  return `ceiling ${ceiling} (spec.budget.ceiling)`;
}

/**
 * A policy's own view of the server's desire: a policy that does not set maxConnections leaves
 * it to the others (NotManaged on its condition), whatever they ask.
 */
export function desireOfPolicy(self: PolicyOnServer, server: ServerDesire): ServerDesire {
  return self.spec.postgres.maxConnections === undefined ? { kind: "unmanaged" } : server;
}
