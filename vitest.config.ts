import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    projects: [
      {
        test: {
          name: "unit",
          include: ["test/unit/**/*.test.ts"],
        },
      },
      {
        test: {
          name: "integration",
          include: ["test/integration/**/*.test.ts"],
          globalSetup: ["test/harness/global-setup.ts"],
          // Rollouts, Postgres restarts and kube-apiserver restarts take seconds, not milliseconds.
          testTimeout: 240_000,
          hookTimeout: 180_000,
          // Two cores: the control plane needs one of them.
          maxWorkers: 2,
        },
      },
    ],
  },
});
