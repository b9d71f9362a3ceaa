/**
 * Reading credentials from Secrets. Values are decoded here and handed to the database client
 * only; they never enter a log line, an Event, a condition or an error message.
 */
import type { CoreV1Api, V1Secret } from "@kubernetes/client-node";
import { apiErrorMessage, isNotFound } from "./errors.js";

export type SecretRead =
  | { ok: true; values: Record<string, string> }
  | { ok: false; reason: "SecretNotFound" | "SecretKeyMissing" | "SecretUnreadable"; message: string };

/**
 * Where the Secret is read first: its watch (null: the watch has synced and there is no such
 * Secret); undefined when it is not watched or not synced, and then it is read with a GET.
 */
export type CachedSecretReader = (namespace: string, name: string) => Promise<V1Secret | null | undefined>;

export async function readSecretKeys(
  core: CoreV1Api,
  namespace: string,
  name: string,
  keys: string[],
  cached?: CachedSecretReader,
): Promise<SecretRead> {
  let data: Record<string, string> | undefined;
  const fromCache = await cached?.(namespace, name);
  if (fromCache === null)
    return { ok: false, reason: "SecretNotFound", message: `Secret ${namespace}/${name} not found` };
  if (fromCache) return valuesOf(fromCache.data, namespace, name, keys);
  try {
    data = (await core.readNamespacedSecret({ name, namespace })).data;
  } catch (err) {
    if (isNotFound(err))
      return { ok: false, reason: "SecretNotFound", message: `Secret ${namespace}/${name} not found` };
    return {
      ok: false,
      reason: "SecretUnreadable",
      message: `cannot read Secret ${namespace}/${name}: ${apiErrorMessage(err)}`,
    };
  }
  return valuesOf(data, namespace, name, keys);
}

function valuesOf(
  data: Record<string, string> | undefined,
  namespace: string,
  name: string,
  keys: string[],
): SecretRead {
  const values: Record<string, string> = {};
  for (const key of keys) {
    const encoded = data?.[key];
    if (encoded === undefined) {
      return { ok: false, reason: "SecretKeyMissing", message: `Secret ${namespace}/${name} has no key "${key}"` };
    }
    values[key] = Buffer.from(encoded, "base64").toString("utf8");
  }
  return { ok: true, values };
}
