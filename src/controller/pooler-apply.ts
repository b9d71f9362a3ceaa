/**
 * Applies the pooler's objects (pooler/pooler-objects.ts) on the API server: server-side apply
 * with the operator's pooler field manager, ConfigMap and Secret before the Deployment that
 * mounts them, the Service last. Not forced: a field someone else manages (a person's
 * `kubectl apply` of an object with the pooler's name) is theirs, and the 409 becomes a
 * condition naming them rather than a silent overwrite.
 */
import { createHash } from "node:crypto";
import { type AppsV1Api, type CoreV1Api, PatchStrategy, setHeaderOptions } from "@kubernetes/client-node";
import { isNotFound } from "../kube/errors.js";
import {
  type PoolerObjectKind,
  type PoolerObjectRef,
  type PoolerObjects,
  poolerObjectNames,
} from "../pooler/pooler-objects.js";
import { FIELD_MANAGER_PREFIX } from "./env-injection.js";
import { conflictingManagers } from "./env-conflicts.js";

/** One manager for every pooler: the policies of a server agree on one pooler (server/pooler.ts). */
export const POOLER_FIELD_MANAGER = `${FIELD_MANAGER_PREFIX}/pooler`;

/** Another field manager owns fields of a pooler object with other values (a 409 on our apply). */
export class PoolerObjectConflict extends Error {
  constructor(
    readonly object: string,
    readonly managers: string[],
  ) {
    super(
      `field manager ${managers.map((m) => `"${m}"`).join(", ")} owns fields of ${object} with other values, ` +
        "so the operator does not overwrite them: delete that object (the operator re-creates it), or give the pooler another spec.pooler.name",
    );
  }
}

type PoolerClients = { apps: AppsV1Api; core: CoreV1Api };

const ssa = () => setHeaderOptions("Content-Type", PatchStrategy.ServerSideApply);

export async function applyPoolerObjects(clients: PoolerClients, objects: PoolerObjects): Promise<void> {
  const { configMap, secret, deployment, service } = objects;
  const params = (o: { metadata?: { name?: string; namespace?: string } }) => ({
    name: o.metadata!.name!,
    namespace: o.metadata!.namespace!,
    fieldManager: POOLER_FIELD_MANAGER,
    force: false,
  });
  const guarded = async (what: string, apply: () => Promise<unknown>) => {
    try {
      await apply();
    } catch (err) {
      const managers = conflictingManagers(err);
      if (managers) throw new PoolerObjectConflict(what, managers);
      throw err;
    }
  };
  const where = (kind: string, o: { metadata?: { name?: string; namespace?: string } }) =>
    `${kind} ${o.metadata!.namespace}/${o.metadata!.name}`;
  await guarded(where("ConfigMap", configMap), () =>
    clients.core.patchNamespacedConfigMap({ ...params(configMap), body: configMap }, ssa()),
  );
  // The body holds the password: an error from this call is rethrown with the API's Status, never the body.
  await guarded(where("Secret", secret), () =>
    clients.core.patchNamespacedSecret({ ...params(secret), body: secret }, ssa()),
  );
  await guarded(where("Deployment", deployment), () =>
    clients.apps.patchNamespacedDeployment({ ...params(deployment), body: deployment }, ssa()),
  );
  await guarded(where("Service", service), () =>
    clients.core.patchNamespacedService({ ...params(service), body: service }, ssa()),
  );
}

type ObjectMeta = { metadata?: { uid?: string; ownerReferences?: { kind: string; name: string; uid: string }[] } };

/** One GET of a pooler object by kind; the caller keeps only its metadata. */
function readObject(
  clients: PoolerClients,
  kind: PoolerObjectKind,
  namespace: string,
  name: string,
): Promise<ObjectMeta> {
  const params = { namespace, name };
  switch (kind) {
    case "ConfigMap":
      return clients.core.readNamespacedConfigMap(params);
    case "Secret":
      return clients.core.readNamespacedSecret(params);
    case "Deployment":
      return clients.apps.readNamespacedDeployment(params);
    case "Service":
      return clients.core.readNamespacedService(params);
  }
}

