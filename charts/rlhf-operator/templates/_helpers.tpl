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
namespace. Kept to the calls rlhf_operator.controller.handlers makes (tests/packaging/test_chart.py pins them).
*/}}
{{- define "rlhf-operator.namespacedRules" -}}
# --- kopf itself -------------------------------------------------------------------------
# kopf lists and watches RLHFRuns and the stage jobs (event handlers and indexes only). It
# writes nothing itself: no finalizers, no progress annotations, no events (posting is off),
# no peering (standalone).
- apiGroups: ["rlhf.dev"]
  resources: ["rlhfruns"]
  verbs: ["list", "watch"]
- apiGroups: ["kubeflow.org"]
  resources: ["pytorchjobs"]
  verbs: ["list", "watch"]
- apiGroups: ["trainer.kubeflow.org"]
  resources: ["trainjobs"]
  verbs: ["list", "watch"]
# --- the RLHF operator ---------------------------------------------------------------------
# One status patch per change (phase, stages, kstatus conditions, observedGeneration).
- apiGroups: ["rlhf.dev"]
  resources: ["rlhfruns/status"]
  verbs: ["patch"]
# A deleted stage job whose run the operator has not seen yet: is the run really gone?
- apiGroups: ["rlhf.dev"]
  resources: ["rlhfruns"]
  verbs: ["get"]
# Children carry an ownerReference with blockOwnerDeletion to their RLHFRun; with the
# OwnerReferencesPermissionEnforcement admission plugin that needs update on the owner's finalizers.
- apiGroups: ["rlhf.dev"]
  resources: ["rlhfruns/finalizers"]
  verbs: ["update"]
# One distributed training job per stage (launcher pytorchjob: Kubeflow training operator v1;
# trainjob: Kubeflow Trainer v2), created if absent (with the operator's finalizer, so a job
# cannot vanish before its outcome is recorded), merge-patched to suspend or resume and to
# release that finalizer, read back when the watch has not shown a running stage's job, and
# deleted to end an attempt found hung (progressDeadlineSeconds) or stopped by a guard (a
# suspend would not stick under Kueue, which unsuspends admitted jobs).
- apiGroups: ["kubeflow.org"]
  resources: ["pytorchjobs"]
  verbs: ["create", "get", "patch", "delete"]
- apiGroups: ["trainer.kubeflow.org"]
  resources: ["trainjobs"]
  verbs: ["create", "get", "patch", "delete"]
# The run's volume (checkpoints) and each stage's trainer config: created if absent, never
# changed afterwards; deletion is left to the garbage collector (ownerReferences).
- apiGroups: [""]
  resources: ["persistentvolumeclaims"]
  verbs: ["create"]
# A stage's config is also read back when a spec edit is rejected: the message names each
# changed field, old -> new, from the config the stage started with.
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["create", "get"]
# Each run's NetworkPolicy (only the run's own pods reach its stage pods), created with the
# run's volume, owned by the run: the garbage collector deletes it with the run.
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies"]
  verbs: ["create"]
# A finished stage's Master pod is read (by name for PyTorchJob, by label for TrainJob) for its
# termination message, the trainer's short JSON result, and the pods of an attempt not started
# yet are listed to say why they wait; the operator never creates or deletes pods.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list"]
# A running stage's progress lines, read from its Master pod's log at most once per
# progress.intervalSeconds (the training pods need no API token to report progress).
- apiGroups: [""]
  resources: ["pods/log"]
  verbs: ["get"]
# One event per run transition; and, for an attempt whose pods are not created at all, the
# Warning events about its job (e.g. Pod Security admission refusing them) to say why.
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "list"]
{{- end }}
