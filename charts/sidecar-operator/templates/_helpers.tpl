{{/* The name of most objects: the release's name when it holds the chart's, as in
`helm install sidecar-operator`, else both. */}}
{{- define "sidecar-operator.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Selects the operator's pods. Only the name, as the kustomize manifests always had it: a
Deployment's selector cannot change, and these are within one namespace. */}}
{{- define "sidecar-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sidecar-operator.fullname" . }}
{{- end -}}

{{- define "sidecar-operator.labels" -}}
{{ include "sidecar-operator.selectorLabels" . }}
app.kubernetes.io/part-of: sidecar-operator
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "sidecar-operator.image" -}}
{{- $tag := .Values.image.tag | default .Chart.AppVersion -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}
{{- end -}}

{{- define "sidecar-operator.webhookService" -}}
{{- printf "%s-webhook" (include "sidecar-operator.fullname" .) -}}
{{- end -}}

{{/* The Secret holding the webhook's certificate: made by the first replica, or by
cert-manager. */}}
{{- define "sidecar-operator.webhookSecret" -}}
{{- printf "%s-webhook" (include "sidecar-operator.fullname" .) -}}
{{- end -}}

{{- define "sidecar-operator.certManager" -}}
{{- if and .Values.webhook.enabled (eq .Values.webhook.certificate.source "cert-manager") -}}true{{- end -}}
{{- end -}}
