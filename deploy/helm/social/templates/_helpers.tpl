{{/*
The fleet's roster (fleet.yaml, a link to libs/common/src/social_common/fleet.yaml)
as YAML: `include "social.fleet" . | fromYaml`. Every per-service template
ranges over its services; nothing here lists them.
*/}}
{{- define "social.fleet" -}}
{{- $fleet := .Files.Get "fleet.yaml" | fromYaml -}}
{{- if or (hasKey $fleet "Error") (not $fleet.services) (not $fleet.pod_ports) -}}
{{- fail "fleet.yaml (a link to libs/common/src/social_common/fleet.yaml) is missing or has no services" -}}
{{- end -}}
{{- toYaml $fleet -}}
{{- end -}}

{{/*
The roster's web client (fleet.yaml's `web:`): its ports on the local stack
and its replicas bounds. Use with fromYaml.
*/}}
{{- define "social.webRoster" -}}
{{- $web := (include "social.fleet" . | fromYaml).web -}}
{{- if not (and $web $web.replicas) -}}
{{- fail "fleet.yaml has no web: entry with replicas (min, max): the web client's objects need it" -}}
{{- end -}}
{{- toYaml $web -}}
{{- end -}}

{{/*
Top-level values keys of the chart itself; every other key must be a roster
service (its overrides), so that a typo such as `--set post.image.tag=X`
fails instead of silently doing nothing.
*/}}
{{- define "social.chartKeys" -}}
{{- list "global" "clusterDomain" "serviceDefaults" "gateway" "web" "database" "redis" "objects" "networkPolicy" "monitoring" "tracing" "logs" | toJson -}}
{{- end -}}

{{/* Fails on values sections that are neither chart keys nor roster services. */}}
{{- define "social.checkValues" -}}
{{- $fleet := include "social.fleet" . | fromYaml -}}
{{- $chartKeys := include "social.chartKeys" . | fromJsonArray -}}
{{- range $name, $_ := $fleet.services -}}
{{- if has $name $chartKeys -}}
{{- fail (printf "fleet.yaml: a service may not be named %q, a key of the chart's values" $name) -}}
{{- end -}}
{{- end -}}
{{- range $key, $_ := .Values -}}
{{- if not (or (has $key $chartKeys) (hasKey $fleet.services $key)) -}}
{{- fail (printf "values: %q is neither a service of fleet.yaml (%s) nor a setting of the chart" $key (keys $fleet.services | sortAlpha | join ", ")) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
One service's settings: serviceDefaults, overridden by the section named
after it. Call with (dict "root" $ "name" $name); use with fromYaml.
*/}}
{{- define "social.serviceValues" -}}
{{- $own := index .root.Values .name | default dict -}}
{{- toYaml (mergeOverwrite (deepCopy .root.Values.serviceDefaults) (deepCopy $own)) -}}
{{- end -}}

{{- define "social.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Labels of one object. Call with (dict "root" $ "name" <app> "component"
<server|migration|gateway|web> ["version" <image tag>]). Only workloads carry
their image's tag as version: changing one service's tag then changes only
that service's Deployment and migration Job.
*/}}
{{- define "social.labels" -}}
{{ include "social.podLabels" (merge (dict "version" (.version | default .root.Chart.AppVersion)) .) }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ include "social.chart" .root }}
{{- end -}}

{{/*
Labels of a pod template: those of its object but the chart's, so a new
chart rolls a pod only where the pod itself changes. Call with (dict "root"
$ "name" <app> "component" <component> "version" <image tag>).
*/}}
{{- define "social.podLabels" -}}
{{ include "social.selectorLabels" . }}
app.kubernetes.io/part-of: social
app.kubernetes.io/version: {{ .version | toString | trunc 63 | trimSuffix "-" | quote }}
{{- end -}}

