{{/* Chart name, truncated to the 63-character DNS label limit. */}}
{{- define "rlhf-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: release-chart, or the release name when it already contains the chart name. */}}
{{- define "rlhf-operator.fullname" -}}
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

{{- define "rlhf-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "rlhf-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "rlhf-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "rlhf-operator.labels" -}}
helm.sh/chart: {{ include "rlhf-operator.chart" . }}
{{ include "rlhf-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: rlhf-operator
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "rlhf-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "rlhf-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* image@digest when a digest is given, else image:tag (tag defaults to appVersion). */}}
{{- define "rlhf-operator.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.image.digest }}
{{- printf "%s:%s@%s" .Values.image.repository $tag .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/*
Namespaced rules, used as a ClusterRole (watch.namespaces empty) or as a Role in each watched
namespace. Keep in step with what rlhf_operator's handlers call.
*/}}
{{- define "rlhf-operator.namespacedRules" -}}
# --- kopf itself -------------------------------------------------------------------------
# Watch RLHFRuns and patch them: kopf keeps its handler progress and the last-handled spec in
# annotations on the object (standalone mode: no peering, and the operator adds no finalizers).
- apiGroups: ["rlhf.dev"]
  resources: ["rlhfruns"]
  verbs: ["get", "list", "watch", "patch"]
# kopf posts Kubernetes events about handler outcomes on the RLHFRun.
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
# --- the RLHF operator ---------------------------------------------------------------------
# The run's status (phase, stages, kstatus conditions, observedGeneration).
- apiGroups: ["rlhf.dev"]
  resources: ["rlhfruns/status"]
  verbs: ["get", "patch", "update"]
# Children carry an ownerReference with blockOwnerDeletion to their RLHFRun; with the
# OwnerReferencesPermissionEnforcement admission plugin that needs update on the owner's finalizers.
- apiGroups: ["rlhf.dev"]
  resources: ["rlhfruns/finalizers"]
  verbs: ["update"]
# One distributed training job per stage: Kubeflow training operator v1 (launcher: pytorchjob)
# or Kubeflow Trainer v2 (launcher: trainjob). Patched to suspend/resume a stage.
- apiGroups: ["kubeflow.org"]
  resources: ["pytorchjobs"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: ["trainer.kubeflow.org"]
  resources: ["trainjobs"]
  verbs: ["get", "list", "watch", "create", "patch"]
# The run's volume (checkpoints) and each stage's trainer config file.
- apiGroups: [""]
  resources: ["persistentvolumeclaims", "configmaps"]
  verbs: ["get", "list", "watch", "create", "patch"]
# Stage pods are read for their termination message (the trainer's short JSON result) and
# failure reasons; the operator never creates or deletes pods itself.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch"]
{{- end }}
