/**
 * The operator process: configuration, wiring, signals.
 *
 *   PoolPolicy informer ───┐                     ┌─ PoolPolicyReconciler (controller/)
 *   Deployment/HPA watches ┤                     │    Postgres / Redis (postgres/, redis/)
 *   (one per namespace)    ├─ enqueue(key) → WorkQueue → workers ─┤
 *   Secret watches ────────┤      (runtime/)     └─ status, Events, SSA patches
 *   periodic resync ───────┘
 *
 * With leader election on, only the Lease holder runs informers and workers; a standby waits.
 * Losing the Lease exits the process (a restart is the only safe way to drop everything that
 * was in flight). SIGTERM stops the workers after their current reconcile, releases the Lease
 * for a fast hand-over, and exits 0.
 */
import { CustomObjectsApi, type KubeConfig } from "@kubernetes/client-node";
import { GROUP, PLURAL, VERSION, type PoolPolicy } from "./api/schema.js";
import { loadConfig, type OperatorConfig } from "./config.js";
import { createLogger, type Logger } from "./log.js";
import { ApiKubernetes, PooledPostgres, SecretUrlRedis } from "./controller/adapters.js";
import { PoolPolicyReconciler } from "./controller/reconciler.js";
import { TargetWatches } from "./controller/target-watches.js";
import { SecretWatches } from "./controller/secret-watches.js";
import { changesWhatPeersRead, peerKeys, referencedSecrets } from "./controller/policy-events.js";
import { PostgresPools } from "./postgres/connection.js";
import { Controller } from "./runtime/controller.js";
import { defaultControllerRateLimiter } from "./runtime/rate-limiter.js";
import { EventRecorder } from "./runtime/events.js";
import { HeapPagesGiveBack } from "./runtime/heap-pages.js";
import { ResilientInformer } from "./runtime/informer.js";
import { loadDefaultKubeConfig } from "./runtime/kube-config.js";
import { objectKey } from "./kube/keys.js";
import { changesWhatReconcileReads } from "./runtime/predicates.js";
import { LeaderElector } from "./runtime/leader.js";
import { abortableRequest } from "./runtime/request-options.js";
import { OperatorServer } from "./runtime/server.js";

export interface RunningOperator {
  /** The port /healthz, /readyz and /metrics listen on. */
  httpPort: number;
  stop(): Promise<void>;
}

export async function runOperator(config: OperatorConfig, kc: KubeConfig, log: Logger): Promise<RunningOperator> {
  const pools = new PostgresPools();
  const events = new EventRecorder(kc, { reportingInstance: config.POD_NAME, logger: log });
  const resyncMs = config.RESYNC_SECONDS * 1000;

  let controller: Controller | undefined;
  const enqueue = (key: string) => controller?.enqueue(key);
  const targetWatches = new TargetWatches(kc, enqueue, log);
  const secretWatches = new SecretWatches(kc, enqueue, log);
  const policies = policyInformer(kc, config, enqueue, secretWatches, resyncMs, log);
  const kube = new ApiKubernetes(kc, {
    watchTargets: (key, namespace, selector) => targetWatches.ensure(key, namespace, selector),
    cachedTargets: (key, namespace, selector) => targetWatches.cachedTargets(key, namespace, selector),
    cachedHpas: (namespace) => targetWatches.cachedHpas(namespace),
    budgetInputsVersion: (selections) => targetWatches.budgetInputsVersion(selections),
    cachedSecret: (namespace, name) => secretWatches.cached(namespace, name),
  });
  const reconciler = new PoolPolicyReconciler({
    kube,
    postgres: new PooledPostgres(pools),
    redis: new SecretUrlRedis(kube),
    events,
    log,
    getPolicy: (key) => policies.getByKey(key),
    listPolicies: () => policies.list(),
    now: () => new Date(),
    statsRefreshMs: config.STATS_REFRESH_SECONDS * 1000,
    maxRestartsPerHour: config.MAX_RESTARTS_PER_HOUR,
  });
  controller = new Controller({
    name: "poolpolicy",
    workers: config.WORKERS,
    reconcile: (key) => reconciler.reconcile(key),
    // Failures back off exponentially from 5 ms, capped at 2 minutes (client-go's 1000 s cap
    // would leave a policy stale for a quarter of an hour after, say, a permission is fixed).
    rateLimiter: defaultControllerRateLimiter({ maxDelayMs: 120_000 }),
    logger: log,
  });

  const startWork = () => {
    log.info({ action: "StartWork" }, "starting informers and workers");
    policies.start();
    controller!.start();
  };

  let elector: LeaderElector | undefined;
  let stopping = false;
  const server = new OperatorServer({ logger: log });
  server.addHealthCheck("process", () => !stopping);
  // Ready: the leader once its cache synced; a standby while it can read its Lease (one that
  // cannot reach the API server could never take over, and must not look healthy).
  server.addReadinessCheck("policies-synced", () =>
    elector === undefined || elector.isLeader() ? policies.hasSynced() : elector.canReadLease(),
  );
  const httpPort = await server.listen(config.HTTP_PORT, config.HTTP_HOST);
  const heapPages = config.HEAP_PAGES_GIVE_BACK ? new HeapPagesGiveBack(log) : undefined;
  heapPages?.start();

  const stop = async () => {
    if (stopping) return;
    stopping = true;
    heapPages?.stop();
    log.info({ action: "Shutdown" }, "stopping: finishing reconciles in flight");
    await controller!.stop();
    await policies.stop();
    await targetWatches.stopAll();
    await secretWatches.stopAll();
    await elector?.release();
    await pools.closeAll();
    await server.close();
  };

  if (config.LEADER_ELECT) {
    elector = new LeaderElector(kc, {
      namespace: config.POD_NAMESPACE,
      name: config.LEASE_NAME,
      identity: config.POD_NAME,
      logger: log,
      onStartedLeading: startWork,
      onStoppedLeading: () => {
        log.fatal({ action: "LostLease" }, "lost the leader lease: exiting so that no two leaders act at once");
        process.exit(1);
      },
    });
    elector.start();
  } else {
    startWork();
  }
  return { httpPort, stop };
}

