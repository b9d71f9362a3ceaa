/**
 * Objects the tests and the demo create in the control plane: the Postgres StatefulSet that the
 * pod bridge binds to local servers, and app Deployments that carry connection pools.
 */
import type { V1Deployment, V1Service, V1StatefulSet } from "@kubernetes/client-node";
import { BRIDGED_POD_LABEL } from "./kwok-stages.js";

export function postgresService(namespace: string, name = "postgres"): V1Service {
  return {
    apiVersion: "v1",
    kind: "Service",
    metadata: { name, namespace },
    spec: { clusterIP: "None", selector: { app: name }, ports: [{ name: "postgres", port: 5432 }] },
  };
}

/**
 * `memoryLimit` sets resources.limits.memory of the postgres container: the operator reads it for
 * the memory ceiling (kwok's pods do not enforce it; the PostgreSQL behind the bridge runs as is).
 */
export function postgresStatefulSet(
  namespace: string,
  name = "postgres",
  replicas = 1,
  { memoryLimit }: { memoryLimit?: string } = {},
): V1StatefulSet {
  const labels = { app: name, [BRIDGED_POD_LABEL]: name };
  return {
    apiVersion: "apps/v1",
    kind: "StatefulSet",
    metadata: { name, namespace, labels: { app: name } },
    spec: {
      serviceName: name,
      replicas,
      selector: { matchLabels: { app: name } },
      updateStrategy: { type: "RollingUpdate" },
      template: {
        metadata: { labels },
        spec: {
          terminationGracePeriodSeconds: 30,
          containers: [
            {
              name: "postgres",
              image: "postgres:15",
              ports: [{ containerPort: 5432 }],
              ...(memoryLimit ? { resources: { limits: { memory: memoryLimit } } } : {}),
            },
          ],
        },
      },
    },
  };
}

export function appDeployment(
  namespace: string,
  name: string,
  {
    labels = {},
    replicas = 2,
    containers = ["app"],
  }: { labels?: Record<string, string>; replicas?: number; containers?: string[] } = {},
): V1Deployment {
  const podLabels = { app: name };
  return {
    apiVersion: "apps/v1",
    kind: "Deployment",
    metadata: { name, namespace, labels: { app: name, ...labels } },
    spec: {
      replicas,
      selector: { matchLabels: podLabels },
      strategy: { type: "RollingUpdate", rollingUpdate: { maxSurge: 1, maxUnavailable: 0 } },
      template: {
        metadata: { labels: podLabels },
        spec: {
          containers: containers.map((c) => ({
            name: c,
            image: `example.com/${name}:1.0`,
            env: [{ name: "LOG_LEVEL", value: "info" }],
          })),
        },
      },
    },
  };
}
