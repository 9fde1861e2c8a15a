{{/* The release's full name: the release name, or <release>-eventscale when it does not say eventscale. */}}
{{- define "eventscale.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "eventscale.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "eventscale.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* The interceptor's pods: a name of their own, so that no selector of eventscale's
matches them. */}}
{{- define "eventscale.interceptorSelectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}-interceptor
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "eventscale.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "eventscale.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The Service the APIService points at; the serving certificate is for its names. */}}
{{- define "eventscale.serviceName" -}}
{{- printf "%s-metrics-apiserver" (include "eventscale.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The Secret holding the serving pair (and the CA). */}}
{{- define "eventscale.certSecret" -}}
{{- default (printf "%s-certs" (include "eventscale.fullname" .)) .Values.certificates.existingSecret -}}
{{- end -}}

{{- define "eventscale.fullMode" -}}
{{- if eq .Values.mode "full" -}}true{{- else if eq .Values.mode "metrics-only" -}}{{- else -}}
{{- fail (printf "mode must be full or metrics-only, not %q" .Values.mode) -}}
{{- end -}}
{{- end -}}
