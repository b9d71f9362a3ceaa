/**
 * Reading credentials from Secrets. Values are decoded here and handed to the database client
 * only; they never enter a log line, an Event, a condition or an error message.
 */
import type { CoreV1Api } from "@kubernetes/client-node";
import { apiErrorMessage, httpStatus } from "./kube-errors.js";

export type SecretRead =
  | { ok: true; values: Record<string, string> }
  | { ok: false; reason: "SecretNotFound" | "SecretKeyMissing" | "SecretUnreadable"; message: string };

export async function readSecretKeys(
  core: CoreV1Api,
  namespace: string,
  name: string,
  keys: string[],
): Promise<SecretRead> {
  let data: Record<string, string> | undefined;
  try {
    data = (await core.readNamespacedSecret({ name, namespace })).data;
  } catch (err) {
    if (httpStatus(err) === 404)
      return { ok: false, reason: "SecretNotFound", message: `Secret ${namespace}/${name} not found` };
    return {
      ok: false,
      reason: "SecretUnreadable",
      message: `cannot read Secret ${namespace}/${name}: ${apiErrorMessage(err)}`,
    };
  }
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
