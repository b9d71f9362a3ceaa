/**
 * Kubernetes Events (events.k8s.io/v1) about the objects the operator acts on: what
 * `kubectl describe` and `kubectl events` show a user ("Restarted postgres-0 to apply
 * max_connections=400", "Terminated 3 idle-in-transaction sessions").
 *
 * Why it never throws: an event is a courtesy to the user. A reconcile that restarted a
 * database must not fail, and retry the restart, because the event about it could not be
 * written. Failures are logged as warnings and counted.
 *
 * Why series: a reconcile that keeps hitting the same wall (say "cannot apply: max_connections
 * is set on the command line") would write a new Event every retry. Like client-go's events
 * broadcaster, an identical event within a few minutes instead updates the first one's
 * `series` (count and lastObservedTime), so the user sees one line with a count.
 *
 * Why every Event's name sorts by its time: `kubectl describe` orders Events by their core/v1
 * `lastTimestamp` alone (kubectl's event.SortableEvents). An Event written through
 * events.k8s.io/v1 cannot carry one (the API refuses deprecatedLastTimestamp on create), so all
 * of ours tie at zero and describe keeps the order the API lists them in: by name. Named
 * `<object>.<time in hex>` as client-go names them, they list in the order they happened; an
 * Event that must exist once is found again by a label, not by a fixed name (a name such as
 * `governance.alter-…` sorted after every timestamped one, so describe showed it last).
 */
import {
  EventsV1Api,
  V1MicroTime,
  type EventsV1Event,
  type KubeConfig,
  type V1ObjectReference,
} from "@kubernetes/client-node";
import { createHash } from "node:crypto";
import { log as rootLog, type Logger } from "../log.js";
import { describeError, statusCodeOf } from "../kube/errors.js";
import { eventsRecorded } from "./metrics.js";
import { requestTimeout } from "./request-options.js";

export const reportingController = "pooling.dbops.io/poolpolicy-operator";

export interface EventSubject {
  apiVersion: string;
  kind: string;
  name: string;
  /** Absent for cluster-scoped objects; their events go to the "default" namespace. */
  namespace?: string;
  uid?: string;
}

export interface EventInput {
  regarding: EventSubject;
  /** Another object involved, e.g. the Deployment a PoolPolicy resized. */
  related?: EventSubject;
  type: "Normal" | "Warning";
  /** Why, in CamelCase: "MaxConnectionsRaised". */
  reason: string;
  /** What was done, in CamelCase: "Restart". */
  action: string;
  /** For humans; truncated to 1 KiB, the API's limit. */
  note?: string;
  /**
   * The Event's identity for actions that must have exactly one Event: recording it again (e.g.
   * by the next operator process after a crash) finds the one with this key and adds nothing.
   * Not the Event's metadata.name, which always sorts by time (see the top of this file).
   */
  name?: string;
}

export interface EventRecorderOptions {
  /** Who in the controller wrote it: the pod name. */
  reportingInstance: string;
  /** Identical events closer than this become one event with a series. Default 5 min; 0 disables. */
  seriesWindowMs?: number;
  requestTimeoutMs?: number;
  logger?: Logger;
}

/** An event we wrote, remembered so that a repeat updates it instead of adding one. */
interface WrittenEvent {
  namespace: string;
  name: string;
  count: number;
  firstWrittenAt: number;
}

/** When an Event was recorded: its name (which sorts by that time) and its eventTime. */
interface Stamp {
  name: string;
  time: V1MicroTime;
}

const maxNoteBytes = 1024;
const maxShortFieldLength = 128;
const maxRememberedEvents = 1000;

/** The label that finds the one Event of an action again: a hash of its key (label values are short). */
export const ONCE_LABEL = "pooling.dbops.io/event-key";

export class EventRecorder {
  private readonly events: EventsV1Api;
  private readonly reportingInstance: string;
  private readonly seriesWindowMs: number;
  private readonly requestTimeoutMs: number;
  private readonly log: Logger;
  private readonly written = new Map<string, WrittenEvent>();

  constructor(kubeConfig: KubeConfig, options: EventRecorderOptions) {
    this.events = kubeConfig.makeApiClient(EventsV1Api);
    this.reportingInstance = options.reportingInstance.slice(0, maxShortFieldLength);
    this.seriesWindowMs = options.seriesWindowMs ?? 5 * 60_000;
    this.requestTimeoutMs = options.requestTimeoutMs ?? 10_000;
    this.log = (options.logger ?? rootLog).child({ component: "events" });
  }

  /**
   * Writes the event, or adds one to the series of an identical recent one. Never throws.
   *
   * The Event's name and time are taken here, before any request: Events recorded one after
   * another and written in parallel (a pass's Events) keep the order they were recorded in,
   * whichever request lands first or has to look something up first.
   */
  async record(input: EventInput): Promise<void> {
    const at: Stamp = { name: eventName(input.regarding.name), time: new V1MicroTime() };
    try {
      if (input.name !== undefined) {
        await this.recordOnce(input, input.name, at);
        return;
      }
      const signature = signatureOf(input);
      const recent = this.recentIdentical(signature);
      if (recent && (await this.extendSeries(recent))) return;
      const written = await this.create(input, at);
      this.remember(signature, written);
      eventsRecorded.inc({ outcome: "created" });
    } catch (err) {
      eventsRecorded.inc({ outcome: "failed" });
      this.log.warn(
        { regarding: subjectKey(input.regarding), reason: input.reason, error: describeError(err) },
        "could not record event",
      );
    }
  }

