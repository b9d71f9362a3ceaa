/**
 * A preload for the operator process in benchmarks (NODE_OPTIONS="--import=<this file>"), so the
 * operator's own code stays untouched. Plain JavaScript on purpose: it is loaded before tsx.
 *
 * It observes, from inside the process:
 * - every HTTP request the operator sends to the API server (undici's diagnostics channel, the
 *   HTTP client of @kubernetes/client-node 2.x), counted by verb and resource;
 * - every reconcile: each Controller's reconcile function is wrapped (through
 *   Controller.prototype.processKey, once main.ts is running), to count reconciles and to catch
 *   two reconciles of one key in flight at the same time;
 * - memory after a full garbage collection (`gc` exposed through v8 flags);
 * - on demand, a CPU profile (inspector) or a heap snapshot;
 * - new connections to the API server (undici:client:connected).
 *
 * It answers on 127.0.0.1:$BENCH_PROBE_PORT: GET /probe, POST /reset, POST /gc,
 * POST /profile/start, POST /profile/stop?file=…, POST /heap-snapshot?file=….
 */
import dc from "node:diagnostics_channel";
import { readFileSync, writeFileSync } from "node:fs";
import { createServer } from "node:http";
import inspector from "node:inspector";
import v8 from "node:v8";
import vm from "node:vm";
import { isMainThread } from "node:worker_threads";

if (isMainThread && process.env.BENCH_PROBE_PORT) start(Number(process.env.BENCH_PROBE_PORT));

function start(port) {
  v8.setFlagsFromString("--expose-gc");
  const gc = vm.runInNewContext("gc");

  const state = fresh();
  let controllerWrapped = false;
  let wrapError;

  function fresh() {
    return {
      since: Date.now(),
      requests: {},
      writes: [],
      reconciles: 0,
      reconcilesByKey: {},
      overlaps: 0,
      maxConcurrentPerKey: 0,
      maxInFlight: 0,
      reconcileMs: [],
      connects: 0,
      responsesByStatus: {},
      /** The first requests after a reset, each with when it was sent and answered (ms since the reset). */
      timeline: [],
    };
  }
  const active = new Map();
  let inFlight = 0;

  const timed = new WeakMap();
  dc.subscribe("undici:request:headers", ({ request, response }) => {
    const entry = timed.get(request);
    if (entry) entry.answered = Date.now() - state.since;
    const code = String(response?.statusCode ?? "?");
    state.responsesByStatus[code] = (state.responsesByStatus[code] ?? 0) + 1;
  });
  dc.subscribe("undici:client:connected", () => {
    state.connects += 1;
  });
  dc.subscribe("undici:request:create", ({ request }) => {
    const verb = verbOf(request);
    const { resource, path } = resourceOf(request.path ?? "");
    const key = `${verb} ${resource}`;
    state.requests[key] = (state.requests[key] ?? 0) + 1;
    if (isWrite(verb) && state.writes.length < 500) state.writes.push({ at: Date.now(), verb, path });
    if (state.timeline.length < 40) {
      const entry = { sent: Date.now() - state.since, request: `${verb} ${path}` };
      state.timeline.push(entry);
      timed.set(request, entry);
    }
    if (!controllerWrapped) void wrapController();
  });

  async function wrapController() {
    if (controllerWrapped) return;
    controllerWrapped = true;
    try {
      const module = process.env.BENCH_CONTROLLER_MODULE
        ? new URL(`file://${process.env.BENCH_CONTROLLER_MODULE}`).href
        : new URL("../../src/runtime/controller.ts", import.meta.url).href;
      const { Controller } = await import(module);
      // The reconcile function each Controller holds is wrapped, once per controller, on its
      // first processKey: that is the exact span of one reconcile. (Wrapping processKey itself
      // would count a false overlap: its caller hands the key to the next worker in `done`,
      // before processKey's own promise settles.)
      const original = Controller.prototype.processKey;
      Controller.prototype.processKey = function probedProcessKey(key) {
        if (!this.__benchProbed) {
          this.__benchProbed = true;
          const inner = this.reconcile;
          this.reconcile = async (k) => {
            const concurrent = (active.get(k) ?? 0) + 1;
            active.set(k, concurrent);
            inFlight += 1;
            if (concurrent > 1) state.overlaps += 1;
            state.maxConcurrentPerKey = Math.max(state.maxConcurrentPerKey, concurrent);
            state.maxInFlight = Math.max(state.maxInFlight, inFlight);
            state.reconciles += 1;
            state.reconcilesByKey[k] = (state.reconcilesByKey[k] ?? 0) + 1;
            const started = performance.now();
            try {
              return await inner(k);
            } finally {
              if (state.reconcileMs.length < 100_000) state.reconcileMs.push(performance.now() - started);
              inFlight -= 1;
              const left = (active.get(k) ?? 1) - 1;
              if (left === 0) active.delete(k);
              else active.set(k, left);
            }
          };
        }
        return original.call(this, key);
      };
    } catch (err) {
      wrapError = String(err?.stack ?? err);
    }
  }

  let profiler;

  const server = createServer((req, res) => {
    const url = new URL(req.url ?? "/", "http://probe");
    const reply = (body, status = 200) => {
      res.writeHead(status, { "content-type": "application/json" });
      res.end(JSON.stringify(body));
    };
    try {
      if (url.pathname === "/probe") {
        return reply({
          ...state,
          controllerWrapped,
          wrapError,
          memory: process.memoryUsage(),
          peakRss: peakRss(),
          cpu: process.cpuUsage(),
        });
      }
      if (url.pathname === "/reset" && req.method === "POST") {
        Object.assign(state, fresh());
        return reply({ ok: true });
      }
      if (url.pathname === "/gc" && req.method === "POST") {
        gc();
        gc();
        return reply({ memory: process.memoryUsage(), heap: v8.getHeapStatistics(), smaps: smapsRollup() });
      }
      if (url.pathname === "/profile/start" && req.method === "POST") {
        profiler = new inspector.Session();
        profiler.connect();
        profiler.post("Profiler.enable", () =>
          profiler.post("Profiler.setSamplingInterval", { interval: 500 }, () =>
            profiler.post("Profiler.start", () => reply({ ok: true })),
          ),
        );
        return;
      }
      if (url.pathname === "/profile/stop" && req.method === "POST") {
        const file = url.searchParams.get("file");
        if (!profiler || !file) return reply({ error: "no profile running or no file" }, 400);
        profiler.post("Profiler.stop", (err, result) => {
          if (err) return reply({ error: String(err) }, 500);
          writeFileSync(file, JSON.stringify(result.profile));
          profiler.disconnect();
          profiler = undefined;
          reply({ ok: true, file });
        });
        return;
      }
      if (url.pathname === "/heap-snapshot" && req.method === "POST") {
        const file = url.searchParams.get("file");
        gc();
        return reply({ file: v8.writeHeapSnapshot(file ?? undefined) });
      }
      reply({ error: "not found" }, 404);
    } catch (err) {
      reply({ error: String(err) }, 500);
    }
  });
  server.listen(port, "127.0.0.1");
  server.unref();
}

