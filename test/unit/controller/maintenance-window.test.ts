import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { windowState, zonedTime } from "../../../src/controller/maintenance-window.js";

const weekend = { days: ["Sat", "Sun"], start: "02:00", duration: "2h", timeZone: "UTC" };

describe("maintenance windows", () => {
  it("is open inside the window and says when it closes", () => {
    const state = windowState(new Date("2026-11-28T03:30:00Z"), weekend); // a Saturday
    expect(state).toEqual({ open: true, closesAt: new Date("2026-11-28T04:00:00Z") });
  });

  it("is closed outside and names the next start", () => {
    expect(windowState(new Date("2026-11-26T12:00:00Z"), weekend)).toEqual({
      open: false,
      nextStart: new Date("2026-11-28T02:00:00Z"),
    });
    expect(windowState(new Date("2026-11-28T04:00:00Z"), weekend).nextStart).toEqual(new Date("2026-11-29T02:00:00Z"));
  });

  it("takes the length already parsed when it is given (the pass's durations), w.duration otherwise", () => {
    const saturday0330 = new Date("2026-11-28T03:30:00Z");
    expect(windowState(saturday0330, weekend, 7_200_000)).toEqual(windowState(saturday0330, weekend));
    expect(windowState(saturday0330, weekend, 3_600_000)).toEqual({
      open: false,
      nextStart: new Date("2026-11-29T02:00:00Z"),
    });
    expect(() => windowState(saturday0330, { ...weekend, duration: "2 hours" })).toThrow(
      /maintenanceWindow.duration "2 hours" is not a duration/,
    );
  });

  it("runs past midnight into the next day", () => {
    const late = { days: ["Fri"], start: "23:00", duration: "2h", timeZone: "UTC" };
    expect(windowState(new Date("2026-11-28T00:30:00Z"), late).open).toBe(true); // Saturday 00:30
  });

  it("follows the time zone, DST included", () => {
    const berlin = { days: ["Sun"], start: "02:30", duration: "1h", timeZone: "Europe/Berlin" };
    // Summer (UTC+2) and winter (UTC+1).
    expect(windowState(new Date("2026-07-05T00:45:00Z"), berlin).open).toBe(true);
    expect(windowState(new Date("2026-11-29T01:45:00Z"), berlin).open).toBe(true);
    expect(zonedTime(2026, 10, 29, 2, 30, "Europe/Berlin")).toEqual(new Date("2026-11-29T01:30:00Z"));
  });

  it("property: whenever closed, the next start is in the future and within 8 days, and the window is open right then", () => {
    const days = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    fc.assert(
      fc.property(
        fc.date({ min: new Date("2020-01-01T00:00:00Z"), max: new Date("2035-01-01T00:00:00Z"), noInvalidDate: true }),
        fc.subarray(days, { minLength: 1 }),
        fc.integer({ min: 0, max: 23 }),
        fc.integer({ min: 0, max: 59 }),
        fc.integer({ min: 1, max: 300 }),
        fc.constantFrom("UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata", "Australia/Sydney"),
        (now, d, h, m, minutes, timeZone) => {
          const w = {
            days: d,
            start: `${String(h).padStart(2, "0")}:${String(m).padStart(2, "0")}`,
            duration: `${minutes}m`,
            timeZone,
          };
          const state = windowState(now, w);
          if (state.open) return state.closesAt!.getTime() > now.getTime();
          const next = state.nextStart!;
          return (
            next.getTime() > now.getTime() &&
            next.getTime() - now.getTime() <= 8 * 86_400_000 &&
            windowState(next, w).open
          );
        },
      ),
      { numRuns: 500 },
    );
  });
});
