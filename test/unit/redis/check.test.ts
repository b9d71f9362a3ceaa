import { expect, it } from "vitest";
import { parseInfo } from "../../../src/redis/check.js";

it("parses INFO sections", () => {
  const info = parseInfo(
    "# Clients\r\nconnected_clients:12\r\nmaxclients:10000\r\n\r\n# Stats\r\nrejected_connections:3\r\n",
  );
  expect(info).toMatchObject({ connected_clients: "12", maxclients: "10000", rejected_connections: "3" });
});
