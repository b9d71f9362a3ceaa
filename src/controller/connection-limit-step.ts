/**
 * Each app held to its share (issue 16.1): ALTER ROLE <role> CONNECTION LIMIT n, with n the
 * role's share of the server's budget (server/role-limits.ts), when the policy sets
 * spec.enforcement.connectionLimit.
 *
 * The same ordering rule as max_connections, split around the pool env of the pass:
 *   before the env → raise: the limit grows before any pool can grow into it;
 *   after the env  → lower: only once the apps of every policy naming the role run with their
 *                    new pools (else their old, larger pools would be refused).
 * Setting a limit on a role that had none counts as lowering (from infinity).
 *
 * The limit the role had before any policy set one is recorded on the policy before the first
 * ALTER ROLE (limit-record.ts) and restored when no policy names the role any more: on the
 * policy's deletion, when its role changes, or when enforcement is switched off.
 */
import type { PoolPolicy } from "../api/schema.js";
import { PostgresError, type PostgresTarget } from "../postgres/connection.js";
import type { RoleFacts } from "../postgres/roles.js";
import type { PolicyOnServer } from "../server/model.js";
import {
  describeLimit,
  enforcedRole,
  explainShare,
  type LimitRecord,
  limitBefore,
  limitReached,
  planRoleLimit,
  type RoleLimitPlan,
  type RoleShare,
  roleShare,
} from "../server/role-limits.js";
import type { ConditionUpdate } from "./conditions.js";
import { limitRecordOf } from "./limit-record.js";
import { operatorMetrics } from "./metrics.js";
import { outcome, type Pass, type ServerView, type StepOutcome } from "./pass.js";
import type { KubernetesPort, PostgresPort } from "./ports.js";
import { objectKey } from "../kube/keys.js";

export interface ConnectionLimitDeps {
  postgres: Pick<PostgresPort, "inspectRole" | "setConnectionLimit">;
  kube: Pick<KubernetesPort, "recordLimitBefore">;
}

type Verdict = Omit<ConditionUpdate, "type">;

/** What a pass knows of its role's limit between its two moments (before and after the env). */
interface Enforcing {
  share: RoleShare;
  role: RoleFacts;
  plan: RoleLimitPlan;
  target: PostgresTarget;
  before: number;
  verdict?: Verdict;
}

const NOT_CONFIGURED: Verdict = {
  status: "True",
  reason: "NotConfigured",
  message: "spec.enforcement.connectionLimit is not set: no role is held to a share",
};

export class ConnectionLimitStep {
  private enforcing?: Enforcing;
  private verdict: Verdict = NOT_CONFIGURED;

  constructor(
    private readonly deps: ConnectionLimitDeps,
    private readonly pass: Pass,
    /** The PoolPolicy objects of the server's other policies: their records and rollouts. */
    private readonly peerObjects: readonly PoolPolicy[],
  ) {}

  /** Reads the role, releases a role the policy no longer names, and raises the limit if it must grow. */
  async beforeEnv(view: ServerView, peers: readonly PolicyOnServer[]): Promise<void> {
    const { pass } = this;
    const role = pass.spec.enforcement?.connectionLimit?.role;
    const record = limitRecordOf(pass.policy);
    const target = view.connection.ok ? view.connection.target : undefined;
    if (record && record.role !== role) {
      if (!target) return this.unknown("cannot restore the old limit of the role this policy no longer names");
      await this.release(record, target, peers);
    }
    if (role === undefined) return;
    if (!target || !view.budget) return this.unknown(`cannot compute the share of role ${JSON.stringify(role)}`);
    const share = roleShare(peers, view.budget, role);
    let facts: RoleFacts;
    try {
      facts = await this.deps.postgres.inspectRole(target, role);
    } catch (err) {
      this.verdict = failed(err, `reading role ${JSON.stringify(role)}`);
      return;
    }
    const plan = planRoleLimit(share, facts, pass.server);
    const peerRecords = this.peerObjects.map(limitRecordOf);
    const before = limitBefore(role, record, peerRecords, facts.connectionLimit);
    const refused =
      plan.kind === "refused" ? { status: "False" as const, reason: plan.reason, message: plan.message } : undefined;
    this.enforcing = { share, role: facts, plan, target, before, verdict: refused };
    // Every policy naming the role keeps the record, also one whose limit a peer already set:
    // whichever of them is deleted last restores it.
    if (!refused && record?.role !== role) {
      pass.policy = await this.deps.kube.recordLimitBefore(pass.policy, { role, before });
    }
    if (plan.kind === "change" && plan.direction === "raise") await this.change(this.enforcing, plan.limit);
  }

  /** Lowers the limit once the apps of every policy naming the role rolled out; decides the condition. */
  async afterEnv(ownAppsRolledOut: boolean): Promise<void> {
    const e = this.enforcing;
    if (!e) return;
    if (e.plan.kind === "change" && e.plan.direction === "lower" && !e.verdict) {
      const waitingFor = ownAppsRolledOut ? this.peersRollingOut(e.share) : [this.pass.key];
      if (waitingFor.length > 0) {
        const from = describeLimit(e.plan.from);
        e.verdict = {
          status: "False",
          reason: "WaitingForApps",
          message: `lowering the CONNECTION LIMIT of role ${JSON.stringify(e.share.role)} from ${from} to ${e.plan.limit} (${explainShare(e.share)}) once the apps of ${waitingFor.join(", ")} run with their new pools`,
        };
      } else {
        await this.change(e, e.plan.limit);
      }
    }
    this.verdict = e.verdict ?? inForce(e);
  }

