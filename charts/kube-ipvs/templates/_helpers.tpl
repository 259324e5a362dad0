{{- define "kube-ipvs.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "kube-ipvs.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "kube-ipvs.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kube-ipvs.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "kube-ipvs.labels" -}}
{{ include "kube-ipvs.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "kube-ipvs.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "kube-ipvs.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "kube-ipvs.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{- define "kube-ipvs.configMapName" -}}
{{- default (include "kube-ipvs.fullname" .) .Values.config.existingConfigMap -}}
{{- end -}}

{{- define "kube-ipvs.configKey" -}}
{{- if .Values.config.existingConfigMap -}}{{ .Values.config.existingConfigMapKey }}{{- else -}}config.yaml{{- end -}}
{{- end -}}

{{/* Where the config is mounted: kubeadm's kube-proxy ConfigMap goes where kubeadm mounts it, so the
kubeconfig path inside its config.conf (/var/lib/kube-proxy/kubeconfig.conf) resolves. */}}
{{- define "kube-ipvs.configDir" -}}
{{- if .Values.config.existingConfigMap -}}/var/lib/kube-proxy{{- else -}}/etc/kube-ipvs{{- end -}}
{{- end -}}
