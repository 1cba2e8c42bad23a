{{/* Resource name: fullnameOverride, else the release name (the guide installs as "streamspace-k8s-agent"). */}}
{{- define "agent.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "agent.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Selector labels: the guide's app/component pair plus the instance, so several agents can share a namespace. */}}
{{- define "agent.selectorLabels" -}}
app: streamspace
component: k8s-agent
app.kubernetes.io/name: {{ include "agent.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "agent.labels" -}}
{{ include "agent.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/component: agent
app.kubernetes.io/part-of: streamspace
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
streamspace.io/agent-id: {{ .Values.agent.id | quote }}
{{- end -}}

{{- define "agent.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "agent.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "agent.tokenSecretName" -}}
{{- if .Values.token.existingSecret -}}
{{- .Values.token.existingSecret -}}
{{- else -}}
{{- printf "%s-token" (include "agent.fullname" .) -}}
{{- end -}}
{{- end -}}

{{- define "agent.credentialSecretName" -}}
{{- default (printf "%s-credential" (include "agent.fullname" .)) .Values.agent.credentialSecret -}}
{{- end -}}

{{/* Port of the control plane URL: explicit, else 443 for wss and 80 for ws. */}}
{{- define "agent.controlPlanePort" -}}
{{- if .Values.networkPolicy.controlPlane.port -}}
{{- .Values.networkPolicy.controlPlane.port -}}
{{- else -}}
{{- $u := urlParse .Values.agent.controlPlaneUrl -}}
{{- $hostPort := splitList ":" $u.host -}}
{{- if gt (len $hostPort) 1 -}}
{{- last $hostPort -}}
{{- else if eq $u.scheme "ws" -}}
80
{{- else -}}
443
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Checks the schema cannot express; each fails rendering with a message naming the value. */}}
{{- define "agent.validate" -}}
{{- if not .Values.agent.id -}}
{{- fail "agent.id is required: a unique, stable agent id such as k8s-prod-us-east-1 (--set agent.id=...)" -}}
{{- end -}}
{{- if not .Values.agent.controlPlaneUrl -}}
{{- fail "agent.controlPlaneUrl is required: the control plane WebSocket URL, e.g. wss://streamspace.example.com" -}}
{{- end -}}
{{- if and (hasPrefix "ws://" .Values.agent.controlPlaneUrl) (not .Values.agent.allowInsecureTransport) -}}
{{- fail (printf "agent.controlPlaneUrl %q uses ws:// (unencrypted): use wss://, or set agent.allowInsecureTransport=true for a trusted network" .Values.agent.controlPlaneUrl) -}}
{{- end -}}
{{- if gt (int .Values.agent.replicaCount) 1 -}}
{{- fail (printf "agent.replicaCount=%d: an agent id runs in exactly one pod (two pods with the same id would keep replacing each other's control-plane connection). Use 0 or 1, and install another release with a different agent.id for more agents." (int .Values.agent.replicaCount)) -}}
{{- end -}}
{{- if and (not .Values.token.existingSecret) (not .Values.token.value) -}}
{{- fail "the agent token is required: set token.existingSecret to a Secret holding the bootstrap token (key token.key), or token.value to have the chart create one" -}}
{{- end -}}
{{- if and .Values.agent.metrics.enabled (eq (int .Values.agent.healthPort) (int .Values.agent.metrics.port)) -}}
{{- fail (printf "agent.healthPort and agent.metrics.port are both %d: the health and metrics servers need different ports" (int .Values.agent.healthPort)) -}}
{{- end -}}
{{- if and .Values.agent.controlPlaneCA.configMap .Values.agent.controlPlaneCA.secret -}}
{{- fail "agent.controlPlaneCA: set either configMap or secret, not both" -}}
{{- end -}}
{{- end -}}
