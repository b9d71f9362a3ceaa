/**
 * The operator's configuration: environment variables, validated with zod at start-up so that
 * a typo stops the process with a message instead of running half-configured.
 */
import { hostname } from "node:os";
import { z } from "zod";

const bool = z.enum(["true", "false"]).transform((v) => v === "true");
const seconds = z.coerce.number().int().positive();

export const configSchema = z.object({
  /** Empty: every namespace. */
  WATCH_NAMESPACE: z.string().default(""),
  LEADER_ELECT: bool.default(true),
  LEASE_NAME: z.string().min(1).default("poolpolicy-operator"),
  /** Where the Lease lives; the chart passes the pod's namespace. */
  POD_NAMESPACE: z.string().min(1).default("default"),
  POD_NAME: z.string().min(1).default(hostname()),
  HTTP_HOST: z.string().default("0.0.0.0"),
  HTTP_PORT: z.coerce.number().int().min(0).max(65535).default(8080),
  LOG_LEVEL: z.enum(["fatal", "error", "warn", "info", "debug", "trace"]).default("info"),
  /** Concurrent reconciles (different policies; one policy is never reconciled twice at once). */
  WORKERS: z.coerce.number().int().min(1).max(64).default(4),
  /** Every policy is reconciled at least this often, events or not. */
  RESYNC_SECONDS: seconds.default(300),
  /** How often a converged policy re-reads its server's statistics. */
  STATS_REFRESH_SECONDS: seconds.default(30),
  /**
   * Restarts of one PostgreSQL server the operator requests per hour at most; past it, restarts
   * are held until a person releases them (src/controller/restart-gate.ts).
   */
  MAX_RESTARTS_PER_HOUR: z.coerce.number().int().min(1).max(60).default(3),
  /**
   * Give V8's pooled heap pages back to the system after a peak of work (src/runtime/heap-pages.ts):
   * without it, RSS stays at the peak's size, which a Pod's memory limit counts.
   */
  HEAP_PAGES_GIVE_BACK: bool.default(true),
});

export type OperatorConfig = z.output<typeof configSchema>;

export function loadConfig(env: NodeJS.ProcessEnv = process.env): OperatorConfig {
  const result = configSchema.safeParse(env);
  if (!result.success) {
    const problems = result.error.issues.map((i) => `${i.path.join(".")}: ${i.message}`).join("; ");
    throw new Error(`invalid operator configuration: ${problems}`);
  }
  return result.data;
}
