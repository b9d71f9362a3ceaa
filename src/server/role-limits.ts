/**
 * Each application held to its share (issue 16.1): the CONNECTION LIMIT a policy's app role
 * should have, decided from the server's budget. Pure functions; the operator's step
 * (controller/connection-limit-step.ts) and `poolpolicy diagnose` both call them.
 *
 *   share(role) = Σ over the policies of the server that name the role:
 *                   Σ over their targets: pool max × worst-case pods   (the budget's own figures)
 *                 + their margins
 *
 * Like everything else about a server, the share is a function of the SET of policies on it,
 * never of which one is being reconciled: two policies naming one role compute the same limit
 * and cannot flap it.
 *
 * PostgreSQL counts a role's sessions across every database of the cluster (CountUserBackends),
 * and ignores CONNECTION LIMIT for superusers.
 */
import type { Budget } from "../budget/budget.js";
import type { RoleFacts } from "../postgres/roles.js";
import type { PolicyOnServer } from "./model.js";

export interface RoleShare {
  role: string;
  /** Worst-case connections of the targets of the policies naming the role. */
  demand: number;
  margin: number;
  /** demand + margin: the CONNECTION LIMIT the role should have. */
  limit: number;
  /** Keys of the policies that name the role, sorted. */
  policies: string[];
}

/** The role a policy holds to its share, if it enforces one. */
export function enforcedRole(p: Pick<PolicyOnServer, "spec">): string | undefined {
  return p.spec.enforcement?.connectionLimit?.role;
}

/** The share of `role` among the policies of one server (their budget's targets). */
export function roleShare(peers: readonly PolicyOnServer[], budget: Budget, role: string): RoleShare {
  const naming = peers.filter((p) => enforcedRole(p) === role);
  const keys = new Set(naming.map((p) => p.key));
  const demand = budget.targets.filter((t) => keys.has(t.policy)).reduce((sum, t) => sum + t.connections, 0);
  const margin = naming.reduce((sum, p) => sum + (p.spec.enforcement?.connectionLimit?.margin ?? 0), 0);
  return { role, demand, margin, limit: demand + margin, policies: [...keys].sort() };
}

/** Every enforced role of a server with its share, by role name. */
export function roleShares(peers: readonly PolicyOnServer[], budget: Budget): RoleShare[] {
  const roles = [...new Set(peers.flatMap((p) => enforcedRole(p) ?? []))].sort();
  return roles.map((role) => roleShare(peers, budget, role));
}

/** A limit of -1 is no limit at all. */
export function limitAsNumber(connectionLimit: number): number {
  return connectionLimit < 0 ? Number.POSITIVE_INFINITY : connectionLimit;
}

export function describeLimit(connectionLimit: number): string {
  return connectionLimit < 0 ? "no limit" : String(connectionLimit);
}

/** What to do about the role's CONNECTION LIMIT now. */
export type RoleLimitPlan =
  | { kind: "refused"; reason: string; message: string }
  /** Set it to `limit` (raise: before the pools grow; lower: once the apps rolled out). */
  | { kind: "change"; direction: "raise" | "lower"; from: number; limit: number }
  | { kind: "inForce"; limit: number };

/**
 * The one decision about a role's limit. The roles a policy must never limit are refused with
 * what to do: one that does not exist, a superuser (PostgreSQL would ignore the limit, so the
 * share would only look enforced), and the operator's own login (a limit could lock the
 * operator out of the server it must restart and reap).
 */
export function planRoleLimit(share: RoleShare, role: RoleFacts, server: string): RoleLimitPlan {
  const name = JSON.stringify(share.role);
  const field = "spec.enforcement.connectionLimit.role";
  if (!role.exists) {
    return {
      kind: "refused",
      reason: "RoleNotFound",
      message: `role ${name} does not exist on ${server}: create it, or name the role the apps log in as in ${field}`,
    };
  }
  if (role.superuser) {
    return {
      kind: "refused",
      reason: "RoleIsSuperuser",
      message: `role ${name} is a superuser, and PostgreSQL ignores CONNECTION LIMIT for superusers: log the apps in as a role without SUPERUSER`,
    };
  }
  if (role.isOperator) {
    return {
      kind: "refused",
      reason: "OperatorRole",
      message: `role ${name} is the operator's own login (spec.postgres.credentialsSecret), and a limit on it could lock the operator out: give the apps a role of their own`,
    };
  }
  const current = limitAsNumber(role.connectionLimit);
  if (share.limit === current) return { kind: "inForce", limit: share.limit };
  const direction = share.limit > current ? "raise" : "lower";
  return { kind: "change", direction, from: role.connectionLimit, limit: share.limit };
}

/** The arithmetic in words, for conditions, Events and the CLI. */
export function explainShare(share: RoleShare): string {
  const who = share.policies.length === 1 ? `policy ${share.policies[0]}` : `${share.policies.length} policies`;
  return `worst-case demand ${share.demand} of ${who} + margin ${share.margin}`;
}

/**
 * The limit a role had before any policy set one: what the policy recorded when it first set a
 * limit, else what a peer naming the same role recorded (it set the limit first), else the
 * limit in force now (nothing has changed it yet).
 */
export function limitBefore(
  role: string,
  own: LimitRecord | undefined,
  peers: readonly (LimitRecord | undefined)[],
  current: number,
): number {
  if (own?.role === role) return own.before;
  const peer = peers.find((r) => r?.role === role);
  return peer ? peer.before : current;
}

/** The record of the limit a role had before a policy changed it (kept on the policy). */
export interface LimitRecord {
  role: string;
  before: number;
}

/**
 * PostgreSQL refuses the role's next session ("too many connections for role"): it has a limit,
 * its sessions reached it, and it is no superuser (superusers are never held to a limit).
 */
export function limitReached(role: Pick<RoleFacts, "superuser" | "connectionLimit" | "connections">): boolean {
  return !role.superuser && role.connectionLimit >= 0 && role.connections >= role.connectionLimit;
}