{{- define "social.selectorLabels" -}}
app.kubernetes.io/name: {{ .name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* An image's tag: its own, else global.image.tag (the fleet's release), else the chart's appVersion. Call with (dict "root" $ "image" <image values>). */}}
{{- define "social.imageTag" -}}
{{- .image.tag | default .root.Values.global.image.tag | default .root.Chart.AppVersion | toString -}}
{{- end -}}

{{/*
An image reference: [<registry>/]<repository>:<tag>[@<digest>]. Call with
(dict "root" $ "image" <image values> "repository" <default repository>).
*/}}
{{- define "social.image" -}}
{{- $registry := .image.registry | default .root.Values.global.image.registry -}}
{{- $repository := .image.repository | default .repository -}}
{{- $ref := printf "%s:%s" $repository (include "social.imageTag" .) -}}
{{- if $registry -}}{{- $ref = printf "%s/%s" (trimSuffix "/" $registry) $ref -}}{{- end -}}
{{- if .image.digest -}}{{- $ref = printf "%s@%s" $ref .image.digest -}}{{- end -}}
{{- $ref -}}
{{- end -}}

{{- define "social.imagePullPolicy" -}}
{{- .image.pullPolicy | default .root.Values.global.image.pullPolicy -}}
{{- end -}}

{{/* An integer, or a percentage string: for maxUnavailable and the like. */}}
{{- define "social.intOrString" -}}
{{- if kindIs "string" . -}}{{ . | quote }}{{- else -}}{{ int . }}{{- end -}}
{{- end -}}

{{/* The pod's securityContext. Call with the section's securityContext values. */}}
{{- define "social.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ int .runAsUser }}
runAsGroup: {{ int .runAsGroup }}
fsGroup: {{ int .fsGroup }}
fsGroupChangePolicy: OnRootMismatch
seccompProfile:
  type: RuntimeDefault
{{- if eq (int .runAsUser) 0 }}
{{- fail "securityContext.runAsUser: no container of this chart runs as root" }}
{{- end }}
{{- end -}}

{{/* Every container's securityContext. */}}
{{- define "social.containerSecurityContext" -}}
runAsNonRoot: true
readOnlyRootFilesystem: true
allowPrivilegeEscalation: false
privileged: false
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/*
Spread over zones and nodes, both ScheduleAnyway: a preference the scheduler
weighs, never a rule that leaves pods pending. DoNotSchedule on zones would
stop scaling while a zone is down or full, and on nodes it counts every node
the pod could land on, so one full or cordoned node holding none of the pods
would block rollouts and scale-ups (and the cluster autoscaler's new, empty
node makes that worse). matchLabelKeys spreads each rollout's ReplicaSet on
its own. Call with (dict "root" $ "name" <app> "component" <c> "values" <section>).
*/}}
{{- define "social.topologySpread" -}}
{{- if .values.topologySpread.enabled }}
{{- range $key := list "topology.kubernetes.io/zone" "kubernetes.io/hostname" }}
- topologyKey: {{ $key }}
  maxSkew: {{ int $.values.topologySpread.maxSkew }}
  whenUnsatisfiable: ScheduleAnyway
  labelSelector:
    matchLabels: {{- include "social.selectorLabels" $ | nindent 6 }}
  matchLabelKeys: [pod-template-hash]
{{- end }}
{{- end }}
{{- end -}}

{{/* The shared pod-spec tail: scheduling constraints. Call like social.topologySpread. */}}
{{- define "social.scheduling" -}}
{{- with .values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .root.Values.global.imagePullSecrets }}
imagePullSecrets: {{- toYaml . | nindent 2 }}
{{- end }}
{{- with (include "social.topologySpread" .) }}
topologySpreadConstraints: {{- . | trim | nindent 2 }}
{{- end }}
{{- with .values.nodeSelector }}
nodeSelector: {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.tolerations }}
tolerations: {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.affinity }}
affinity: {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/*
A service's environment, as `env:` entries sorted by name. The chart's own
variables, then the section's `env` (which overrides them). Call with
(dict "root" $ "name" <service> "service" <roster entry> "values" <section>
"fleet" <roster>).
*/}}
{{- define "social.serviceEnv" -}}
{{- $root := .root -}}
{{- $svc := .service -}}
{{- $cfg := .values -}}
{{- $ports := .fleet.pod_ports -}}
{{- $env := dict
  "APP_ENV" "production"
  "BIND_HOST" "0.0.0.0"
  "HTTP_PORT" (toString (int $ports.http))
  "GRPC_PORT" (toString (int $ports.grpc))
  "LOG_LEVEL" $cfg.logLevel
  "SHUTDOWN_DELAY_SECONDS" (toString $cfg.shutdown.delaySeconds)
  "SHUTDOWN_GRACE_SECONDS" (toString $cfg.shutdown.graceSeconds)
  "REDIS_URL" (dict "secretKeyRef" (dict "name" $root.Values.redis.existingSecret "key" $root.Values.redis.key))
  "REDIS_WAIT_REPLICAS" (include "social.redisWaitReplicas" $root)
-}}
{{- with $root.Values.redis.caKey -}}
{{- $_ := set $env "REDIS_CA_CERT" (dict "secretKeyRef" (dict "name" $root.Values.redis.existingSecret "key" .)) -}}
{{- end -}}
{{- /* Exactly the roster's peers, each through its headless Service: the gRPC
     client resolves every ready pod and balances round-robin over them. */ -}}
{{- range $peer := $svc.peers -}}
{{- $_ := set $env (printf "%s_GRPC_ADDR" (upper $peer)) (printf "dns:///%s-headless.%s.svc.%s:%d" $peer $root.Release.Namespace $root.Values.clusterDomain (int $ports.grpc)) -}}
{{- end -}}
{{- if $svc.database -}}
{{- $_ := set $env "DATABASE_URL" (include "social.databaseUrl" . | fromJson) -}}
{{- $_ := set $env "DB_POOL_MIN" (toString (int $cfg.databasePool.min)) -}}
{{- $_ := set $env "DB_POOL_MAX" (toString (int $cfg.databasePool.max)) -}}
{{- end -}}
{{- if $svc.objects -}}
{{- $objects := $root.Values.objects -}}
{{- with $objects.endpointUrl }}{{ $_ := set $env "S3_ENDPOINT_URL" . }}{{ end -}}
{{- $_ := set $env "S3_REGION" (required "objects.region is required" $objects.region) -}}
{{- $_ := set $env "S3_BUCKET" (required "objects.bucket is required" $objects.bucket) -}}
{{- $_ := set $env "MEDIA_PUBLIC_BASE_URL" (required "objects.publicBaseUrl is required" $objects.publicBaseUrl) -}}
{{- with $objects.existingSecret -}}
{{- $_ := set $env "S3_ACCESS_KEY_ID" (dict "secretKeyRef" (dict "name" . "key" $objects.accessKeyIdKey)) -}}
{{- $_ := set $env "S3_SECRET_ACCESS_KEY" (dict "secretKeyRef" (dict "name" . "key" $objects.secretAccessKeyKey)) -}}
{{- end -}}
{{- end -}}
{{- with $root.Values.tracing -}}
{{- if .enabled -}}
{{- /* OpenTelemetry's standard variables; the gateway decides which
     requests are traced, the services follow (parentbased). */ -}}
{{- $_ := set $env "OTEL_EXPORTER_OTLP_ENDPOINT" (printf "http://%s:%d" .collector.host (int .collector.port)) -}}
{{- $_ := set $env "OTEL_TRACES_SAMPLER" "parentbased_traceidratio" -}}
{{- $_ := set $env "OTEL_TRACES_SAMPLER_ARG" (toString .sampleRatio) -}}
{{- end -}}
{{- end -}}
{{- range $name, $value := $cfg.env -}}
{{- $_ := set $env $name (ternary $value (toString $value) (kindIs "map" $value)) -}}
{{- end -}}
{{- include "social.envEntries" $env -}}
{{- end -}}

