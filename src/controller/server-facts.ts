/**
 * One recent reading of a PostgreSQL server's facts (inspectServer), shared by the passes of
 * every policy on that server.
 *
 * Why: each pass of each policy read the facts anew, five statements one after another on the
 * operator's two connections to the server. With 200 policies on one server that was the
 * largest part of a pass (78 ms of 271 ms on average, docs/benchmarks.md, scenario 7): the same
 * answer read about 900 times in a minute, the four workers queueing for the two connections.
 *
 * The rule (what `read` answers with):
 *   - a reading that started at most `maxAgeMs` ago, still in flight or done: a pass gets facts
 *     at most that much older than its own read would have been;
 *   - never a reading the same policy has already been answered with: a policy's next pass
 *     always sees the server as it is after its last one. Its own edit, a Secret's change or a
 *     poke asks about the server now, and two passes of one policy a few ms apart must not both
 *     see the moment before (a password changed in PostgreSQL, then the pass that must notice
 *     it, was answered "Connected" from the reading of the pass before: secret-rotation.test.ts);
 *   - never a reading that failed: it is dropped when it fails, and the next pass reads again;
 *   - never a reading that shows a restart pending: the facts are about to change, and a
 *     restart's verification must see the new postmaster as soon as it is up;
 *   - never a reading from before the operator ran anything else on that server (ALTER SYSTEM, a
 *     server timeout, a reap that ended sessions): `invalidate` drops it, and a reading still in
 *     flight then is not kept when it lands.
 *
 * Keyed by everything a connection is made of, the password's digest included: what a role may
 * do (alter max_connections, read the configuration files) belongs to the role, and a wrong
 * password must fail on its own rather than be answered with a right one's facts.
 *
 * Everything decided about a server stays a function of the policies on it and of its facts
 * (src/server/model.ts); sharing one reading only makes the peers of a server decide on the
 * same facts.
 */
import { createHash } from "node:crypto";
import type { PostgresTarget } from "../postgres/connection.js";
import type { ServerFacts } from "../postgres/inspect.js";

/** How old a shared reading may be: well under a pass of a busy server's many policies, far under the stats refresh. */
export const FACTS_MAX_AGE_MS = 1_000;

interface Reading {
  startedAt: number;
  /** The policies answered with this reading: each gets it once. */
  readers: Set<string>;
  facts: Promise<ServerFacts>;
  /** Set once the reading has landed. */
  landed?: ServerFacts;
}

export class SharedServerFacts {
  private readonly readings = new Map<string, Reading>();

  constructor(
    private readonly maxAgeMs: number = FACTS_MAX_AGE_MS,
    private readonly now: () => number = () => performance.now(),
  ) {}

  /**
   * The server's facts for a pass of the policy `reader` (its namespace/name): a shared recent
   * reading when the rule above allows it, else `inspect()`.
   */
  read(target: PostgresTarget, reader: string, inspect: () => Promise<ServerFacts>): Promise<ServerFacts> {
    const key = targetKey(target);
    const current = this.readings.get(key);
    if (current && this.usable(current, reader)) {
      current.readers.add(reader);
      return current.facts;
    }
    const reading: Reading = { startedAt: this.now(), readers: new Set([reader]), facts: inspect() };
    this.readings.set(key, reading);
    reading.facts.then(
      (facts) => {
        reading.landed = facts;
      },
      () => {
        if (this.readings.get(key) === reading) this.readings.delete(key);
      },
    );
    return reading.facts;
  }

  /** The operator changed (or may have changed) something on the server: the next pass reads again. */
  invalidate(target: PostgresTarget): void {
    this.readings.delete(targetKey(target));
  }

  private usable(reading: Reading, reader: string): boolean {
    if (reading.readers.has(reader)) return false;
    if (this.now() - reading.startedAt > this.maxAgeMs) return false;
    return reading.landed?.pendingRestart !== true;
  }
}

function targetKey(t: PostgresTarget): string {
  const secret = createHash("sha256").update(t.password).digest("hex");
  return JSON.stringify([t.host, t.port, t.database, t.user, t.sslMode, secret]);
}