  /** Writes the Event of an action unless one with this key exists: one Event, never a series. */
  private async recordOnce(input: EventInput, key: string, at: Stamp): Promise<void> {
    const namespace = input.regarding.namespace ?? "default";
    const label = onceLabelValue(key);
    const existing = await this.events.listNamespacedEvent(
      { namespace, labelSelector: `${ONCE_LABEL}=${label}`, limit: 1 },
      requestTimeout(this.requestTimeoutMs),
    );
    if (existing.items.length > 0) return;
    await this.create(input, at, { [ONCE_LABEL]: label });
    eventsRecorded.inc({ outcome: "created" });
  }

  private async create(input: EventInput, at: Stamp, labels?: Record<string, string>): Promise<WrittenEvent> {
    const namespace = input.regarding.namespace ?? "default";
    const body: EventsV1Event = {
      metadata: { name: at.name, namespace, labels },
      eventTime: at.time,
      reportingController,
      reportingInstance: this.reportingInstance,
      regarding: objectReference(input.regarding),
      related: input.related ? objectReference(input.related) : undefined,
      type: input.type,
      reason: input.reason.slice(0, maxShortFieldLength),
      action: input.action.slice(0, maxShortFieldLength),
      note: input.note === undefined ? undefined : truncateUtf8(input.note, maxNoteBytes),
    };
    const created = await this.events.createNamespacedEvent({ namespace, body }, requestTimeout(this.requestTimeoutMs));
    return { namespace, name: created.metadata?.name ?? body.metadata!.name!, count: 1, firstWrittenAt: Date.now() };
  }

  /**
   * Adds one occurrence to an event we wrote. False if that event is gone (events expire),
   * in which case the caller writes a new one.
   */
  private async extendSeries(event: WrittenEvent): Promise<boolean> {
    const count = event.count + 1;
    // A JSON patch "add" replaces /series if present and creates it otherwise.
    const patch = [{ op: "add", path: "/series", value: { count, lastObservedTime: new V1MicroTime() } }];
    try {
      await this.events.patchNamespacedEvent(
        { name: event.name, namespace: event.namespace, body: patch },
        requestTimeout(this.requestTimeoutMs),
      );
    } catch (err) {
      if (statusCodeOf(err) === 404) return false;
      throw err;
    }
    event.count = count;
    eventsRecorded.inc({ outcome: "series" });
    return true;
  }

  private recentIdentical(signature: string): WrittenEvent | undefined {
    const event = this.written.get(signature);
    if (!event) return undefined;
    if (Date.now() - event.firstWrittenAt < this.seriesWindowMs) return event;
    this.written.delete(signature);
    return undefined;
  }

  private remember(signature: string, event: WrittenEvent): void {
    if (this.seriesWindowMs <= 0) return;
    this.written.delete(signature);
    this.written.set(signature, event);
    // Maps iterate in insertion order: the first entry is the oldest.
    if (this.written.size > maxRememberedEvents) {
      const oldest = this.written.keys().next().value;
      if (oldest !== undefined) this.written.delete(oldest);
    }
  }
}

/** Two events are identical when everything but their time is. */
function signatureOf(input: EventInput): string {
  const { regarding, related } = input;
  return JSON.stringify([
    subjectKey(regarding),
    regarding.uid ?? "",
    related ? subjectKey(related) : "",
    input.type,
    input.reason,
    input.action,
    input.note ?? "",
  ]);
}

function subjectKey(subject: EventSubject): string {
  return `${subject.kind}/${subject.namespace ?? ""}/${subject.name}`;
}

function objectReference(subject: EventSubject): V1ObjectReference {
  return {
    apiVersion: subject.apiVersion,
    kind: subject.kind,
    name: subject.name,
    namespace: subject.namespace,
    uid: subject.uid,
  };
}

/**
 * client-go's naming: the object's name, a dot, the time in hex nanoseconds. The names of one
 * object's Events sort in the order they were written (the hex keeps 16 digits until the year
 * 2262), which is the order `kubectl describe` shows them in. Microseconds from the monotonic
 * clock, and random nanoseconds so that two Events of one microsecond still differ.
 */
export function eventName(objectName: string): string {
  const micros = BigInt(Math.floor((performance.timeOrigin + performance.now()) * 1000));
  const nanos = micros * 1000n + BigInt(Math.floor(Math.random() * 1000));
  return `${objectName.slice(0, 230)}.${nanos.toString(16)}`;
}

function onceLabelValue(key: string): string {
  return createHash("sha256").update(key).digest("hex").slice(0, 40);
}

/** Cuts `text` to at most `maxBytes` of UTF-8 without splitting a character. */
export function truncateUtf8(text: string, maxBytes: number): string {
  const bytes = Buffer.from(text, "utf8");
  if (bytes.length <= maxBytes) return text;
  let end = maxBytes;
  // 0b10xxxxxx is a continuation byte: step back to the start of the character it belongs to.
  while (end > 0 && (bytes[end]! & 0xc0) === 0x80) end -= 1;
  return bytes.subarray(0, end).toString("utf8");
}
