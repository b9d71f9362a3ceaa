import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { renderAlterMaxConnections } from "../../../src/postgres/settings.js";

describe("renderAlterMaxConnections", () => {
  it("renders any valid value as a plain number", () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 262143 }), (n) => {
        expect(renderAlterMaxConnections(n)).toBe(`ALTER SYSTEM SET max_connections = ${n}`);
      }),
    );
  });

  it("refuses anything else, so no text from a spec reaches the statement", () => {
    fc.assert(
      fc.property(
        fc.oneof(
          fc.integer({ max: 0 }),
          fc.integer({ min: 262144 }),
          fc.double({ noInteger: true }),
          fc.constant(Number.NaN),
        ),
        (n) => {
          expect(() => renderAlterMaxConnections(n)).toThrow(RangeError);
        },
      ),
    );
    expect(() => renderAlterMaxConnections("100;DROP TABLE x" as unknown as number)).toThrow(RangeError);
  });
});
