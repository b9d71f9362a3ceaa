/**
 * Building PoolPolicy specs for fuzzing: a valid starting point and a way to set (or delete)
 * any field by its dotted path. Shared by the admission-agreement test and the fault suite.
 */

/** Put in place of a value to remove the field instead. */
export const DELETE = Symbol("delete");

/** A valid spec that exercises most fields (restart, maintenance window, pool, reaper). */
export function validSpec(): Record<string, any> {
  return {
    postgres: {
      host: "db.example",
      credentialsSecret: { name: "pg" },
      maxConnections: 200,
      restart: {
        workload: { name: "postgres" },
        maintenanceWindow: { days: ["Sat"], start: "02:00", duration: "2h", timeZone: "UTC" },
      },
    },
    pool: { minSize: 5, maxSize: 25 },
    targets: { selector: { matchLabels: { app: "x" } } },
    reaper: { interval: "60s" },
  };
}

/** Sets `path` ("a.b.c") in `target` to `value`, creating objects on the way; DELETE removes it. */
export function setPath(target: Record<string, any>, path: string, value: unknown): void {
  const keys = path.split(".");
  let node = target;
  for (const key of keys.slice(0, -1)) {
    if (typeof node[key] !== "object" || node[key] === null || Array.isArray(node[key])) node[key] = {};
    node = node[key];
  }
  if (value === DELETE) delete node[keys.at(-1)!];
  else node[keys.at(-1)!] = value;
}
