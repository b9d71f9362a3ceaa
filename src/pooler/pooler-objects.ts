/**
 * The pooler's Kubernetes objects, as server-side apply configurations (issue 17): a ConfigMap
 * with pgbouncer.ini, a Secret with the auth_file, a Deployment that mounts both, and a Service.
 * Pure, like pgbouncer-config.ts: the reconciler decides whether to apply (a refused plan applies
 * nothing) and the Kubernetes port applies what is rendered here, in this order.
 *
 * Every object is owned by the declaring PoolPolicy (an ownerReference with controller and
 * blockOwnerDeletion), so deleting that policy lets the garbage collector delete the pooler.
 * That is the safe end on purpose, even while other policies still route through it: an orphaned
 * pooler would keep its server connections with sizes no budget holds any more, the over-commit
 * the pooler exists to prevent. The policies left with spec.pool.via Pooler are told by their
 * PoolerSized condition (PoolerNotDeclared, naming the pooler that went away) to declare it again
 * on one of them or go Direct. Apps are not pointed at the pooler yet (no env injection), so
 * nothing loses its address today; once they are, this is the condition they will act on.
 *
 * Reload versus roll: the pod template carries restartChecksum of the config, which changes only
 * when changeKind says "restart" (a listener change), and the cap the pods were started with
 * (POOLER_CAP_ANNOTATION), which changes only when the per-pod cap shrinks. A growth updates the
 * ConfigMap and leaves the pod template, so the Deployment's generation and its pods stay; the
 * running PgBouncers take the new files by SIGHUP (pgbouncerCommand), as they do a new password.
 */
import type { V1ConfigMap, V1Deployment, V1OwnerReference, V1Secret, V1Service } from "@kubernetes/client-node";
import type { PoolerSpec } from "../server/pooler.js";
import { type PgBouncerConfig, restartChecksum } from "./pgbouncer-config.js";

/** Where the pod finds its files; the ini names the auth_file by this path. */
export const POOLER_CONFIG_DIR = "/etc/pgbouncer/config";
export const POOLER_AUTH_DIR = "/etc/pgbouncer/auth";
export const POOLER_INI_KEY = "pgbouncer.ini";
export const POOLER_AUTH_KEY = "userlist.txt";
export const POOLER_AUTH_FILE = `${POOLER_AUTH_DIR}/${POOLER_AUTH_KEY}`;

/** The pod-template annotation that rolls the pods when, and only when, a restart is needed. */
export const POOLER_RESTART_ANNOTATION = "pooling.dbops.io/pgbouncer-restart-checksum";
/**
 * The pod-template annotation holding the max_db_connections the running pods were started with.
 * A shrink of the per-pod share writes the new, lower cap here, which rolls the pods: a running
 * PgBouncer keeps the cap it started with, and old pods with a larger cap would let the sum
 * exceed max_connections. A growth keeps the live value (no roll): old pods with a smaller cap
 * are safe, merely under-using (podTemplateCap).
 */
export const POOLER_CAP_ANNOTATION = "pooling.dbops.io/pgbouncer-max-db-connections";
/** The label that selects the pooler's pods (immutable in the Deployment's selector). */
export const POOLER_LABEL = "pooling.dbops.io/pooler";

/** The pooler Deployment's minReadySeconds (see there). */
export const POOLER_MIN_READY_SECONDS = 10;

/** What Kubernetes would rewrite in a container's command: `$$` and `$(NAME)` (pgbouncerCommand). */
export const KUBERNETES_EXPANDABLE = /\$\$|\$\([A-Za-z_][A-Za-z0-9_]*\)/;

/** Seconds between the reload watcher's looks at the mounted files (pgbouncerCommand). */
export const POOLER_RELOAD_POLL_SECONDS = 5;

