import { expect, it } from "vitest";
import { captureIo } from "../../../src/cli/io.js";

it("scrubs every registered secret, also percent-encoded, from stdout and stderr", () => {
  const io = captureIo(true);
  io.secret("p@ss word");
  io.secret("abc"); // too short to scrub safely: "abc" may be an ordinary word
  io.out("dsn postgres://u:p%40ss%20word@h/db and p@ss word, abc\n");
  io.err("error: p@ss word\n");
  io.progress("connecting with p@ss word");
  expect(io.stdout()).toBe("dsn postgres://u:***@h/db and ***, abc\n");
  expect(io.stderr()).toBe("error: ***\n… connecting with ***\n");
});

it("shows progress only when asked", () => {
  const io = captureIo(false);
  io.progress("waiting");
  expect(io.stderr()).toBe("");
});
