/**
 * What the apps depend on besides connection slots: required extensions (e.g. AGE) in the
 * database, and Redis when the policy names one. The operator turns these verdicts into its
 * ExtensionsReady and RedisAvailable conditions, and `poolpolicy diagnose` prints the same ones,
 * so that both say the same.
 */
import type { Condition, PoolPolicySpec, PoolPolicyStatus } from "../api/schema.js";
import type { ServerFacts } from "../postgres/inspect.js";
import { checkRedis } from "../redis/check.js";
import type { SecretReader } from "./credentials.js";

/** A condition's verdict without its type: the caller names the condition. */
export type Verdict = Pick<Condition, "status" | "reason" | "message">;

export function checkExtensions(spec: PoolPolicySpec, facts: ServerFacts | undefined): Verdict {
  const required = spec.postgres.requiredExtensions;
  if (required.length === 0) return { status: "True", reason: "NoneRequired", message: "no extensions required" };
  if (!facts)
    return {
      status: "Unknown",
      reason: "PostgresUnreachable",
      message: "cannot list extensions: PostgreSQL is not reachable",
    };
  const missing = required.filter((e) => !facts.installedExtensions.includes(e));
  if (missing.length === 0)
    return {
      status: "True",
      reason: "Installed",
      message: `installed in ${spec.postgres.database}: ${required.join(", ")}`,
    };
  const detail = missing
    .map((e) =>
      facts.availableExtensions.includes(e)
        ? `${e} is available but not created (run CREATE EXTENSION ${e} in ${spec.postgres.database})`
        : `${e} is not available on the server (its package is not installed)`,
    )
    .join("; ");
  return { status: "False", reason: "ExtensionMissing", message: detail };
}

export interface RedisOutcome {
  condition: Verdict;
  status?: PoolPolicyStatus["redis"];
  /** Whether Ready should take RedisAvailable into account. */
  required: boolean;
}

export async function checkRedisDependency(
  readSecret: SecretReader,
  namespace: string,
  spec: PoolPolicySpec,
): Promise<RedisOutcome> {
  const redis = spec.redis;
  if (!redis)
    return { required: false, condition: { status: "True", reason: "NotConfigured", message: "no Redis configured" } };
  const secret = await readSecret(namespace, redis.urlSecret.name, [redis.urlSecret.key]);
  if (!secret.ok)
    return { required: redis.required, condition: { status: "False", reason: secret.reason, message: secret.message } };
  try {
    const facts = await checkRedis(secret.values[redis.urlSecret.key]!);
    const nearLimit = facts.maxClients > 0 && facts.connectedClients >= 0.9 * facts.maxClients;
    return {
      required: redis.required,
      status: facts,
      condition: {
        status: "True",
        reason: nearLimit ? "NearClientLimit" : "Available",
        message: `Redis answers PING; ${facts.connectedClients}/${facts.maxClients} clients, ${facts.rejectedConnections} rejected since its start`,
      },
    };
  } catch (err) {
    const tail = redis.required ? "" : " (not required: a warning only)";
    return {
      required: redis.required,
      condition: { status: "False", reason: "RedisUnavailable", message: `${(err as Error).message}${tail}` },
    };
  }
}