{{/*
redis.waitReplicas, checked: a whole number of 0 or more (the replicas each
Redis primary has), as the services' REDIS_WAIT_REPLICAS would refuse
anything else at start, one crash-looping pod after another.
*/}}
{{- define "social.redisWaitReplicas" -}}
{{- $n := .Values.redis.waitReplicas -}}
{{- if not (and (or (kindIs "float64" $n) (kindIs "int64" $n) (kindIs "int" $n)) (eq (float64 $n) (floor $n)) (ge (float64 $n) 0.0)) -}}
{{- fail (printf "redis.waitReplicas must be a whole number of 0 or more (the replicas of each Redis primary), not %v" $n) -}}
{{- end -}}
{{- int $n -}}
{{- end -}}

{{/*
A migration Job's environment: what `migrate` reads, and nothing of what
only serving needs (Redis, the object store's keys, the peers). Call with
(dict "root" $ "name" <service> "values" <section>).
*/}}
{{- define "social.migrationEnv" -}}
{{- $env := dict
  "APP_ENV" "production"
  "LOG_LEVEL" .values.logLevel
  "DATABASE_URL" (include "social.databaseUrl" . | fromJson)
-}}
{{- $admin := .root.Values.database.adminSecret -}}
{{- with $admin.name -}}
{{- $_ := set $env "DATABASE_ADMIN_URL" (dict "secretKeyRef" (dict "name" . "key" $admin.key)) -}}
{{- end -}}
{{- include "social.envEntries" $env -}}
{{- end -}}

