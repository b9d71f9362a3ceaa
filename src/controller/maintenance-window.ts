/**
 * Maintenance windows: "restart only on Sat and Sun from 02:00 for 2h, Europe/Berlin".
 *
 * A window belongs to the day it starts on, so 23:00 + 2h on Sat runs into Sunday 01:00.
 * Wall-clock times are converted with the platform's time-zone database (Intl). In the hour a
 * DST change skips, a start time that does not exist is taken one hour later; in the hour that
 * repeats, the first occurrence counts.
 */
import { validDuration } from "../api/spec-durations.js";

export interface MaintenanceWindow {
  days: readonly string[];
  start: string;
  duration: string;
  timeZone: string;
}

export interface WindowState {
  open: boolean;
  /** When open: when this window closes. */
  closesAt?: Date;
  /** When closed: when the next window opens. */
  nextStart?: Date;
}

const WEEKDAYS = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
const DAY_MS = 86_400_000;

/**
 * One formatter per time zone: building an Intl.DateTimeFormat loads ICU's zone data and costs
 * far more than formatting (a window's state takes a few dozen conversions; the unit suite's
 * property test ran 20–30 s under load with a new formatter per conversion).
 */
const formatters = new Map<string, Intl.DateTimeFormat>();

function formatter(timeZone: string): Intl.DateTimeFormat {
  let f = formatters.get(timeZone);
  if (!f) {
    f = new Intl.DateTimeFormat("en-US", {
      timeZone,
      hourCycle: "h23",
      year: "numeric",
      month: "numeric",
      day: "numeric",
      hour: "numeric",
      minute: "numeric",
      second: "numeric",
    });
    formatters.set(timeZone, f);
  }
  return f;
}

/** The offset of `timeZone` from UTC at `instant`, in ms (positive east of Greenwich). */
function offsetMs(instant: number, timeZone: string): number {
  const parts = formatter(timeZone).formatToParts(new Date(instant));
  const get = (type: string) => Number(parts.find((p) => p.type === type)!.value);
  const asUtc = Date.UTC(get("year"), get("month") - 1, get("day"), get("hour"), get("minute"), get("second"));
  return asUtc - Math.floor(instant / 1000) * 1000;
}

/** The instant at which the wall clock of `timeZone` shows the given local date and time. */
export function zonedTime(
  year: number,
  month: number,
  day: number,
  hour: number,
  minute: number,
  timeZone: string,
): Date {
  const wall = Date.UTC(year, month, day, hour, minute);
  let instant = wall - offsetMs(wall, timeZone);
  instant = wall - offsetMs(instant, timeZone); // second pass settles DST transitions
  return new Date(instant);
}

/** Window starts around `now`, oldest first: every allowed day from a week back to two weeks ahead. */
function candidateStarts(now: Date, w: MaintenanceWindow): Date[] {
  const [hour, minute] = w.start.split(":").map(Number) as [number, number];
  const starts: Date[] = [];
  for (let offsetDays = -8; offsetDays <= 15; offsetDays++) {
    const probe = new Date(now.getTime() + offsetDays * DAY_MS + offsetMs(now.getTime(), w.timeZone));
    const y = probe.getUTCFullYear(),
      m = probe.getUTCMonth(),
      d = probe.getUTCDate();
    const weekday = WEEKDAYS[new Date(Date.UTC(y, m, d)).getUTCDay()]!;
    if (w.days.includes(weekday)) starts.push(zonedTime(y, m, d, hour, minute, w.timeZone));
  }
  return starts.sort((a, b) => a.getTime() - b.getTime());
}

/**
 * Whether the window is open at `now`. `length` is w.duration in ms: the reconciler passes the
 * pass's parsed value (Pass.durations.maintenanceWindowMs); without it, w.duration is parsed here.
 */
export function windowState(
  now: Date,
  w: MaintenanceWindow,
  length = validDuration(w.duration, "postgres.restart.maintenanceWindow.duration"),
): WindowState {
  const starts = candidateStarts(now, w);
  const current = starts.find((s) => s.getTime() <= now.getTime() && now.getTime() < s.getTime() + length);
  if (current) return { open: true, closesAt: new Date(current.getTime() + length) };
  return { open: false, nextStart: starts.find((s) => s.getTime() > now.getTime()) };
}