/**
 * The pooler's objects that exist, with their owners: four GETs, on the pass that removes a
 * pooler only. The Secret's data is read with it (a GET returns the whole object) and dropped
 * here: only uids and owner names leave this function.
 */
export async function readPoolerObjects(
  clients: PoolerClients,
  namespace: string,
  poolerName: string,
): Promise<PoolerObjectRef[]> {
  const found: PoolerObjectRef[] = [];
  for (const { kind, name } of poolerObjectNames(poolerName)) {
    let object: ObjectMeta;
    try {
      object = await readObject(clients, kind, namespace, name);
    } catch (err) {
      if (isNotFound(err)) continue;
      throw err;
    }
    const owners = (object.metadata?.ownerReferences ?? []).map(({ kind, name, uid }) => ({ kind, name, uid }));
    found.push({ pooler: poolerName, kind, namespace, name, uid: object.metadata?.uid ?? "", owners });
  }
  return found;
}

/**
 * Deletes this very object: its uid is a precondition, so an object deleted and re-created by
 * someone else since it was read (and found to be ours) is not deleted (409). Gone already is
 * done. A Deployment's ReplicaSets and pods go with it (Background propagation).
 */
export async function deletePoolerObject(clients: PoolerClients, object: PoolerObjectRef): Promise<void> {
  const params = {
    namespace: object.namespace,
    name: object.name,
    body: { preconditions: { uid: object.uid }, propagationPolicy: "Background" },
  };
  try {
    switch (object.kind) {
      case "ConfigMap":
        await clients.core.deleteNamespacedConfigMap(params);
        break;
      case "Secret":
        await clients.core.deleteNamespacedSecret(params);
        break;
      case "Deployment":
        await clients.apps.deleteNamespacedDeployment(params);
        break;
      case "Service":
        await clients.core.deleteNamespacedService(params);
        break;
    }
  } catch (err) {
    if (!isNotFound(err)) throw err;
  }
}

/**
 * The declaring policy's pass renders the pooler's objects on every pass; most passes render the
 * same four objects, and applying them anyway is four no-op PATCHes per pass. This remembers
 * what was applied (a digest of the rendered objects, password included, never the text) and
 * when, per pooler: the same objects are applied again only after `resyncMs`, so that an object
 * deleted or edited by hand is put back within that time without the operator watching it.
 */
export class RecentPoolerApplies {
  private readonly applied = new Map<string, { digest: string; at: number }>();

  constructor(
    private readonly resyncMs = 10 * 60_000,
    private readonly now: () => number = Date.now,
  ) {}

  static digest(objects: PoolerObjects): string {
    return createHash("sha256").update(JSON.stringify(objects)).digest("hex");
  }

  /** True when exactly these objects were applied less than resyncMs ago. */
  isFresh(objects: PoolerObjects): boolean {
    const last = this.applied.get(poolerKey(objects));
    return (
      last !== undefined && last.digest === RecentPoolerApplies.digest(objects) && this.now() - last.at < this.resyncMs
    );
  }

  /** After a successful apply. */
  record(objects: PoolerObjects): void {
    this.applied.set(poolerKey(objects), { digest: RecentPoolerApplies.digest(objects), at: this.now() });
  }

  /** After a failed apply: the next pass applies whatever it renders. */
  forget(objects: PoolerObjects): void {
    this.applied.delete(poolerKey(objects));
  }

  /** After a delete: the same objects declared again must be applied at once, not after resyncMs. */
  forgetPooler(namespace: string, name: string): void {
    this.applied.delete(`${namespace}/${name}`);
  }
}

const poolerKey = (o: PoolerObjects) => `${o.deployment.metadata!.namespace}/${o.deployment.metadata!.name}`;
