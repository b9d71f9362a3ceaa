/**
 * What a PoolPolicy watch event brings back to the queue besides the policy itself.
 *
 * Policies that point at one server depend on each other: the budget counts every peer's
 * Deployments and pools, and max_connections is one value for all of them. So a change to what
 * a peer reads of this policy re-enqueues the peers of its server (of both servers, when the
 * policy moved). A change that peers do not read (the reaper, Redis, extensions, the env
 * variable names, an approval annotation) brings back only the policy itself: in the event-storm
 * benchmark, re-enqueueing every peer on every change ran 5,204 reconciles for 600 edits.
 */
import { isDeepStrictEqual } from "node:util";
import { validateSpec, type PoolPolicy } from "../api/schema.js";
import { serverKey } from "../server/identity.js";
import type { SecretRef } from "./secret-watches.js";
import { objectKey } from "../kube/keys.js";

/** The server the policy points at (src/server/identity.ts), read from the raw spec (valid or not). */
export function serverKeyOf(p: PoolPolicy): string {
  const pg = (p.spec as { postgres?: { host?: unknown; port?: unknown } } | undefined)?.postgres;
  const port = typeof pg?.port === "number" ? pg.port : 5432;
  return serverKey({ host: String(pg?.host ?? ""), port }, p.metadata.namespace);
}

/**
 * What the peers of a policy read of it: its server, targets and pool sizes, max_connections and
 * budget settings, the role whose share it enforces; and whether it counts at all (an invalid or
 * deleted policy is no peer).
 */
function whatPeersRead(p: PoolPolicy): unknown {
  if (p.metadata.deletionTimestamp) return "deleted";
  const v = validateSpec(p.spec);
  if (!v.ok) return "invalid";
  const { postgres, budget, pool, targets, enforcement, pooler } = v.spec;
  return {
    host: postgres.host,
    port: postgres.port,
    maxConnections: postgres.maxConnections,
    budget,
    // via and the pooler: every policy of the server reports the one pooler (PoolerSized).
    pool: { minSize: pool.minSize, maxSize: pool.maxSize, via: pool.via },
    pooler,
    selector: targets.selector,
    connectionLimit: enforcement?.connectionLimit,
  };
}

export function changesWhatPeersRead(before: PoolPolicy, after: PoolPolicy): boolean {
  return !isDeepStrictEqual(whatPeersRead(before), whatPeersRead(after));
}

/** Keys of the policies on the same server as any of `changed` (the changed policy's own key excluded). */
export function peerKeys(all: readonly PoolPolicy[], changedKey: string, ...changed: PoolPolicy[]): string[] {
  const servers = new Set(changed.map(serverKeyOf));
  const keys: string[] = [];
  for (const p of all) {
    const key = objectKey(p);
    if (key !== changedKey && servers.has(serverKeyOf(p))) keys.push(key);
  }
  return keys;
}

/** The Secrets the policy names (its credentials), from the raw spec so that a half-valid spec is still watched. */
export function referencedSecrets(p: PoolPolicy): SecretRef[] {
  if (p.metadata.deletionTimestamp) return [];
  const name = (p.spec as { postgres?: { credentialsSecret?: { name?: unknown } } } | undefined)?.postgres
    ?.credentialsSecret?.name;
  return typeof name === "string" && name !== "" ? [{ namespace: p.metadata.namespace, name }] : [];
}
