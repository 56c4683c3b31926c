{{/* The chart name, or nameOverride. */}}
{{- define "crontask.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The prefix of every resource name: release name, plus the chart name if it differs. */}}
{{- define "crontask.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "crontask.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The standard labels of every resource. */}}
{{- define "crontask.labels" -}}
helm.sh/chart: {{ include "crontask.chart" . }}
{{ include "crontask.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: crontask
{{- end }}

{{- define "crontask.selectorLabels" -}}
app.kubernetes.io/name: {{ include "crontask.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "crontask.operatorSelectorLabels" -}}
{{ include "crontask.selectorLabels" . }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "crontask.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "crontask.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* An image reference from an image block: registry/repository@digest when a digest is set,
     else registry/repository:tag, the tag defaulting to the chart's appVersion.
     Call with (dict "image" .Values.x.image "appVersion" .Chart.AppVersion). */}}
{{- define "crontask.image" -}}
{{- $ref := .image.repository }}
{{- if .image.registry }}
{{- $ref = printf "%s/%s" .image.registry .image.repository }}
{{- end }}
{{- if .image.digest }}
{{- printf "%s@%s" $ref .image.digest }}
{{- else }}
{{- printf "%s:%s" $ref (.image.tag | default .appVersion) }}
{{- end }}
{{- end }}

{{/* name=quantity,name=quantity for the operator's --job-requests / --job-limits flags. */}}
{{- define "crontask.quantities" -}}
{{- $out := list }}
{{- range $k, $v := . }}
{{- $out = append $out (printf "%s=%v" $k $v) }}
{{- end }}
{{- join "," $out }}
{{- end }}

{{/* The restricted pod security context of the chart's own job pods (migrations, tests). */}}
{{- define "crontask.restrictedPod" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "crontask.restrictedContainer" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Rules of the operator's Role or ClusterRole: exactly the requests it makes (the cluster
     tier derives them from the API server's audit log); the chart README explains each line. */}}
{{- define "crontask.rbacRules" -}}
- apiGroups: [crontask.dev]
  resources: [crontasks]
  verbs: [list, watch]
- apiGroups: [crontask.dev]
  resources: [crontasks/status]
  verbs: [patch]
- apiGroups: [crontask.dev]
  resources: [crontasks/finalizers]
  verbs: [update]
- apiGroups: [batch]
  resources: [cronjobs]
  verbs: [list, watch, create, patch, delete]
- apiGroups: [batch]
  resources: [jobs]
  verbs: [list, watch]
- apiGroups: [""]
  resources: [pods]
  verbs: [list, watch]
- apiGroups: [""]
  resources: [events]
  verbs: [create]
{{- end }}

{{/* The name of the ValidatingAdmissionPolicy and its binding (cluster-scoped). */}}
{{- define "crontask.admissionPolicyName" -}}
{{- include "crontask.fullname" . }}-author-rights
{{- end }}

{{/* --allowed-images: jobs.allowedImages, or the repository of the jobs image (any tag). */}}
{{- define "crontask.allowedImages" -}}
{{- if .Values.jobs.allowedImages }}
{{- join "," .Values.jobs.allowedImages }}
{{- else if .Values.jobs.image.registry }}
{{- printf "%s/%s" .Values.jobs.image.registry .Values.jobs.image.repository }}
{{- else }}
{{- .Values.jobs.image.repository }}
{{- end }}
{{- end }}
