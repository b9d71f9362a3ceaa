/**
 * Structured JSON logs (pino). One line per action, carrying the policy key and the reason.
 *
 * Secrets: the logger redacts the usual places a password could hide (connection configs,
 * URLs, secret data), and `redactUrl` strips credentials from a URL before it is logged.
 * The first line of defence remains not to log secrets at all.
 */
import { pino, type Logger } from "pino";

export type { Logger };

export function createLogger(level = process.env.LOG_LEVEL ?? "info"): Logger {
  return pino({
    level,
    base: { component: "poolpolicy-operator" },
    timestamp: pino.stdTimeFunctions.isoTime,
    redact: {
      paths: [
        "password",
        "*.password",
        "*.*.password",
        "url",
        "*.url",
        "connectionString",
        "*.connectionString",
        "data",
        "*.data",
      ],
      censor: "[redacted]",
    },
  });
}

/** The root logger of the process; modules derive children with `.child({ ... })`. */
export const log: Logger = createLogger();

/** redis://user:secret@host:6379/0 → redis://user:***@host:6379/0 */
export function redactUrl(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password) parsed.password = "***";
    return parsed.toString();
  } catch {
    return "[unparseable url]";
  }
}