{{/* Where a service's DATABASE_URL comes from, as JSON. Call with (dict "root" $ "name" <service> "values" <section>). */}}
{{- define "social.databaseUrl" -}}
{{- $secret := .values.databaseSecret.name | default .root.Values.database.existingSecret -}}
{{- $key := .values.databaseSecret.key | default (printf "%s-url" .name) -}}
{{- dict "secretKeyRef" (dict "name" $secret "key" $key) | toJson -}}
{{- end -}}

{{/* `env:` entries from a map of name to value (a string, or a valueFrom map), sorted by name. */}}
{{- define "social.envEntries" -}}
{{- range $name, $value := . }}
- name: {{ $name }}
{{- if kindIs "map" $value }}
  valueFrom: {{- toYaml $value | nindent 4 }}
{{- else }}
  value: {{ $value | quote }}
{{- end }}
{{- end }}
{{- end -}}

{{/* A service's /tmp: the root filesystem is read-only. */}}
{{- define "social.tmpVolume" -}}
- name: tmp
  emptyDir:
    sizeLimit: {{ .tmpSizeLimit }}
{{- end -}}

{{/* NetworkPolicy egress rule for DNS. */}}
{{- define "social.dnsEgress" -}}
{{- $dns := .Values.networkPolicy.dns -}}
- to:
    - namespaceSelector: {{- toYaml $dns.namespaceSelector | nindent 8 }}
      podSelector: {{- toYaml $dns.podSelector | nindent 8 }}
    {{- range $dns.cidrs }}
    - ipBlock: {cidr: {{ . | quote }}}
    {{- end }}
  ports:
    - {port: 53, protocol: UDP}
    - {port: 53, protocol: TCP}
{{- end -}}

{{/*
NetworkPolicy egress rule to CIDRs on ports. Call with a networkPolicy section
({cidrs, ports}); a port is a number, or a range {port: <first>, endPort: <last>}.
*/}}
{{- define "social.cidrEgress" -}}
{{- if and .cidrs .ports -}}
- to:
    {{- range .cidrs }}
    - ipBlock: {cidr: {{ . | quote }}}
    {{- end }}
  ports:
    {{- range .ports }}
    {{- if kindIs "map" . }}
    - {port: {{ int .port }}, endPort: {{ int .endPort }}, protocol: TCP}
    {{- else }}
    - {port: {{ int . }}, protocol: TCP}
    {{- end }}
    {{- end }}
{{- end -}}
{{- end -}}

{{/* NetworkPolicy peer for the monitoring pods. */}}
{{- define "social.monitoringPeer" -}}
{{- $m := .Values.networkPolicy.monitoring -}}
- namespaceSelector: {{- toYaml $m.namespaceSelector | nindent 4 }}
  podSelector: {{- toYaml $m.podSelector | nindent 4 }}
{{- end -}}

{{/* Egress to the trace collector's OTLP port, when tracing is on. */}}
{{- define "social.tracingEgress" -}}
{{- $t := .Values.tracing -}}
{{- if $t.enabled -}}
- to:
    - namespaceSelector: {{- toYaml $t.collector.namespaceSelector | nindent 8 }}
      podSelector: {{- toYaml $t.collector.podSelector | nindent 8 }}
  ports:
    - {port: {{ int $t.collector.port }}, protocol: TCP}
{{- end -}}
{{- end -}}

