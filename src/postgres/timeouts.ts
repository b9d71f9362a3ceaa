/**
 * PostgreSQL's own idle-in-transaction limit, as an alternative (or a complement) to the
 * operator's reaper: idle_in_transaction_session_timeout ends such sessions inside the server,
 * at once and with no polling. Set server-wide with ALTER SYSTEM + reload, or per role with
 * ALTER ROLE … SET (new sessions of the role pick it up). Both only need a reload.
 *
 * The value is an integer of milliseconds rendered as a number; role names are quoted as
 * identifiers by the driver. Nothing from a spec is interpolated as text.
 */
import type pg from "pg";
import { explainAlterSystemFailure, reloadConfiguration } from "./settings.js";

const PARAMETER = "idle_in_transaction_session_timeout";

function renderMs(ms: number): string {
  if (!Number.isSafeInteger(ms) || ms < 0 || ms > 2_147_483_647)
    throw new RangeError(`${PARAMETER} must be 0..2147483647 ms, got ${ms}`);
  return ms.toFixed(0);
}

/** Sets the server-wide value if it differs; true when something was changed. */
export async function ensureServerTimeout(client: pg.PoolClient, ms: number): Promise<boolean> {
  const current = (await client.query("SELECT setting::bigint AS ms FROM pg_settings WHERE name = $1", [PARAMETER]))
    .rows[0];
  if (Number(current?.ms) === ms) return false;
  try {
    await client.query(`ALTER SYSTEM SET ${PARAMETER} = ${renderMs(ms)}`);
  } catch (err) {
    throw await explainAlterSystemFailure(client, err, PARAMETER, "reload");
  }
  await reloadConfiguration(client, PARAMETER);
  return true;
}

/** Sets the value on each role that does not have it yet; returns the roles changed. */
export async function ensureRoleTimeouts(
  client: pg.PoolClient,
  roles: readonly string[],
  ms: number,
): Promise<string[]> {
  const wanted = `${PARAMETER}=${renderMs(ms)}`;
  const changed: string[] = [];
  for (const role of roles) {
    const rows = (
      await client.query(
        `SELECT s.setconfig FROM pg_db_role_setting s JOIN pg_roles r ON r.oid = s.setrole
        WHERE r.rolname = $1 AND s.setdatabase = 0`,
        [role],
      )
    ).rows;
    const config: string[] = rows[0]?.setconfig ?? [];
    if (config.includes(wanted)) continue;
    await client.query(`ALTER ROLE ${client.escapeIdentifier(role)} SET ${PARAMETER} = ${renderMs(ms)}`);
    changed.push(role);
  }
  return changed;
}
