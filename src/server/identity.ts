/**
 * Which PostgreSQL server a policy points at: the one definition of "the same server" that the
 * operator (budget, peers to re-enqueue, metrics labels) and the CLI share. Two copies of this
 * drifted before (one compared hosts case-sensitively, the other lower-cased).
 *
 * The key is host:port, with the host as DNS would resolve it from the policy's namespace:
 *   - case and a trailing dot do not matter ("PG.db." is "pg.db");
 *   - a single-label name is a Service of the policy's own namespace, so "postgres" in namespace
 *     "apps" is "postgres.apps.svc.cluster.local", and "postgres" in another namespace is another
 *     server (a pod resolves it through its namespace's search path);
 *   - "name.namespace.svc" gains the ".cluster.local" that the search path adds.
 * Other spellings of one server (a Service name and its ClusterIP, "name.namespace" and the full
 * name) are not recognised as one: write the same host in every policy of a server.
 */
export type ServerKey = string & { readonly __serverKey: unique symbol };

const CLUSTER_DOMAIN = "cluster.local";
/** Single-label names that do not name a Service. */
const NOT_A_SERVICE = new Set(["localhost"]);

export function canonicalHost(host: string, namespace: string): string {
  const h = host.trim().toLowerCase().replace(/\.$/, "");
  if (h.includes(":")) return h; // an IPv6 address
  if (!h.includes(".") && !NOT_A_SERVICE.has(h)) return `${h}.${namespace}.svc.${CLUSTER_DOMAIN}`;
  if (/^[^.]+\.[^.]+\.svc$/.test(h)) return `${h}.${CLUSTER_DOMAIN}`;
  return h;
}

export function serverKey(postgres: { host: string; port: number }, namespace: string): ServerKey {
  return `${canonicalHost(postgres.host, namespace)}:${postgres.port}` as ServerKey;
}
