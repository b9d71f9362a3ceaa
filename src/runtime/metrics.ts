/**
 * The operator's Prometheus registry and the runtime's own metrics.
 *
 * One registry for the whole process, exported so that the domain code registers its metrics
 * next to these and `/metrics` serves them all. The names follow client-go's workqueue and
 * controller-runtime's, so that existing dashboards and alerts work unchanged.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics, exponentialBuckets } from "prom-client";
import type { QueueMetrics } from "./queue.js";

export const registry = new Registry();
collectDefaultMetrics({ register: registry });

const queueBuckets = exponentialBuckets(0.001, 2, 18); // 1 ms … ~2 min
const reconcileBuckets = [
  0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 4, 5, 7.5, 10, 15, 20, 30, 45, 60,
];

const workqueueDepth = new Gauge({
  name: "workqueue_depth",
  help: "Keys waiting in the work queue.",
  labelNames: ["name"],
  registers: [registry],
});
const workqueueAdds = new Counter({
  name: "workqueue_adds_total",
  help: "Keys added to the work queue (deduplicated adds are not counted).",
  labelNames: ["name"],
  registers: [registry],
});
const workqueueLatency = new Histogram({
  name: "workqueue_queue_duration_seconds",
  help: "Seconds a key waits in the work queue before a worker takes it.",
  labelNames: ["name"],
  buckets: queueBuckets,
  registers: [registry],
});
const workqueueWorkDuration = new Histogram({
  name: "workqueue_work_duration_seconds",
  help: "Seconds a worker holds a key.",
  labelNames: ["name"],
  buckets: queueBuckets,
  registers: [registry],
});
const workqueueRetries = new Counter({
  name: "workqueue_retries_total",
  help: "Rate-limited re-adds (retries after a failure).",
  labelNames: ["name"],
  registers: [registry],
});

export const reconcileTotal = new Counter({
  name: "controller_runtime_reconcile_total",
  help: "Reconciles by controller and result (success, error, requeue).",
  labelNames: ["controller", "result"],
  registers: [registry],
});
export const reconcileErrors = new Counter({
  name: "controller_runtime_reconcile_errors_total",
  help: "Reconciles that failed with an error.",
  labelNames: ["controller"],
  registers: [registry],
});
export const reconcileTime = new Histogram({
  name: "controller_runtime_reconcile_time_seconds",
  help: "Seconds per reconcile.",
  labelNames: ["controller"],
  buckets: reconcileBuckets,
  registers: [registry],
});
export const activeWorkers = new Gauge({
  name: "controller_runtime_active_workers",
  help: "Workers currently running a reconcile.",
  labelNames: ["controller"],
  registers: [registry],
});

export const informerRestarts = new Counter({
  name: "informer_watch_restarts_total",
  help: "Watches restarted after an error, a server-side close or a watchdog timeout.",
  labelNames: ["resource"],
  registers: [registry],
});
export const informerRelists = new Counter({
  name: "informer_relists_total",
  help: "Full lists after the initial one (410 Gone, watchdog timeout).",
  labelNames: ["resource"],
  registers: [registry],
});
export const informerSynced = new Gauge({
  name: "informer_synced",
  help: "1 once the informer's cache holds a complete list.",
  labelNames: ["resource"],
  registers: [registry],
});

export const leaderStatus = new Gauge({
  name: "leader_election_master_status",
  help: "1 while this process holds the leader Lease.",
  labelNames: ["name"],
  registers: [registry],
});

export const eventsRecorded = new Counter({
  name: "events_recorded_total",
  help: "Kubernetes Events written, by outcome (created, series, failed).",
  labelNames: ["outcome"],
  registers: [registry],
});

/**
 * Zero series for a controller's counters, so that a healthy operator exports `error 0` rather
 * than nothing: rate() of a series that does not exist is no data, not 0, and the chart's
 * dashboard and alerts would show "No data" where they should show a flat line at 0.
 */
export function initControllerMetrics(controller: string): void {
  for (const result of ["success", "error", "requeue"]) reconcileTotal.inc({ controller, result }, 0);
  reconcileErrors.inc({ controller }, 0);
}

/** The prom-client side of a work queue's metrics, labelled with the queue's name. */
export function queueMetricsFor(name: string): QueueMetrics {
  // An empty queue is a depth of 0, and no retry yet is 0 retries, not a missing series
  // (dashboards and alerts need the zero).
  workqueueDepth.set({ name }, 0);
  workqueueAdds.inc({ name }, 0);
  workqueueRetries.inc({ name }, 0);
  return {
    added: () => workqueueAdds.inc({ name }),
    depth: (waitingKeys) => workqueueDepth.set({ name }, waitingKeys),
    queueLatency: (seconds) => workqueueLatency.observe({ name }, seconds),
    workDuration: (seconds) => workqueueWorkDuration.observe({ name }, seconds),
    retried: () => workqueueRetries.inc({ name }),
  };
}
