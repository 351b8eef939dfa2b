{{/*
Names, labels and shared fragments of the rft-operator chart.
*/}}

{{/* The chart name, or nameOverride. */}}
{{- define "rft-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The full name of the release's resources: fullnameOverride, else the release name when it
already contains the chart name, else "<release>-<chart>". Truncated to 63 characters (DNS label).
*/}}
{{- define "rft-operator.fullname" -}}
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

{{/* "<chart>-<version>" for the helm.sh/chart label. */}}
{{- define "rft-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The labels that select the operator's pods; never change them (Deployment selectors are immutable). */}}
{{- define "rft-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "rft-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{/* The standard labels of every resource of the chart, without a component. */}}
{{- define "rft-operator.commonLabels" -}}
helm.sh/chart: {{ include "rft-operator.chart" . }}
app.kubernetes.io/name: {{ include "rft-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: rft-operator
{{- end }}

{{/* The labels of the operator's own resources. */}}
{{- define "rft-operator.labels" -}}
{{ include "rft-operator.commonLabels" . }}
app.kubernetes.io/component: operator
{{- end }}

{{/* The operator's ServiceAccount name. */}}
{{- define "rft-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "rft-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
An image reference from {repository, tag, digest}: repository@digest when a digest is given,
else repository:tag with the chart's appVersion as the default tag.
Call with (dict "image" <values> "context" $).
*/}}
{{- define "rft-operator.image" -}}
{{- $image := .image }}
{{- if $image.digest }}
{{- printf "%s@%s" $image.repository $image.digest }}
{{- else }}
{{- printf "%s:%s" $image.repository (default .context.Chart.AppVersion $image.tag) }}
{{- end }}
{{- end }}

{{/* Where the accelerator map ConfigMap is mounted, and the file the operator reads. */}}
{{- define "rft-operator.acceleratorMapDir" -}}
/etc/rft-operator
{{- end }}
{{- define "rft-operator.acceleratorMapFile" -}}
{{ include "rft-operator.acceleratorMapDir" . }}/accelerators.yaml
{{- end }}

{{/*
The namespaced rules of the operator: granted cluster-wide by the ClusterRole (all namespaces)
or per watched namespace by Roles (watchNamespaces). Framework rules are what Kopf itself needs;
application rules are the calls the reconcilers make (operator/rft_operator/kube.py).
No Secrets, no wildcards, no `update` where a merge patch is all that is used.
*/}}
{{- define "rft-operator.namespacedRules" -}}
# --- Framework (Kopf) -----------------------------------------------------------------------
# Kopf posts Events about handler failures (POST only, it never patches them); the
# reconcilers post Events on phase changes (Kube.record_event) the same way.
- apiGroups: [""]
  resources: [events]
  verbs: [create]
# Kopf's watchers list and watch every resource a handler is registered for
# (the five kinds, and the Jobs and Pods the operator owns); the reconcilers read single objects.
- apiGroups: [rft-operator.io]
  resources: [datasets, models, deployments, reinforcementsteps, trainingsessions]
  verbs: [get, list, watch]
# --- Application ----------------------------------------------------------------------------
# Status is written only through the status subresource, as merge patches with a
# resourceVersion precondition (Kube.patch_status).
- apiGroups: [rft-operator.io]
  resources: [datasets/status, models/status, deployments/status, reinforcementsteps/status, trainingsessions/status]
  verbs: [patch]
# A completed ReinforcementStep registers its output Model, a TrainingSession its saved sampler
# weights (Kube.create).
- apiGroups: [rft-operator.io]
  resources: [models]
  verbs: [create]
# A TrainingSession's sampler weights are loaded onto its spec.samplingDeployment through an
# on-demand-lora Deployment the operator creates once, owned by the session (Kube.create).
- apiGroups: [rft-operator.io]
  resources: [deployments]
  verbs: [create]
# Finished ReinforcementSteps are deleted after spec.ttlSecondsAfterFinished (Kube.delete).
- apiGroups: [rft-operator.io]
  resources: [reinforcementsteps]
  verbs: [delete]
# on-demand-lora Deployments carry the finalizer rft-operator.io/unload-adapter, added and
# removed with a merge patch of metadata.finalizers (Kube.set_finalizers), so that their adapter
# is unloaded from the base replicas before they go. (RBAC cannot narrow a patch to one field;
# the operator patches nothing else of the object.)
- apiGroups: [rft-operator.io]
  resources: [deployments]
  verbs: [patch]
{{- if .Values.rbac.ownerReferencesPermissionEnforcement }}
# Children carry owner references with blockOwnerDeletion; where the
# OwnerReferencesPermissionEnforcement admission plugin runs, setting them needs `update` on
# the owner's finalizers subresource (the operator adds no finalizers itself).
- apiGroups: [rft-operator.io]
  resources: [datasets/finalizers, deployments/finalizers, reinforcementsteps/finalizers, trainingsessions/finalizers]
  verbs: [update]
{{- end }}
# Training and dataset-validation Jobs: created once under a deterministic name, suspended or
# resumed with a merge patch (spec.suspend), deleted when a step is cancelled; watched to react
# to their progress.
- apiGroups: [batch]
  resources: [jobs]
  verbs: [get, list, watch, create, patch, delete]
# The Jobs' pods are read (never written): their phase, IP (progress endpoint) and
# termination message (the trainer's result summary).
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list, watch]
# The ServiceAccount a resource names (spec.serviceAccountName) is read, never written and no
# token requested, to check the admin's workload label before any pod runs as it
# (rft_operator.policy).
- apiGroups: [""]
  resources: [serviceaccounts]
  verbs: [get]
# Inference server pods' readiness gate rft-operator.io/AdaptersLoaded: a new replica is Ready
# once it serves its Deployment's adapters. Only that condition of the status is written.
- apiGroups: [""]
  resources: [pods/status]
  verbs: [patch]
# Inference servers of Deployments (rft-operator.io): an apps/v1 Deployment per served model,
# watched, read, and created or updated by server-side apply (a patch; `create` when it does not
# exist yet); never deleted by the operator: the garbage collector removes it with its owner.
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, list, watch, create, patch]
# ... and its Service: read, then created or updated by server-side apply; not watched.
- apiGroups: [""]
  resources: [services]
  verbs: [get, create, patch]
# A TrainingSession's API key: a Secret created once in the session's namespace (owned by it,
# garbage-collected with it). Create only: the operator never reads, lists or changes Secrets.
- apiGroups: [""]
  resources: [secrets]
  verbs: [create]
{{- end }}

{{/*
The egress rules of every pod the operator creates (workloadNetworkPolicy): DNS, the bucket (and
its credentials: STS on EKS goes to the same port), and the admin's extra rules; nothing else.
*/}}
{{- define "rft-operator.workloadEgress" -}}
{{- $wnp := .Values.workloadNetworkPolicy }}
{{- if $wnp.dns }}
# DNS, for the bucket's name.
- ports:
    - port: 53
      protocol: UDP
    - port: 53
      protocol: TCP
{{- end }}
# The bucket (workloadNetworkPolicy.bucket).
- ports:
    {{- range $wnp.bucket.ports }}
    - port: {{ . }}
      protocol: TCP
    {{- end }}
  {{- with $wnp.bucket.to }}
  to:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- with $wnp.extraEgress }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* The operator's pods as a NetworkPolicyPeer seen from any namespace: the only peer of the workload pods' admin ports. */}}
{{- define "rft-operator.operatorPeer" -}}
- namespaceSelector:
    matchLabels:
      kubernetes.io/metadata.name: {{ .Release.Namespace }}
  podSelector:
    matchLabels:
      {{- include "rft-operator.selectorLabels" . | nindent 6 }}
{{- end }}
