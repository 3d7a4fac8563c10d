{{/* The release's full name, at most 63 characters (a DNS label). */}}
{{- define "quantwise.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "quantwise.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "quantwise.labels" -}}
{{ include "quantwise.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: quantwise
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "quantwise.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "quantwise.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The namespaces watched when not watching all: the list, or the release's namespace. */}}
{{- define "quantwise.namespaces" -}}
{{- if .Values.watch.namespaces -}}
{{- toJson .Values.watch.namespaces -}}
{{- else -}}
{{- toJson (list .Release.Namespace) -}}
{{- end -}}
{{- end -}}

{{/* Peering (one active replica among several) is on with more than one replica. */}}
{{- define "quantwise.peering" -}}
{{- if gt (int .Values.replicaCount) 1 }}true{{ end -}}
{{- end -}}

{{/* The generated RBAC rules (files/rbac-rules.yaml, from quantwise.k8s.API_CALLS). */}}
{{- define "quantwise.rules" -}}
{{- toJson (.Files.Get "files/rbac-rules.yaml" | fromYaml) -}}
{{- end -}}