{{/* An HPA's metrics. Call with the autoscaling values. */}}
{{- define "social.hpaMetrics" -}}
- type: Resource
  resource:
    name: cpu
    target:
      type: Utilization
      averageUtilization: {{ int .targetCPUUtilizationPercentage }}
{{- with .metrics }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Fails when autoscaling cannot work: no CPU request, or min above max. */}}
{{- define "social.checkAutoscaling" -}}
{{- if .values.autoscaling.enabled -}}
{{- if not (and .values.resources .values.resources.requests .values.resources.requests.cpu) -}}
{{- fail (printf "%s: autoscaling on CPU needs resources.requests.cpu" .name) -}}
{{- end -}}
{{- if gt (int .min) (int .max) -}}
{{- fail (printf "%s: autoscaling.minReplicas (%d) is above maxReplicas (%d)" .name (int .min) (int .max)) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
The OpenAPI document (files/openapi.yaml, a link to gateway/openapi.yaml) as
JSON. Helm's YAML parser follows YAML 1.1, where a bare y, n, yes, no, on or
off is a boolean (the project's PyYAML, and YAML 1.2, read a string): a name
that reads as a boolean fails the render rather than serve a wrong document.
*/}}
{{- define "social.openapiJson" -}}
{{- $text := .Files.Get "files/openapi.yaml" -}}
{{- $openapi := $text | fromYaml -}}
{{- if or (not $openapi) (hasKey $openapi "Error") -}}
{{- fail "files/openapi.yaml (a link to gateway/openapi.yaml) is missing or not YAML" -}}
{{- end -}}
{{- $json := toJson $openapi -}}
{{- if or (regexMatch `"(true|false)":` $json) (regexMatch `"required":\[[^\]]*\b(true|false)\b` $json) -}}
{{- fail "files/openapi.yaml: a name reads as a boolean in YAML 1.1 (y/n/yes/no/on/off): quote it in gateway/openapi.yaml" -}}
{{- end -}}
{{- $json -}}
{{- end -}}

{{/*
A HorizontalPodAutoscaler of a Deployment of the same name. Call with (dict
"ctx" <labels context> "min" <n> "max" <n> "autoscaling" <autoscaling values>).
*/}}
{{- define "social.hpa" -}}
{{- $root := .ctx.root -}}
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: {{ .ctx.name }}
  namespace: {{ $root.Release.Namespace }}
  labels: {{- include "social.labels" .ctx | nindent 4 }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ .ctx.name }}
  minReplicas: {{ int .min }}
  maxReplicas: {{ int .max }}
  metrics: {{- include "social.hpaMetrics" .autoscaling | nindent 4 }}
  {{- with .autoscaling.behavior }}
  behavior: {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end -}}

{{/*
A PodDisruptionBudget of the pods of a labels context: maxUnavailable, never
0 (a drain would block). Call with (dict "ctx" <labels context> "budget"
<podDisruptionBudget values>).
*/}}
{{- define "social.pdb" -}}
{{- if has (toString .budget.maxUnavailable) (list "0" "0%" "<nil>" "") -}}
{{- fail (printf "%s.podDisruptionBudget.maxUnavailable must let at least one pod go, or node drains block" .ctx.name) -}}
{{- end -}}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ .ctx.name }}
  namespace: {{ .ctx.root.Release.Namespace }}
  labels: {{- include "social.labels" .ctx | nindent 4 }}
spec:
  maxUnavailable: {{ include "social.intOrString" .budget.maxUnavailable }}
  unhealthyPodEvictionPolicy: AlwaysAllow
  selector:
    matchLabels: {{- include "social.selectorLabels" .ctx | nindent 6 }}
{{- end -}}

{{- /*
Where clients load the images from when not from the gateway: the scheme and
host of objects.publicBaseUrl (a CDN, the bucket's public URL), which the web
client's pages may then load images from (the gateway's
Content-Security-Policy); empty when it is unset.
*/ -}}
{{- define "social.imagesOrigin" -}}
{{- with .Values.objects.publicBaseUrl }}
{{- $url := urlParse . }}
{{- printf "%s://%s" $url.scheme $url.host }}
{{- end }}
{{- end }}