/** The process's peak resident memory (VmHWM), what a Pod's memory limit meets first. */
function peakRss() {
  const line = readFileSync("/proc/self/status", "utf8").match(/^VmHWM:\s+(\d+) kB/m);
  return line ? Number(line[1]) * 1024 : undefined;
}

/** Resident memory by kind of mapping (Linux): the C heap (brk), anonymous maps (V8 pages, malloc arenas, thread stacks), files. */
function smapsRollup() {
  let text;
  try {
    text = readFileSync("/proc/self/smaps", "utf8");
  } catch {
    return undefined;
  }
  const out = { brkHeap: 0, anonymous: 0, files: 0, other: 0, anonymousBySize: {} };
  let kind = "other";
  let size = 0;
  for (const line of text.split("\n")) {
    const header = /^([0-9a-f]+)-([0-9a-f]+) \S+ \S+ \S+ \d+\s*(.*)$/.exec(line);
    if (header) {
      const name = header[3];
      size = (parseInt(header[2], 16) - parseInt(header[1], 16)) / 1024;
      kind = name === "[heap]" ? "brkHeap" : name === "" ? "anonymous" : name.startsWith("/") ? "files" : "other";
      continue;
    }
    const rss = /^Rss:\s+(\d+) kB/.exec(line);
    if (rss) {
      out[kind] += Number(rss[1]) * 1024;
      if (kind === "anonymous" && Number(rss[1]) > 0) {
        // Mappings grouped by size class: 64 MiB-aligned C-library arenas, V8's 256 KiB pages, big buffers…
        const cls = size >= 65536 ? "≥64MiB" : size >= 1024 ? "1-64MiB" : size >= 256 ? "256KiB-1MiB" : "<256KiB";
        out.anonymousBySize[cls] = (out.anonymousBySize[cls] ?? 0) + Number(rss[1]) * 1024;
      }
    }
  }
  return out;
}

function headerValue(headers, name) {
  if (!headers) return undefined;
  if (Array.isArray(headers)) {
    for (let i = 0; i + 1 < headers.length; i += 2) {
      if (String(headers[i]).toLowerCase() === name) return String(headers[i + 1]);
    }
    return undefined;
  }
  if (typeof headers === "string") {
    const line = headers.split("\r\n").find((l) => l.toLowerCase().startsWith(`${name}:`));
    return line?.slice(name.length + 1).trim();
  }
  return headers[name];
}

function verbOf(request) {
  const [path, query = ""] = (request.path ?? "").split("?");
  const params = new URLSearchParams(query);
  switch (request.method) {
    case "GET": {
      if (params.get("watch") === "true" || params.get("watch") === "1") return "WATCH";
      return namedObject(path) ? "GET" : "LIST";
    }
    case "POST":
      return "CREATE";
    case "PUT":
      return "UPDATE";
    case "PATCH":
      return (headerValue(request.headers, "content-type") ?? "").includes("apply-patch") ? "APPLY" : "PATCH";
    case "DELETE":
      return "DELETE";
    default:
      return request.method;
  }
}

export function isWrite(verb) {
  return verb === "CREATE" || verb === "UPDATE" || verb === "PATCH" || verb === "APPLY" || verb === "DELETE";
}

/** /api/v1/namespaces/ns/pods/name/status → pods/status; names and namespaces dropped. */
function resourceOf(fullPath) {
  const path = fullPath.split("?")[0];
  const parts = path.split("/").filter(Boolean);
  let rest;
  if (parts[0] === "api") rest = parts.slice(2);
  else if (parts[0] === "apis") rest = parts.slice(3);
  else return { resource: path, path };
  if (rest[0] === "namespaces" && rest.length >= 3) rest = rest.slice(2);
  const resource = rest[0] ?? "namespaces";
  const sub = rest[2];
  return { resource: sub ? `${resource}/${sub}` : resource, path };
}

function namedObject(path) {
  const parts = path.split("/").filter(Boolean);
  let rest = parts[0] === "api" ? parts.slice(2) : parts.slice(3);
  if (rest[0] === "namespaces" && rest.length >= 3) rest = rest.slice(2);
  else if (rest[0] === "namespaces") return rest.length === 2;
  return rest.length >= 2;
}
