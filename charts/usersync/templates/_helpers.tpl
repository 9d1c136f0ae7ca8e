{{/*
The chart's name, or nameOverride.
*/}}
{{- define "usersync.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The name of the release's objects: fullnameOverride, else the release name when it
already says "usersync", else "<release>-usersync". Cut to 63 characters (a label
value's limit).
*/}}
{{- define "usersync.fullname" -}}
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

{{/*
Labels of every object the chart creates.
*/}}
{{- define "usersync.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "usersync.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: usersync
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
The labels that pick the operator's pods; they never change after install
(a Deployment's selector is immutable).
*/}}
{{- define "usersync.selectorLabels" -}}
app.kubernetes.io/name: {{ include "usersync.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
The operator's ServiceAccount.
*/}}
{{- define "usersync.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "usersync.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The leader-election Lease.
*/}}
{{- define "usersync.leaseName" -}}
{{- default (include "usersync.fullname" .) .Values.leaderElection.leaseName }}
{{- end }}

{{/*
The ClusterRole that a namespace binds to let the operator read its Secrets.
*/}}
{{- define "usersync.secretReaderRole" -}}
{{- printf "%s-secret-reader" (include "usersync.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The operator's image: repository@digest when a digest is given, else
repository:tag, the tag defaulting to the chart's appVersion.
*/}}
{{- define "usersync.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
Refuse settings that would make two operators sync the same mappings at once.
*/}}
{{- define "usersync.validate" -}}
{{- if and (gt (int .Values.replicas) 1) (not .Values.leaderElection.enabled) }}
{{- fail "replicas > 1 needs leaderElection.enabled: without the Lease every replica would run every sync" }}
{{- end }}
{{- if .Values.watchNamespaces }}
{{- range .Values.secretNamespaces }}
{{- if not (has . $.Values.watchNamespaces) }}
{{- fail (printf "secretNamespaces: %s is not one of watchNamespaces; the operator would read Secrets of a namespace it does not manage" .) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The arguments of `usersync run`.
*/}}
{{- define "usersync.args" -}}
- run
{{- range .Values.watchNamespaces }}
- {{ printf "--namespace=%s" . | quote }}
{{- end }}
- {{ printf "--store=%s" .Values.store.type | quote }}
- {{ printf "--max-concurrent-runs=%d" (int .Values.maxConcurrentRuns) | quote }}
- {{ printf "--log-format=%s" .Values.logFormat | quote }}
- {{ printf "--log=%s" .Values.logLevel | quote }}
- {{ printf "--metrics-addr=0.0.0.0:%d" (int .Values.metrics.port) | quote }}
- {{ printf "--secret-reader-role=%s" (include "usersync.secretReaderRole" .) | quote }}
{{- if .Values.leaderElection.enabled }}
- --leader-elect
- {{ printf "--lease-name=%s" (include "usersync.leaseName" .) | quote }}
- --lease-namespace=$(POD_NAMESPACE)
{{- end }}
{{- range .Values.extraArgs }}
- {{ . | quote }}
{{- end }}
{{- end }}
