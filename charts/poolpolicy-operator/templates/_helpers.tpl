{{/*
Names and labels shared by every template, plus the operator's RBAC rules (used by the
ClusterRole, or by a Role when watchNamespace is set, so both always grant the same thing).
*/}}

{{/* The chart name, e.g. "poolpolicy-operator". */}}
{{- define "poolpolicy-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The prefix of every resource name: "<release>-<chart>", or just "<release>" when the release
name already contains the chart name (helm install poolpolicy-operator … → "poolpolicy-operator").
Truncated to 63 characters because some names (labels, Service) are DNS labels.
*/}}
{{- define "poolpolicy-operator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* "poolpolicy-operator-0.1.0", for the helm.sh/chart label. */}}
{{- define "poolpolicy-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object. */}}
{{- define "poolpolicy-operator.labels" -}}
helm.sh/chart: {{ include "poolpolicy-operator.chart" . }}
{{ include "poolpolicy-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: poolpolicy-operator
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* The labels that select the operator's pods. Immutable in a Deployment: never add to them. */}}
{{- define "poolpolicy-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "poolpolicy-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The ServiceAccount the operator runs as (and the RBAC bindings' subject). */}}
{{- define "poolpolicy-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "poolpolicy-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* repository:tag, the tag defaulting to the chart's appVersion. */}}
{{- define "poolpolicy-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
What the operator does against the API, and nothing more. No wildcards: every group, resource
and verb is named, so that `kubectl describe clusterrole` is the full list of its powers.
Every resource here is namespaced, which is what lets watchNamespace swap the ClusterRole for a
Role. Leases are not here: they get a Role of their own in the release namespace (role.yaml).
*/}}
{{- define "poolpolicy-operator.rules" -}}
# The PoolPolicies themselves: informer (list/watch), finalizer add/remove (patch).
- apiGroups: ["pooling.dbops.io"]
  resources: ["poolpolicies"]
  verbs: ["get", "list", "watch", "patch"]
# Conditions, counts and budget are written through the status subresource (a JSON patch).
- apiGroups: ["pooling.dbops.io"]
  resources: ["poolpolicies/status"]
  verbs: ["get", "patch"]
# Needed to set an ownerReference with blockOwnerDeletion to a PoolPolicy where the
# OwnerReferencesPermissionEnforcement admission plugin is on (e.g. OpenShift).
- apiGroups: ["pooling.dbops.io"]
  resources: ["poolpolicies/finalizers"]
  verbs: ["update"]
# Target Deployments: watched by label selector; the pool env entries are added with
# server-side apply (a PATCH), never with update, and never deleted.
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "patch"]
# The PostgreSQL StatefulSet: a pod-template annotation patch triggers its rolling restart
# after max_connections changed.
- apiGroups: ["apps"]
  resources: ["statefulsets"]
  verbs: ["get", "list", "watch", "patch"]
# The credentials Secret a policy names, watched one by one: the operator lists and watches
# Secrets only with a metadata.name field selector (controller/secret-watches.ts) and caches
# nothing else, so a rotated password is picked up within seconds. RBAC cannot require that
# selector for names unknown in advance; rbac.secretNames pins the names where they are known
# (the API server authorizes a name-selected list/watch against resourceNames).
- apiGroups: [""]
  resources: ["secrets"]
  {{- with .Values.rbac.secretNames }}
  resourceNames: {{ toJson . }}
  {{- end }}
  verbs: ["get", "list", "watch"]
# Topology-aware restarts: with a primary and replicas in one StatefulSet, the operator reads
# each pod's address, asks it for its role, and restarts the pods one at a time in the order
# the hot-standby rule requires by deleting them (the StatefulSet recreates each). It deletes
# only pods of the StatefulSet a PoolPolicy names in spec.postgres.restart.workload.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch", "delete"]
# Discovery: the Service a policy's host names is read (one GET, only when max_connections cannot
# be applied as asked) for the labels and owner reference a Postgres operator puts on it, so that
# the condition can name the resource that owns the server (docs/postgres-operators.md).
- apiGroups: [""]
  resources: ["services"]
  verbs: ["get"]
# Read-only: HPA maxReplicas enters the connection budget.
- apiGroups: ["autoscaling"]
  resources: ["horizontalpodautoscalers"]
  verbs: ["get", "list", "watch"]
# Events on the PoolPolicy (kubectl describe pp): created, then patched when they repeat;
# listed by label to find the one Event of an action (ALTER SYSTEM, restart) after a crash.
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch", "list"]
{{- if .Values.postgresOperators.cloudnativePG.enabled }}
# CloudNativePG Clusters named in spec.postgres.restart.workload (docs/postgres-operators.md): read
# (parameter, phase, restart record), annotated (restart record and history, a merge patch) and
# given spec.postgresql.parameters.max_connections (server-side apply, the operator's own field manager).
- apiGroups: ["postgresql.cnpg.io"]
  resources: ["clusters"]
  verbs: ["get", "patch"]
{{- end }}
{{- if .Values.postgresOperators.zalando.enabled }}
# Zalando postgresqls named in spec.postgres.restart.workload (docs/postgres-operators.md): the same
# three uses as a CloudNativePG Cluster (read; annotate; apply spec.postgresql.parameters.max_connections).
- apiGroups: ["acid.zalan.do"]
  resources: ["postgresqls"]
  verbs: ["get", "patch"]
{{- end }}
{{- if .Values.pooler.enabled }}
# The PgBouncer a policy declares in spec.pooler (docs/pooler.md): its ConfigMap, Secret (the
# auth_file), Deployment and Service, by server-side apply (a PATCH; "create" too, because an
# apply that creates the object is authorized as a create). Never listed. Deleted one by one
# (delete) when the declaring policy no longer declares that pooler, after a GET of each for its
# ownerReference: only those the policy owns are deleted. Deployments, Secrets and Services are
# read under the get granted above (with rbac.secretNames, the pooler's <name>-auth must be in
# it); ConfigMaps need their own get here. Deleting the policy deletes them by the garbage collector.
# A ClusterRole cannot name the policy's namespace; with watchNamespace set it is that one.
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["create", "delete", "get", "patch"]
- apiGroups: [""]
  resources: ["secrets", "services"]
  verbs: ["create", "delete", "patch"]
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["create", "delete"]
{{- end }}
{{- end }}
