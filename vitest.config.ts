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
          // PostgreSQL 13 to 18, no control plane: test/matrix/postgres-matrix.test.ts.
          name: "matrix",
          include: ["test/matrix/**/*.test.ts"],
          testTimeout: 120_000,
          hookTimeout: 180_000,
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
          // One file at a time: every file runs its own operator process, and an operator acts
          // on the PoolPolicies of every namespace, so two files at once would have two operators
          // fighting over each other's policies.
          fileParallelism: false,
        },
      },
      {
        test: {
          // The user's story on a real node (make e2e): kubelet, containerd and real pods.
          // Run alone: its control plane listens on the node's link, not the shared one.
          name: "e2e",
          include: ["test/e2e/**/*.test.ts"],
          // A cold run builds the node's binaries and the images in beforeAll.
          hookTimeout: 3_600_000,
          testTimeout: 600_000,
          fileParallelism: false,
        },
      },
    ],
  },
});
