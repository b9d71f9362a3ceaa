/**
 * The PoolPolicy CustomResourceDefinition, generated from the zod schemas in ./schema.ts.
 *
 * zod emits JSON Schema; a CRD needs a *structural* OpenAPI v3 schema, so the conversion below
 * drops what the apiserver refuses (additionalProperties:false, propertyNames, $schema) and
 * turns int-or-string unions into x-kubernetes-int-or-string. tools/generate-crd.ts writes the
 * result to crds/ and to the chart; a unit test fails when the committed files drift from it.
 */
import { z } from "zod";
import { API_VERSION, GROUP, KIND, PLURAL, VERSION, poolPolicySpecSchema, poolPolicyStatusSchema } from "./schema.js";

type JsonSchema = { [key: string]: unknown };

const UNSUPPORTED_KEYS = new Set(["$schema", "propertyNames", "id", "$id"]);

/** Converts one zod-emitted JSON Schema node (recursively) into a structural CRD schema node. */
export function toStructural(node: JsonSchema): JsonSchema {
  if (node["x-kubernetes-int-or-string"] === true) {
    // Structural schemas allow exactly this anyOf for int-or-string; the value constraints of
    // the union's branches move into the CEL rule next to it.
    const { description, "x-kubernetes-validations": rules } = node;
    return {
      ...(description ? { description } : {}),
      anyOf: [{ type: "integer" }, { type: "string" }],
      "x-kubernetes-int-or-string": true,
      ...(rules ? { "x-kubernetes-validations": rules } : {}),
    };
  }
  const out: JsonSchema = {};
  if (isEmptyObject(node.default) && node.properties) {
    // The apiserver checks a default against the CEL rules as written, without applying the
    // nested defaults first: spell `{}` out as the object it stands for.
    node = { ...node, default: nestedDefaults(node) };
  }
  for (const [key, value] of Object.entries(node)) {
    if (UNSUPPORTED_KEYS.has(key)) continue;
    if (key === "additionalProperties" && value === false) continue;
    if (key === "const") {
      out.enum = [value];
      continue;
    }
    if ((key === "minimum" || key === "maximum") && Math.abs(value as number) === Number.MAX_SAFE_INTEGER) continue;
    if (key === "properties") {
      out.properties = Object.fromEntries(
        Object.entries(value as Record<string, JsonSchema>).map(([k, v]) => [k, toStructural(v)]),
      );
      continue;
    }
    if ((key === "items" || key === "additionalProperties") && typeof value === "object" && value !== null) {
      out[key] = toStructural(value as JsonSchema);
      continue;
    }
    out[key] = value;
  }
  return out;
}

function isEmptyObject(value: unknown): boolean {
  return typeof value === "object" && value !== null && !Array.isArray(value) && Object.keys(value).length === 0;
}

/** The object that defaulting `{}` produces: every property's default, recursively. */
function nestedDefaults(node: JsonSchema): Record<string, unknown> {
  const result: Record<string, unknown> = {};
  for (const [name, child] of Object.entries((node.properties ?? {}) as Record<string, JsonSchema>)) {
    if (isEmptyObject(child.default) && child.properties) result[name] = nestedDefaults(child);
    else if (child.default !== undefined) result[name] = child.default;
  }
  return result;
}

export function specOpenApiSchema(): JsonSchema {
  return toStructural(z.toJSONSchema(poolPolicySpecSchema, { io: "input", target: "openapi-3.0" }) as JsonSchema);
}

export function statusOpenApiSchema(): JsonSchema {
  return toStructural(z.toJSONSchema(poolPolicyStatusSchema, { io: "input", target: "openapi-3.0" }) as JsonSchema);
}

const readyCondition = '.status.conditions[?(@.type=="Ready")]';

export function poolPolicyCrd(): JsonSchema {
  return {
    apiVersion: "apiextensions.k8s.io/v1",
    kind: "CustomResourceDefinition",
    metadata: { name: `${PLURAL}.${GROUP}` },
    spec: {
      group: GROUP,
      names: {
        kind: KIND,
        listKind: `${KIND}List`,
        plural: PLURAL,
        singular: "poolpolicy",
        shortNames: ["pp"],
        categories: ["dbops"],
      },
      scope: "Namespaced",
      versions: [
        {
          name: VERSION,
          served: true,
          storage: true,
          subresources: { status: {} },
          additionalPrinterColumns: [
            { name: "Ready", type: "string", jsonPath: `${readyCondition}.status` },
            { name: "Reason", type: "string", jsonPath: `${readyCondition}.reason` },
            {
              name: "MaxConn",
              type: "integer",
              jsonPath: ".status.postgres.maxConnections",
              description: "max_connections in effect on the server",
            },
            {
              name: "Usage",
              type: "string",
              jsonPath: ".status.postgres.usage",
              description: "connections in use / max_connections",
            },
            {
              name: "Targets",
              type: "string",
              jsonPath: ".status.targetsSummary",
              description: "Deployments injected and rolled out / selected",
            },
            { name: "Age", type: "date", jsonPath: ".metadata.creationTimestamp" },
            // Priority 1: shown by `kubectl get -o wide` only. A printer column takes one JSONPath
            // and cannot join two fields, so host and port (and demand and capacity) are a column each.
            {
              name: "Host",
              type: "string",
              jsonPath: ".spec.postgres.host",
              priority: 1,
              description: "the PostgreSQL server the policy points at",
            },
            { name: "Port", type: "integer", jsonPath: ".spec.postgres.port", priority: 1 },
            {
              name: "Demand",
              type: "integer",
              jsonPath: ".status.budget.demand",
              priority: 1,
              description: "worst-case connections of every policy on the server, plus the reserves",
            },
            {
              name: "Capacity",
              type: "integer",
              jsonPath: ".status.budget.capacity",
              priority: 1,
              description: "max_connections of the server, which the demand must fit",
            },
            {
              name: "MemCeiling",
              type: "integer",
              jsonPath: ".status.budget.memoryCeiling",
              priority: 1,
              description: "the largest max_connections the PostgreSQL container's memory carries",
            },
            {
              name: "Role",
              type: "string",
              jsonPath: ".status.connectionLimit.role",
              priority: 1,
              description: "the app role held to its share (spec.enforcement.connectionLimit)",
            },
            {
              name: "RoleLimit",
              type: "integer",
              jsonPath: ".status.connectionLimit.current",
              priority: 1,
              description: "the role's CONNECTION LIMIT as last read (-1: none)",
            },
          ],
          schema: {
            openAPIV3Schema: {
              type: "object",
              description: `${KIND} (${API_VERSION}) declares how an application's PostgreSQL connections are governed.`,
              required: ["spec"],
              properties: {
                apiVersion: { type: "string" },
                kind: { type: "string" },
                metadata: { type: "object" },
                spec: specOpenApiSchema(),
                status: statusOpenApiSchema(),
              },
            },
          },
        },
      ],
    },
  };
}