/**
 * The pooler container's command: PgBouncer, and beside it a watcher that sends it SIGHUP (what
 * RELOAD on the admin console does: pgbouncer.ini and the auth_file are read again, no client
 * dropped) when the kubelet has updated the mounted ConfigMap or Secret, which it does in place,
 * within about a minute, without restarting the pod. Without it a growth of the per-pod share
 * would reach only pods started later, and a new password of the auth_user (a rotated
 * credentialsSecret) none, until a restart: PgBouncer would keep logging in with the old one.
 *
 * Why a watcher in the pod and not RELOAD from the operator: the operator would need to reach
 * every pooler pod's admin console, and could not know when the kubelet has written the new
 * files (a RELOAD before that re-reads the old ones). The pod is the one place that sees both.
 *
 * `exec` keeps the shell's pid for PgBouncer, so the watcher's `$pid` is PgBouncer's and the
 * kubelet's SIGTERM reaches PgBouncer itself; the watcher ends when PgBouncer is gone. The pid is
 * read off /proc/self/stat by the shell's own `read`, not taken from `$$`: Kubernetes expands a
 * container's command before it runs it, `$$` to `$` and `$(NAME)` to a variable's value (found
 * on the real node: the watcher got `pid=$` and ended at its first look), so the script has
 * neither (KUBERNETES_EXPANDABLE, tested). The image needs a POSIX shell with `cat`, `cksum` and
 * `sleep` (any Debian or Alpine based one has them). The files' paths are the script's arguments
 * ($1, $2), so a test can run it on its own files.
 */
export function pgbouncerCommand(
  files: { ini: string; authFile: string },
  pollSeconds = POOLER_RELOAD_POLL_SECONDS,
): string[] {
  const script = [
    "read -r pid _ < /proc/self/stat",
    "(",
    '  digest() { cat "$1" "$2" | cksum; }',
    '  last=$(digest "$1" "$2")',
    `  while sleep ${pollSeconds} && kill -0 "$pid" 2>/dev/null; do`,
    '    now=$(digest "$1" "$2")',
    '    if [ "$now" != "$last" ]; then last=$now; kill -HUP "$pid"; fi',
    "  done",
    ") &",
    'exec pgbouncer "$1"',
  ].join("\n");
  return ["/bin/sh", "-c", script, "pgbouncer", files.ini, files.authFile];
}

export interface PoolerOwner {
  apiVersion: string;
  kind: string;
  name: string;
  namespace: string;
  uid: string;
}

export interface PoolerObjects {
  configMap: V1ConfigMap;
  /** Holds the auth_user's password: never log it, never put it in a status or an Event. */
  secret: V1Secret;
  deployment: V1Deployment;
  service: V1Service;
}

/** The Secret's name: the pooler's name is the ConfigMap's, the Deployment's and the Service's. */
export function poolerSecretName(poolerName: string): string {
  return `${poolerName}-auth`;
}

/** The kinds of the pooler's objects, in the order they are applied. */
export type PoolerObjectKind = "ConfigMap" | "Secret" | "Deployment" | "Service";

/** The pooler's four objects by kind and name: what a pooler of this name consists of. */
export function poolerObjectNames(poolerName: string): { kind: PoolerObjectKind; name: string }[] {
  return [
    { kind: "ConfigMap", name: poolerName },
    { kind: "Secret", name: poolerSecretName(poolerName) },
    { kind: "Deployment", name: poolerName },
    { kind: "Service", name: poolerName },
  ];
}

/**
 * One of the pooler's objects as the API server holds it, reduced to whom it belongs to: its
 * own uid (deleted only as that very object) and its ownerReferences. Never the content (the
 * Secret's is the auth_file).
 */
export interface PoolerObjectRef {
  /** The pooler's name (spec.pooler.name) the object belongs to. */
  pooler: string;
  kind: PoolerObjectKind;
  namespace: string;
  name: string;
  uid: string;
  owners: { kind: string; name: string; uid: string }[];
}

/** The cap on the live pooler Deployment's pod template; undefined when there is none (or no such Deployment). */
export function liveTemplateCap(deployment: V1Deployment | undefined): number | undefined {
  const value = deployment?.spec?.template?.metadata?.annotations?.[POOLER_CAP_ANNOTATION];
  const cap = Number(value);
  return value !== undefined && Number.isInteger(cap) ? cap : undefined;
}

/**
 * The cap to write on the pod template: the planned one when it is lower than the live one (the
 * pods roll and restart under it) or when there is no live one; the live one otherwise, so that
 * a growth does not roll.
 */
export function podTemplateCap(planned: number, live: number | undefined): number {
  return live !== undefined && live <= planned ? live : planned;
}

