/**
 * The login to a policy's server: its spec.postgres plus the username and password from the
 * Secret it names. The one place where the operator and the CLI turn a policy into a
 * connection target; the values go to the database client only, never into a log line, an
 * Event, a condition or an error.
 */
import type { PoolPolicySpec } from "../api/schema.js";
import type { PostgresTarget } from "../postgres/connection.js";
import type { SecretRead } from "../kube/secrets.js";

/** Reads keys of a Secret: a GET (the CLI) or the operator's watch cache. */
export type SecretReader = (namespace: string, name: string, keys: string[]) => Promise<SecretRead>;

export type PolicyTarget =
  | { ok: true; target: PostgresTarget }
  | { ok: false; reason: Extract<SecretRead, { ok: false }>["reason"]; message: string };

export async function policyTarget(
  readSecret: SecretReader,
  namespace: string,
  spec: Pick<PoolPolicySpec, "postgres">,
  override: { host?: string; port?: number } = {},
): Promise<PolicyTarget> {
  const s = spec.postgres.credentialsSecret;
  const secret = await readSecret(namespace, s.name, [s.usernameKey, s.passwordKey]);
  if (!secret.ok) return secret;
  return {
    ok: true,
    target: {
      host: override.host ?? spec.postgres.host,
      port: override.port ?? spec.postgres.port,
      database: spec.postgres.database,
      sslMode: spec.postgres.sslMode,
      user: secret.values[s.usernameKey]!,
      password: secret.values[s.passwordKey]!,
    },
  };
}
