{{- define "cp.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "cp.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "cp.selectorLabels" -}}
app: streamspace
component: control-plane
app.kubernetes.io/name: {{ include "cp.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "cp.labels" -}}
{{ include "cp.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/component: control-plane
app.kubernetes.io/part-of: streamspace
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end -}}

{{- define "cp.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "cp.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* True ("true") when an external PostgreSQL is configured. */}}
{{- define "cp.externalDb" -}}
{{- if or .Values.database.url .Values.database.existingSecret -}}true{{- end -}}
{{- end -}}

{{/* The chart-managed Secret holding generated/given JWT secret and bootstrap token. */}}
{{- define "cp.secretName" -}}
{{- printf "%s-secrets" (include "cp.fullname" .) -}}
{{- end -}}

{{/* A value kept across upgrades: given value, else the one already in the chart's Secret, else random. */}}
{{- define "cp.persistent" -}}
{{- $ctx := index . 0 -}}{{- $key := index . 1 -}}{{- $given := index . 2 -}}
{{- if $given -}}
{{- $given -}}
{{- else -}}
{{- $existing := lookup "v1" "Secret" $ctx.Release.Namespace (include "cp.secretName" $ctx) -}}
{{- if and $existing (hasKey $existing.data $key) -}}
{{- index $existing.data $key | b64dec -}}
{{- else -}}
{{- randAlphaNum 48 -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "cp.validate" -}}
{{- if and (gt (int .Values.replicaCount) 1) (not (include "cp.externalDb" .)) -}}
{{- fail (printf "replicaCount=%d needs an external PostgreSQL: set database.url (DATABASE_URL) or database.existingSecret. The embedded database (DATA_DIR on a ReadWriteOnce PVC) supports exactly one replica." (int .Values.replicaCount)) -}}
{{- end -}}
{{- if and .Values.database.url .Values.database.existingSecret -}}
{{- fail "database: set either database.url or database.existingSecret, not both" -}}
{{- end -}}
{{- if and .Values.jwt.secret .Values.jwt.existingSecret -}}
{{- fail "jwt: set either jwt.secret or jwt.existingSecret, not both" -}}
{{- end -}}
{{- if and .Values.metricsToken.value .Values.metricsToken.existingSecret -}}
{{- fail "metricsToken: set either metricsToken.value or metricsToken.existingSecret, not both" -}}
{{- end -}}
{{- if and .Values.clusterSecret.value .Values.clusterSecret.existingSecret -}}
{{- fail "clusterSecret: set either clusterSecret.value or clusterSecret.existingSecret, not both" -}}
{{- end -}}
{{- if and .Values.bootstrapToken.value .Values.bootstrapToken.existingSecret -}}
{{- fail "bootstrapToken: set either bootstrapToken.value or bootstrapToken.existingSecret, not both" -}}
{{- end -}}
{{- if and .Values.config.devMode (gt (int .Values.replicaCount) 1) -}}
{{- fail "config.devMode=true is for a single local instance, not a replicated install" -}}
{{- end -}}
{{- end -}}
