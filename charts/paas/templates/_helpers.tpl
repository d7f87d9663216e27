{{/*
The chart name, shortened to the 63 characters a label allows.
*/}}
{{- define "paas.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The full name of the release's resources: <release>-<name>, or the release name when it
already contains the chart name; 63 characters at most.
*/}}
{{- define "paas.fullname" -}}
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
Chart name and version, for the helm.sh/chart label.
*/}}
{{- define "paas.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels on every resource.
*/}}
{{- define "paas.labels" -}}
helm.sh/chart: {{ include "paas.chart" . }}
{{ include "paas.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: control-plane
app.kubernetes.io/part-of: paas
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
Labels that select the control-plane pods (never change them on upgrade: a Deployment's
selector is immutable).
*/}}
{{- define "paas.selectorLabels" -}}
app.kubernetes.io/name: {{ include "paas.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
The ServiceAccount the control plane runs as.
*/}}
{{- define "paas.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "paas.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The container image: repository@digest when a digest is given, else repository:tag with
the tag defaulting to the chart's appVersion.
*/}}
{{- define "paas.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag | toString) }}
{{- end }}
{{- end }}

{{/*
The Secret holding DATABASE_URL: database.existingSecret, else the chart's own Secret
made from database.url; rendering fails when neither is set.
*/}}
{{- define "paas.databaseSecretName" -}}
{{- if .Values.database.existingSecret }}
{{- .Values.database.existingSecret }}
{{- else if .Values.database.url }}
{{- printf "%s-database" (include "paas.fullname" .) }}
{{- else }}
{{- fail "paas: a database is required: set database.existingSecret (a Secret whose key database.secretKey, default \"url\", holds the PostgreSQL URL) or database.url" }}
{{- end }}
{{- end }}

{{/*
The Secret holding the master key, which seals application secrets and signing keys at
rest. Required: the chart never makes one (a key made again at an upgrade would leave
every sealed value unreadable).
*/}}
{{- define "paas.masterKeySecretName" -}}
{{- if .Values.masterKey.existingSecret }}
{{- .Values.masterKey.existingSecret }}
{{- else }}
{{- fail "paas: a master key is required: set masterKey.existingSecret (a Secret whose key masterKey.secretKey, default \"key\", holds 32 random bytes in base64, e.g. from `openssl rand -base64 32`)" }}
{{- end }}
{{- end }}

{{/*
"true" or "false" for a value that is "auto" (then $auto decides), true or false.
Usage: include "paas.autoBool" (list .Values.secureCookies $auto)
*/}}
{{- define "paas.autoBool" -}}
{{- $value := index . 0 }}
{{- $auto := index . 1 }}
{{- if eq (toString $value) "auto" }}
{{- ternary "true" "false" $auto }}
{{- else if has (toString $value) (list "true" "false") }}
{{- toString $value }}
{{- else }}
{{- fail (printf "paas: expected auto, true or false, got %v" $value) }}
{{- end }}
{{- end }}

{{/*
PAAS_KUBE_CLUSTERS: the in-cluster runtime first, then runtime.extraClusters.
*/}}
{{- define "paas.kubeClusters" -}}
{{- $clusters := list (printf "%s=in-cluster" .Values.runtime.clusterName) }}
{{- range .Values.runtime.extraClusters }}
{{- $clusters = append $clusters . }}
{{- end }}
{{- join "," $clusters }}
{{- end }}

{{/*
rbac.workloadNamespaces, checked: each must be a tenant environment namespace
(paas-<tenant>-<env>), so the workloads role is never bound in kube-system or any other
namespace by mistake. Empty when rbac.allNamespaces binds cluster-wide instead.
*/}}
{{- define "paas.workloadNamespaces" -}}
{{- if not .Values.rbac.allNamespaces }}
{{- range (.Values.rbac.workloadNamespaces | uniq) }}
{{- if not (regexMatch "^paas-[a-z0-9]([-a-z0-9]*[a-z0-9])?$" .) }}
{{- fail (printf "paas: rbac.workloadNamespaces entry %q is not a tenant environment namespace (paas-<tenant>-<env>)" .) }}
{{- end }}
{{ . }}
{{- end }}
{{- end }}
{{- end }}