function policyInformer(
  kc: KubeConfig,
  config: OperatorConfig,
  enqueue: (key: string) => void,
  secrets: SecretWatches,
  resyncMs: number,
  log: Logger,
) {
  const custom = kc.makeApiClient(CustomObjectsApi);
  const ns = config.WATCH_NAMESPACE;
  const path = ns ? `/apis/${GROUP}/${VERSION}/namespaces/${ns}/${PLURAL}` : `/apis/${GROUP}/${VERSION}/${PLURAL}`;
  // Policies that point at one server depend on each other (budget, max_connections, conflicts):
  // a change to what the others read of one brings them back too (controller/policy-events.ts).
  const withPeers = (p: PoolPolicy, ...also: PoolPolicy[]) => {
    const key = objectKey(p);
    enqueue(key);
    for (const peer of peerKeys(informer.list(), key, p, ...also)) enqueue(peer);
  };
  // The Secrets a policy names are watched before its first reconcile reads them.
  const watchSecrets = (p: PoolPolicy) => secrets.ensure(objectKey(p), referencedSecrets(p));
  const informer: ResilientInformer<PoolPolicy> = new ResilientInformer<PoolPolicy>(
    kc,
    path,
    ({ resourceVersion, signal }) =>
      (ns
        ? custom.listNamespacedCustomObject(
            { group: GROUP, version: VERSION, plural: PLURAL, namespace: ns, resourceVersion },
            abortableRequest(signal),
          )
        : custom.listClusterCustomObject(
            { group: GROUP, version: VERSION, plural: PLURAL, resourceVersion },
            abortableRequest(signal),
          )) as never,
    {
      name: "poolpolicies",
      resyncMs,
      onAdd: (p) => {
        watchSecrets(p);
        withPeers(p);
      },
      onUpdate: (before, p) => {
        watchSecrets(p);
        // Our own status writes come back as updates: they change nothing a reconcile reads.
        if (!changesWhatReconcileReads(before, p)) return;
        if (changesWhatPeersRead(before, p)) withPeers(p, before);
        else enqueue(objectKey(p));
      },
      onDelete: (p) => {
        secrets.ensure(objectKey(p), []);
        withPeers(p);
      },
      onResync: (p) => enqueue(objectKey(p)),
      logger: log,
    },
  );
  return informer;
}

async function main(): Promise<void> {
  const config = loadConfig();
  const log = createLogger(config.LOG_LEVEL);
  const kc = loadDefaultKubeConfig();
  const operator = await runOperator(config, kc, log);
  log.info(
    { httpPort: operator.httpPort, namespace: config.WATCH_NAMESPACE || "(all)", leaderElection: config.LEADER_ELECT },
    "poolpolicy-operator started",
  );
  const shutdown = (signal: string) => {
    log.info({ signal }, "signal received");
    operator.stop().then(
      () => process.exit(0),
      (err: unknown) => {
        log.error({ err }, "shutdown failed");
        process.exit(1);
      },
    );
  };
  process.once("SIGTERM", () => shutdown("SIGTERM"));
  process.once("SIGINT", () => shutdown("SIGINT"));
}

if (import.meta.url === `file://${process.argv[1]}` || process.argv[1]?.endsWith("/main.ts")) {
  main().catch((err: unknown) => {
    console.error(`poolpolicy-operator failed to start: ${(err as Error).message}`);
    process.exit(1);
  });
}
