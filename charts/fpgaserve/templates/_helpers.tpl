{{/*
Names, labels and images shared by the templates.
*/}}

{{/* The operator's objects: <release>-operator, as `fpgaserve operator manifest` names them. */}}
{{- define "fpgaserve.operatorName" -}}
{{- default (printf "%s-operator" .Release.Name) .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "fpgaserve.devicePluginName" -}}
{{- printf "%s-device-plugin" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Besides the selector labels (name, instance). */}}
{{- define "fpgaserve.commonLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: fpgaserve
{{- end -}}

{{/* Selectors are immutable: name and instance only, never the version. */}}
{{- define "fpgaserve.operatorSelectorLabels" -}}
app.kubernetes.io/name: {{ include "fpgaserve.operatorName" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "fpgaserve.operatorLabels" -}}
{{ include "fpgaserve.operatorSelectorLabels" . }}
app.kubernetes.io/component: operator
{{ include "fpgaserve.commonLabels" . }}
{{- end -}}

{{- define "fpgaserve.devicePluginSelectorLabels" -}}
app.kubernetes.io/name: {{ include "fpgaserve.devicePluginName" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "fpgaserve.devicePluginLabels" -}}
{{ include "fpgaserve.devicePluginSelectorLabels" . }}
app.kubernetes.io/component: device-plugin
{{ include "fpgaserve.commonLabels" . }}
{{- end -}}

{{- define "fpgaserve.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{- define "fpgaserve.operatorImage" -}}
{{- printf "%s:%s" .Values.operatorImage.repository (.Values.operatorImage.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{- define "fpgaserve.serverImage" -}}
{{- .Values.serverImage | default (include "fpgaserve.image" .) -}}
{{- end -}}

{{- define "fpgaserve.devicePluginImage" -}}
{{- $image := .Values.devicePlugin.image -}}
{{- printf "%s:%s" ($image.repository | default .Values.slimImage.repository) ($image.tag | default .Values.slimImage.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{- define "fpgaserve.draName" -}}
{{- printf "%s-dra-driver" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "fpgaserve.draSelectorLabels" -}}
app.kubernetes.io/name: {{ include "fpgaserve.draName" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "fpgaserve.draLabels" -}}
{{ include "fpgaserve.draSelectorLabels" . }}
app.kubernetes.io/component: dra-driver
{{ include "fpgaserve.commonLabels" . }}
{{- end -}}

{{- define "fpgaserve.draImage" -}}
{{- $image := .Values.dra.image -}}
{{- printf "%s:%s" ($image.repository | default .Values.slimImage.repository) ($image.tag | default .Values.slimImage.tag | default .Chart.AppVersion) -}}
{{- end -}}