export function poolerObjects(
  owner: PoolerOwner,
  spec: PoolerSpec,
  config: Extract<PgBouncerConfig, { ok: true }>,
  /** podTemplateCap of the planned max_db_connections and the live Deployment's. */
  templateCap: number,
): PoolerObjects {
  const { namespace } = owner;
  const name = spec.name;
  const labels = {
    "app.kubernetes.io/name": "pgbouncer",
    "app.kubernetes.io/instance": name,
    "app.kubernetes.io/managed-by": "poolpolicy-operator",
    [POOLER_LABEL]: name,
  };
  const ownerReferences: V1OwnerReference[] = [
    {
      apiVersion: owner.apiVersion,
      kind: owner.kind,
      name: owner.name,
      uid: owner.uid,
      controller: true,
      blockOwnerDeletion: true,
    },
  ];
  const metadata = (objectName: string) => ({ name: objectName, namespace, labels, ownerReferences });
  const secretName = poolerSecretName(name);
  const port = Number(config.settings.listen_port);
  return {
    configMap: {
      apiVersion: "v1",
      kind: "ConfigMap",
      metadata: metadata(name),
      data: { [POOLER_INI_KEY]: config.ini },
    },
    secret: {
      apiVersion: "v1",
      kind: "Secret",
      metadata: metadata(secretName),
      type: "Opaque",
      data: { [POOLER_AUTH_KEY]: Buffer.from(config.userlist).toString("base64") },
    },
    deployment: {
      apiVersion: "apps/v1",
      kind: "Deployment",
      metadata: metadata(name),
      spec: {
        replicas: spec.replicas,
        selector: { matchLabels: { [POOLER_LABEL]: name } },
        // A pod counts as available only after 10 s of Ready: the apps are pointed at the pooler
        // once it has an available pod (pooler-step.ts), and kube-proxy needs time to program the
        // new endpoint after the pod turns Ready. Measured on the real node (make e2e): without
        // it, the route was injected 1 s after PgBouncer's container started, and the first app
        // pod of the roll started and connected in the next second, before kube-proxy had the
        // endpoint (ENETUNREACH on the Service's address). In a roll the same delay keeps an old
        // pod until the new one is in every kube-proxy's rules.
        minReadySeconds: POOLER_MIN_READY_SECONDS,
        // The planner counted replicas + maxSurge pods (pooler-plan.ts); no pod goes away before
        // its replacement is ready, so the Service keeps accepting clients through a roll. With
        // maxSurge 0 the API server requires maxUnavailable ≥ 1: then a pod goes first, and the
        // pods never exceed the replicas the planner counted.
        strategy: {
          type: "RollingUpdate",
          rollingUpdate: { maxSurge: spec.maxSurge, maxUnavailable: spec.maxSurge === 0 ? 1 : 0 },
        },
        template: {
          metadata: {
            labels,
            annotations: {
              [POOLER_RESTART_ANNOTATION]: restartChecksum(config),
              [POOLER_CAP_ANNOTATION]: String(templateCap),
            },
          },
          spec: {
            // PgBouncer refuses to run as root: the image must name a non-root USER.
            containers: [
              {
                name: "pgbouncer",
                image: spec.image,
                command: pgbouncerCommand({
                  ini: `${POOLER_CONFIG_DIR}/${POOLER_INI_KEY}`,
                  authFile: POOLER_AUTH_FILE,
                }),
                ports: [{ name: "pgbouncer", containerPort: port, protocol: "TCP" }],
                readinessProbe: { tcpSocket: { port: "pgbouncer" }, periodSeconds: 5 },
                securityContext: { allowPrivilegeEscalation: false, readOnlyRootFilesystem: true },
                volumeMounts: [
                  { name: "config", mountPath: POOLER_CONFIG_DIR, readOnly: true },
                  { name: "auth", mountPath: POOLER_AUTH_DIR, readOnly: true },
                ],
              },
            ],
            volumes: [
              { name: "config", configMap: { name } },
              // 0444, not 0400: the files belong to root, and PgBouncer runs as the image's non-root
              // user, whose uid the operator does not know (no fsGroup to give it the group).
              // The pod runs nothing but PgBouncer.
              { name: "auth", secret: { secretName, defaultMode: 0o444 } },
            ],
          },
        },
      },
    },
    service: {
      apiVersion: "v1",
      kind: "Service",
      metadata: metadata(name),
      spec: {
        selector: { [POOLER_LABEL]: name },
        ports: [{ name: "pgbouncer", port: spec.port, targetPort: "pgbouncer", protocol: "TCP" }],
      },
    },
  };
}