  outcome(): StepOutcome {
    const e = this.enforcing;
    if (e) {
      const limit = e.role.connectionLimit;
      operatorMetrics.observeRole(this.pass.server, e.share.role, {
        share: e.share.limit,
        limit: limit < 0 ? undefined : limit,
        connections: e.role.connections,
      });
    }
    const status = e
      ? {
          connectionLimit: {
            role: e.share.role,
            limit: e.share.limit,
            demand: e.share.demand,
            policies: e.share.policies.length,
            current: e.role.connectionLimit,
            connections: e.role.connections,
            before: e.before,
          },
        }
      : { connectionLimit: undefined };
    return outcome({ conditions: [{ type: "RoleConnectionLimit", ...this.verdict }], status });
  }

  /** Sets the new limit (the old one is on record: beforeEnv). */
  private async change(e: Enforcing, limit: number): Promise<void> {
    const { pass } = this;
    const name = JSON.stringify(e.share.role);
    const from = describeLimit(e.role.connectionLimit);
    const current = e.role.connectionLimit;
    const reason =
      current < 0 ? "ConnectionLimitSet" : limit > current ? "ConnectionLimitRaised" : "ConnectionLimitLowered";
    await pass.announce([
      {
        type: "Normal",
        reason,
        action: "AlterRole",
        note: `CONNECTION LIMIT of role ${name} ${from} → ${limit} (${explainShare(e.share)})`,
      },
    ]);
    try {
      await this.deps.postgres.setConnectionLimit(e.target, e.share.role, limit);
      e.role = { ...e.role, connectionLimit: limit };
    } catch (err) {
      e.verdict = failed(err, `setting the CONNECTION LIMIT of role ${name} to ${limit}`);
    }
  }

  /**
   * The policy no longer names `record.role`: give the role back the limit it had, unless another
   * policy of the server still names it (its passes hold the role to the share of those left).
   */
  private async release(record: LimitRecord, target: PostgresTarget, peers: readonly PolicyOnServer[]): Promise<void> {
    const restored = await restoreLimit(this.deps, this.pass, record, target, peers);
    if (restored.error) {
      this.verdict = restored.error;
      return;
    }
    this.pass.policy = await this.deps.kube.recordLimitBefore(this.pass.policy, null);
  }

  /** Keys of the other policies naming `role` whose apps have not rolled out their pools yet. */
  private peersRollingOut(share: RoleShare): string[] {
    // The share already names the policies of the role (validated once, server/model.ts): only
    // their rollout is read off the objects.
    const naming = new Set(share.policies);
    return this.peerObjects
      .map((p) => ({ key: objectKey(p), p }))
      .filter(({ key, p }) => {
        if (!naming.has(key)) return false;
        const env = p.status?.conditions?.find((c) => c.type === "PoolEnvInjected");
        return env?.status !== "True" || env.observedGeneration !== p.metadata.generation;
      })
      .map(({ key }) => key);
  }

  private unknown(what: string): void {
    this.verdict = {
      status: "Unknown",
      reason: "PostgresUnreachable",
      message: `${what}: PostgreSQL is not reachable`,
    };
  }
}

/**
 * Gives a role the limit recorded before the policy changed it, unless another live policy of
 * the server still names the role. Used when a policy stops naming a role and when it is deleted.
 */
export async function restoreLimit(
  deps: ConnectionLimitDeps,
  pass: Pick<Pass, "server" | "announce">,
  record: LimitRecord,
  target: PostgresTarget,
  peers: readonly PolicyOnServer[],
): Promise<{ error?: Verdict; restored: boolean }> {
  const name = JSON.stringify(record.role);
  // The policy itself is not among them: it no longer names the role, or it is being deleted.
  const still = peers.filter((p) => enforcedRole(p) === record.role);
  if (still.length > 0) return { restored: false };
  await pass.announce([
    {
      type: "Normal",
      reason: "ConnectionLimitRestored",
      action: "AlterRole",
      note: `CONNECTION LIMIT of role ${name} restored to ${describeLimit(record.before)}, as it was before: no policy of ${pass.server} names the role any more`,
    },
  ]);
  try {
    await deps.postgres.setConnectionLimit(target, record.role, record.before);
  } catch (err) {
    return { restored: false, error: failed(err, `restoring the CONNECTION LIMIT of role ${name}`) };
  }
  operatorMetrics.forgetRole(pass.server, record.role);
  return { restored: true };
}

function inForce(e: Enforcing): Verdict {
  const name = JSON.stringify(e.share.role);
  const limit = e.role.connectionLimit;
  const how = `${explainShare(e.share)}; ${e.role.connections} session(s) now`;
  if (limitReached(e.role)) {
    return {
      status: "False",
      reason: "LimitReached",
      message: `role ${name} has ${e.role.connections} session(s), its CONNECTION LIMIT is ${limit} (${explainShare(e.share)}): new sessions of ${name} are refused ("too many connections for role"). Something connects beyond the pools (a client of its own, a leak, more pods than the budget knows): find it with \`poolpolicy diagnose\`, or raise the margin`,
    };
  }
  return { status: "True", reason: "Enforced", message: `role ${name} has CONNECTION LIMIT ${limit} (${how})` };
}

/** A failed read or ALTER ROLE as a condition; a refused privilege says which one. */
function failed(err: unknown, what: string): Verdict {
  const e = err instanceof PostgresError ? err : new PostgresError("QueryFailed", String(err));
  if (e.reason === "PermissionDenied") {
    return {
      status: "False",
      reason: "PermissionDenied",
      message: `${what}: ${e.message}. The operator's role needs CREATEROLE (on PostgreSQL 16+ also ADMIN OPTION on the app role: GRANT <app role> TO <operator role> WITH ADMIN OPTION)`,
    };
  }
  return { status: "False", reason: e.reason, message: `${what}: ${e.message}` };
}
