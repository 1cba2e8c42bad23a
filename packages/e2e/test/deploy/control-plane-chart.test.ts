// The control-plane Helm chart, proven with the real helm: lint, render with defaults and with every
// value set, the embedded-database rules (one replica on a PVC; DATABASE_URL for more), schema errors.
import { readFileSync } from "node:fs"
import { mkdtemp, writeFile } from "node:fs/promises"
import { tmpdir } from "node:os"
import * as path from "node:path"
import { assert, describe, it } from "vitest"
import { parse } from "yaml"
import { controlPlaneChart, find, helm, type K8sObject, parseObjects, setFlags, template, templateError, validateAll } from "./helm.ts"

const render = async (args: Array<string> = []) => parseObjects(await template(controlPlaneChart, args, "streamspace", "streamspace"))
const container = (objects: ReadonlyArray<K8sObject>) => find(objects, "Deployment").spec.template.spec.containers[0]
const env = (objects: ReadonlyArray<K8sObject>): Map<string, any> => new Map(container(objects).env.map((e: any) => [e.name, e]))
const envValues = (objects: ReadonlyArray<K8sObject>) =>
  Object.fromEntries([...env(objects)].filter(([, e]) => "value" in e).map(([k, e]) => [k, e.value]))
const secretRef = (objects: ReadonlyArray<K8sObject>, name: string) => env(objects).get(name)?.valueFrom?.secretKeyRef

const everyValue = {
  replicaCount: 3,
  image: { repository: "registry.example.com/streamspace/control-plane", tag: "1.2.3", pullPolicy: "Always" },
  imagePullSecrets: [{ name: "regcred" }],
  nameOverride: "cp",
  fullnameOverride: "ss",
  config: {
    host: "::",
    port: 9000,
    publicUrl: "https://streamspace.example.com",
    dataDir: "/var/lib/streamspace",
    devMode: false,
    heartbeatInterval: "20s",
    heartbeatMissedLimit: 4,
    commandTimeout: "2m",
    credentialRotationGrace: "2h",
    vncTicketTtl: "30s",
    vncConnectTimeout: "10s",
    replicaLease: "9s",
    vncTunnelWindow: 2097152,
    agentLinkWindow: 4194304,
    pingInterval: "15s",
    jwtClockTolerance: "10s",
    jwtMaxTtl: "12h",
    devTokenTtl: "1h",
    maxBodyBytes: 2097152,
    httpHeadersTimeout: "5s",
    httpRequestTimeout: "20s",
    maxConnectionsPerAddress: 100,
    maxSessionsPerUser: 3,
    sessionCreatesPerMinute: 6,
    maxViewersPerSession: 2,
    maxViewersPerUser: 4,
    sessionMinCpu: "250m",
    sessionMaxCpu: "8",
    sessionMinMemory: "256Mi",
    sessionMaxMemory: "32Gi",
    homeRetention: "720h",
    homeRetentionWarning: "48h",
    homeScanInterval: "10m",
    sessionIdleTimeout: "30m",
    sessionMaxLifetime: "8h",
    sessionIdleAction: "delete",
    sessionWarnBefore: "10m",
    sessionPolicyInterval: "5s",
    logLevel: "debug",
    logFormat: "text",
    logRepeatLimit: 30,
    metricsEnabled: false,
    tlsSecret: "streamspace-tls",
    otel: { OTEL_EXPORTER_OTLP_ENDPOINT: "http://otel-collector:4318", OTEL_SERVICE_NAME: "streamspace-control-plane" },
    extraEnv: [{ name: "NODE_OPTIONS", value: "--max-old-space-size=1536" }]
  },
  database: { url: "postgres://streamspace:pw@postgres:5432/streamspace", existingSecret: "", key: "url" },
  jwt: { existingSecret: "", key: "jwt", secret: "0123456789abcdef0123456789abcdef", jwksUrl: "https://idp.example.com/.well-known/jwks.json", issuer: "https://idp.example.com", audience: "streamspace" },
  bootstrapToken: { existingSecret: "", key: "bootstrap", value: "bootstrap-token-0123456789abcdef0123" },
  clusterSecret: { existingSecret: "", key: "cluster", value: "cluster-secret-0123456789abcdef0123456789" },
  metricsToken: { existingSecret: "", key: "metrics", value: "metrics-token-0123456789abcdef0123456789" },
  serviceMonitor: { enabled: false, interval: "15s", scrapeTimeout: "5s", labels: { release: "prom" } },
  persistence: { enabled: true, existingClaim: "", storageClass: "fast", size: "20Gi", accessModes: ["ReadWriteOnce"] },
  service: { type: "LoadBalancer", port: 443, annotations: { "example.com/lb": "external" } },
  ingress: {
    enabled: true,
    className: "nginx",
    annotations: { "nginx.ingress.kubernetes.io/proxy-read-timeout": "7200", "nginx.ingress.kubernetes.io/proxy-send-timeout": "7200" },
    hosts: [{ host: "streamspace.example.com", paths: [{ path: "/", pathType: "Prefix" }] }],
    tls: [{ secretName: "streamspace-tls", hosts: ["streamspace.example.com"] }]
  },
  resources: { requests: { cpu: "500m", memory: "1Gi" }, limits: { cpu: "4", memory: "4Gi" } },
  podSecurityContext: { runAsNonRoot: true, runAsUser: 20000, runAsGroup: 20000, fsGroup: 20000, seccompProfile: { type: "RuntimeDefault" } },
  securityContext: { allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, runAsNonRoot: true, capabilities: { drop: ["ALL"] } },
  terminationGracePeriodSeconds: 60,
  podDisruptionBudget: { enabled: true, maxUnavailable: 2 },
  topologySpreadConstraints: [{ maxSkew: 2, topologyKey: "topology.kubernetes.io/zone", whenUnsatisfiable: "DoNotSchedule", labelSelector: { matchLabels: { component: "control-plane" } } }],
  startupProbe: { periodSeconds: 3, timeoutSeconds: 2, failureThreshold: 40 },
  livenessProbe: { periodSeconds: 15, timeoutSeconds: 2, failureThreshold: 4 },
  readinessProbe: { periodSeconds: 5, timeoutSeconds: 2, failureThreshold: 2 },
  serviceAccount: { create: true, name: "ss-sa", annotations: { "example.com/x": "y" } },
  podAnnotations: { "example.com/team": "platform" },
  podLabels: { team: "platform" },
  nodeSelector: { "kubernetes.io/os": "linux" },
  tolerations: [{ key: "streamspace", operator: "Exists", effect: "NoSchedule" }],
  affinity: { podAntiAffinity: { preferredDuringSchedulingIgnoredDuringExecution: [{ weight: 100, podAffinityTerm: { topologyKey: "kubernetes.io/hostname", labelSelector: { matchLabels: { component: "control-plane" } } } }] } },
  extraVolumes: [{ name: "extra", emptyDir: {} }],
  extraVolumeMounts: [{ name: "extra", mountPath: "/extra" }]
}

const leafPaths = (value: unknown, prefix = ""): Array<string> =>
  value !== null && typeof value === "object" && !Array.isArray(value) && Object.keys(value).length > 0
    ? Object.entries(value).flatMap(([k, v]) => leafPaths(v, prefix === "" ? k : `${prefix}.${k}`))
    : [prefix]

describe("helm/streamspace-control-plane", () => {
  it("passes helm lint --strict", async () => {
    const r = await helm("lint", "--strict", controlPlaneChart)
    assert.strictEqual(r.code, 0, `${r.stdout}\n${r.stderr}`)
  })

  it("renders one replica on the embedded database with the defaults, all objects valid", async () => {
    const objects = await render()
    assert.deepStrictEqual(objects.map((o) => `${o.kind}/${o.metadata.name}`).sort(), [
      "Deployment/streamspace",
      "PersistentVolumeClaim/streamspace-data",
      "Secret/streamspace-secrets",
      "Service/streamspace",
      "ServiceAccount/streamspace"
    ])
    assert.deepStrictEqual(await validateAll(objects), [])
    const deployment = find(objects, "Deployment")
    assert.strictEqual(deployment.spec.replicas, 1)
    assert.strictEqual(deployment.spec.strategy.type, "Recreate")
    assert.deepStrictEqual(envValues(objects), {
      HOST: "0.0.0.0",
      PORT: "8000",
      DATA_DIR: "/data",
      DEV_MODE: "false",
      HEARTBEAT_INTERVAL: "30s",
      HEARTBEAT_MISSED_LIMIT: "3",
      COMMAND_TIMEOUT: "5m",
      CREDENTIAL_ROTATION_GRACE: "1h",
      VNC_TICKET_TTL: "60s",
      VNC_CONNECT_TIMEOUT: "20s",
      REPLICA_LEASE: "15s",
      VNC_TUNNEL_WINDOW: "1048576",
      AGENT_LINK_WINDOW: "1048576",
      PING_INTERVAL: "20s",
      JWT_CLOCK_TOLERANCE: "30s",
      JWT_MAX_TTL: "24h",
      DEV_TOKEN_TTL: "8h",
      MAX_BODY_BYTES: "1048576",
      HTTP_HEADERS_TIMEOUT: "10s",
      HTTP_REQUEST_TIMEOUT: "30s",
      MAX_CONNECTIONS_PER_ADDRESS: "512",
      MAX_SESSIONS_PER_USER: "10",
      SESSION_CREATES_PER_MINUTE: "20",
      MAX_VIEWERS_PER_SESSION: "8",
      MAX_VIEWERS_PER_USER: "16",
      SESSION_MIN_CPU: "100m",
      SESSION_MAX_CPU: "16",
      SESSION_MIN_MEMORY: "128Mi",
      SESSION_MAX_MEMORY: "64Gi",
      HOME_RETENTION: "off",
      HOME_RETENTION_WARNING: "24h",
      HOME_SCAN_INTERVAL: "5m",
      SESSION_IDLE_TIMEOUT: "0s",
      SESSION_MAX_LIFETIME: "0s",
      SESSION_IDLE_ACTION: "",
      SESSION_WARN_BEFORE: "5m",
      SESSION_POLICY_INTERVAL: "1s",
      LOG_LEVEL: "info",
      LOG_FORMAT: "json",
      LOG_REPEAT_LIMIT: "60",
      METRICS_ENABLED: "true"
    })
    assert.isFalse(env(objects).has("DATABASE_URL"))
    // Secrets: generated once (48 random characters) into the chart's Secret.
    const secret = find(objects, "Secret")
    assert.deepStrictEqual(secretRef(objects, "JWT_SECRET"), { name: "streamspace-secrets", key: "jwt-secret" })
    assert.deepStrictEqual(secretRef(objects, "AGENT_BOOTSTRAP_TOKEN"), { name: "streamspace-secrets", key: "bootstrap-token" })
    for (const key of ["jwt-secret", "bootstrap-token"]) assert.match(Buffer.from(secret.data[key], "base64").toString(), /^[A-Za-z0-9]{48}$/)
    // The embedded database lives on the PVC at DATA_DIR; the PVC survives helm uninstall.
    const pvc = find(objects, "PersistentVolumeClaim")
    assert.strictEqual(pvc.metadata.annotations["helm.sh/resource-policy"], "keep")
    assert.deepStrictEqual(pvc.spec.accessModes, ["ReadWriteOnce"])
    const pod = deployment.spec.template.spec
    assert.deepInclude(pod.volumes, { name: "data", persistentVolumeClaim: { claimName: "streamspace-data" } })
    const c = container(objects)
    assert.deepInclude(c.volumeMounts, { name: "data", mountPath: "/data" })
    // Health on GET /api/v1/health on PORT, readiness on /readyz (503 while draining); restricted security
    // context; no API token mounted.
    for (const probe of ["startupProbe", "livenessProbe"]) {
      assert.deepStrictEqual(c[probe].httpGet, { path: "/api/v1/health", port: "http", scheme: "HTTP" }, probe)
    }
    assert.deepStrictEqual(c.readinessProbe.httpGet, { path: "/readyz", port: "http", scheme: "HTTP" })
    // One replica on the embedded database: no cluster secret, no peer address, no PodDisruptionBudget, no spread.
    for (const v of ["CLUSTER_SECRET", "PEER_URL", "POD_IP"]) assert.isFalse(env(objects).has(v), v)
    assert.isFalse(objects.some((o) => o.kind === "PodDisruptionBudget"))
    assert.isUndefined(pod.topologySpreadConstraints)
    assert.deepStrictEqual(c.ports, [{ name: "http", containerPort: 8000, protocol: "TCP" }])
    assert.deepStrictEqual(c.securityContext, { allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, runAsNonRoot: true, capabilities: { drop: ["ALL"] } })
    assert.deepInclude(pod.securityContext, { runAsNonRoot: true, runAsUser: 10001, seccompProfile: { type: "RuntimeDefault" } })
    assert.isFalse(pod.automountServiceAccountToken)
    assert.isFalse(pod.enableServiceLinks)
    assert.deepStrictEqual(find(objects, "Service").spec.ports, [{ name: "http", port: 80, targetPort: "http", protocol: "TCP" }])
  })

  it("fails rendering more than one replica without DATABASE_URL, with a clear message", async () => {
    const stderr = await templateError(controlPlaneChart, ["--set", "replicaCount=2"])
    assert.match(stderr, /replicaCount=2 needs an external PostgreSQL: set database\.url \(DATABASE_URL\) or database\.existingSecret/)
    // With PostgreSQL: no PVC, DATABASE_URL from a Secret, rolling updates.
    for (const db of [["--set-string", "database.url=postgres://u:p@db:5432/s"], ["--set", "database.existingSecret=pg"]]) {
      const objects = await render(["--set", "replicaCount=2", ...db])
      assert.deepStrictEqual(await validateAll(objects), [])
      assert.isFalse(objects.some((o) => o.kind === "PersistentVolumeClaim"))
      assert.strictEqual(find(objects, "Deployment").spec.strategy.type, "RollingUpdate")
      assert.deepStrictEqual(secretRef(objects, "DATABASE_URL"), db[1]!.startsWith("database.url")
        ? { name: "streamspace-database", key: "database-url" }
        : { name: "pg", key: "database-url" })
    }
  })

  it("values-ha.yaml: three replicas on PostgreSQL, a PodDisruptionBudget, spread over nodes and zones, CLUSTER_SECRET generated and kept, PEER_URL from the pod IP, readiness on /readyz", async () => {
    const objects = await render(["--values", path.join(controlPlaneChart, "values-ha.yaml")])
    assert.deepStrictEqual(await validateAll(objects), [])
    const deployment = find(objects, "Deployment")
    assert.strictEqual(deployment.spec.replicas, 3)
    assert.strictEqual(deployment.spec.strategy.type, "RollingUpdate")
    assert.isFalse(objects.some((o) => o.kind === "PersistentVolumeClaim"))
    assert.deepStrictEqual(secretRef(objects, "DATABASE_URL"), { name: "streamspace-database", key: "database-url" })
    // The chart's Secret holds a generated cluster secret (kept across upgrades by lookup).
    assert.deepStrictEqual(secretRef(objects, "CLUSTER_SECRET"), { name: "streamspace-secrets", key: "cluster-secret" })
    assert.match(Buffer.from(find(objects, "Secret", "streamspace-secrets").data["cluster-secret"], "base64").toString(), /^[A-Za-z0-9]{48}$/)
    assert.deepStrictEqual(env(objects).get("POD_IP").valueFrom, { fieldRef: { fieldPath: "status.podIP" } })
    assert.strictEqual(env(objects).get("PEER_URL").value, "http://$(POD_IP):8000")
    const pdb = find(objects, "PodDisruptionBudget")
    assert.strictEqual(pdb.spec.maxUnavailable, 1)
    assert.deepStrictEqual(pdb.spec.selector.matchLabels, deployment.spec.selector.matchLabels)
    const spread = deployment.spec.template.spec.topologySpreadConstraints
    assert.deepStrictEqual(spread.map((t: any) => `${t.topologyKey}:${t.maxSkew}:${t.whenUnsatisfiable}`), [
      "kubernetes.io/hostname:1:ScheduleAnyway",
      "topology.kubernetes.io/zone:1:ScheduleAnyway"
    ])
    for (const t of spread) assert.deepStrictEqual(t.labelSelector.matchLabels, deployment.spec.selector.matchLabels)
    assert.strictEqual(container(objects).readinessProbe.httpGet.path, "/readyz")
    // Bring your own cluster secret: no generated one.
    const own = await render(["--values", path.join(controlPlaneChart, "values-ha.yaml"), "--set", "clusterSecret.existingSecret=cs", "--set", "bootstrapToken.existingSecret=b", "--set", "jwt.existingSecret=j"])
    assert.deepStrictEqual(secretRef(own, "CLUSTER_SECRET"), { name: "cs", key: "cluster-secret" })
    assert.isFalse(own.some((o) => o.kind === "Secret"))
    const stderr = await templateError(controlPlaneChart, ["--values", path.join(controlPlaneChart, "values-ha.yaml"), "--set", "clusterSecret.existingSecret=cs", "--set-string", `clusterSecret.value=${"c".repeat(32)}`])
    assert.match(stderr, /clusterSecret: set either clusterSecret\.value or clusterSecret\.existingSecret, not both/)
  })

  it("covers every value of values.yaml in the every-value test", () => {
    const defaults = parse(readFileSync(path.join(controlPlaneChart, "values.yaml"), "utf8"))
    const covered = leafPaths(everyValue)
    const missing = leafPaths(defaults).filter((p) => !covered.includes(p) && !covered.some((c) => c.startsWith(`${p}.`)))
    assert.deepStrictEqual(missing, [], "values added to values.yaml must be added to everyValue")
  })

  it("sets every variable the control plane reads (packages/control-plane/src/ControlPlaneConfig.ts and the database settings it embeds)", async () => {
    const source = ["ControlPlaneConfig.ts", "Database.ts"]
      .map((file) => readFileSync(path.join(controlPlaneChart, "../../packages/control-plane/src", file), "utf8"))
      .join("\n")
    const read = new Set([...source.matchAll(/"([A-Z][A-Z0-9_]{2,})"/g)].map((m) => m[1]!))
    // Development-only switches (set them with config.extraEnv if ever needed); OTEL_* pass through config.otel.
    for (const v of ["DATABASE_IN_MEMORY", "DEV_TOKEN_TTL"]) read.delete(v)
    const dir = await mkdtemp(path.join(tmpdir(), "cp-values-"))
    await writeFile(path.join(dir, "values.json"), JSON.stringify(everyValue))
    const rendered = env(await render(["--values", path.join(dir, "values.json")]))
    assert.deepStrictEqual([...read].filter((v) => !rendered.has(v)).sort(), [], "control-plane variables without a chart value: add them to values.yaml and templates/deployment.yaml")
  })

  it("renders every documented value into valid objects", async () => {
    const dir = await mkdtemp(path.join(tmpdir(), "cp-values-"))
    await writeFile(path.join(dir, "values.json"), JSON.stringify(everyValue))
    const objects = await render(["--values", path.join(dir, "values.json")])
    assert.deepStrictEqual(objects.map((o) => `${o.kind}/${o.metadata.name}`).sort(), [
      "Deployment/ss",
      "Ingress/ss",
      "PodDisruptionBudget/ss",
      "Secret/ss-database",
      "Secret/ss-secrets",
      "Service/ss",
      "ServiceAccount/ss-sa"
    ])
    assert.deepStrictEqual(await validateAll(objects), [])
    assert.deepStrictEqual(envValues(objects), {
      HOST: "::",
      PORT: "9000",
      PUBLIC_URL: "https://streamspace.example.com",
      DATA_DIR: "/var/lib/streamspace",
      JWT_JWKS_URL: "https://idp.example.com/.well-known/jwks.json",
      JWT_ISSUER: "https://idp.example.com",
      JWT_AUDIENCE: "streamspace",
      TLS_CERT_FILE: "/etc/streamspace/tls/tls.crt",
      TLS_KEY_FILE: "/etc/streamspace/tls/tls.key",
      DEV_MODE: "false",
      HEARTBEAT_INTERVAL: "20s",
      HEARTBEAT_MISSED_LIMIT: "4",
      COMMAND_TIMEOUT: "2m",
      CREDENTIAL_ROTATION_GRACE: "2h",
      VNC_TICKET_TTL: "30s",
      VNC_CONNECT_TIMEOUT: "10s",
      REPLICA_LEASE: "9s",
      VNC_TUNNEL_WINDOW: "2097152",
      AGENT_LINK_WINDOW: "4194304",
      PING_INTERVAL: "15s",
      JWT_CLOCK_TOLERANCE: "10s",
      JWT_MAX_TTL: "12h",
      DEV_TOKEN_TTL: "1h",
      MAX_BODY_BYTES: "2097152",
      HTTP_HEADERS_TIMEOUT: "5s",
      HTTP_REQUEST_TIMEOUT: "20s",
      MAX_CONNECTIONS_PER_ADDRESS: "100",
      MAX_SESSIONS_PER_USER: "3",
      SESSION_CREATES_PER_MINUTE: "6",
      MAX_VIEWERS_PER_SESSION: "2",
      MAX_VIEWERS_PER_USER: "4",
      SESSION_MIN_CPU: "250m",
      SESSION_MAX_CPU: "8",
      SESSION_MIN_MEMORY: "256Mi",
      SESSION_MAX_MEMORY: "32Gi",
      HOME_RETENTION: "720h",
      HOME_RETENTION_WARNING: "48h",
      HOME_SCAN_INTERVAL: "10m",
      SESSION_IDLE_TIMEOUT: "30m",
      SESSION_MAX_LIFETIME: "8h",
      SESSION_IDLE_ACTION: "delete",
      SESSION_WARN_BEFORE: "10m",
      SESSION_POLICY_INTERVAL: "5s",
      LOG_LEVEL: "debug",
      LOG_FORMAT: "text",
      LOG_REPEAT_LIMIT: "30",
      METRICS_ENABLED: "false",
      OTEL_EXPORTER_OTLP_ENDPOINT: "http://otel-collector:4318",
      OTEL_SERVICE_NAME: "streamspace-control-plane",
      PEER_URL: "https://$(POD_IP):9000",
      NODE_OPTIONS: "--max-old-space-size=1536"
    })
    assert.deepStrictEqual(env(objects).get("POD_IP").valueFrom, { fieldRef: { fieldPath: "status.podIP" } })
    assert.deepStrictEqual(secretRef(objects, "CLUSTER_SECRET"), { name: "ss-secrets", key: "cluster" })
    assert.deepStrictEqual(find(objects, "PodDisruptionBudget").spec.maxUnavailable, 2)
    assert.deepStrictEqual(find(objects, "Deployment").spec.template.spec.topologySpreadConstraints, everyValue.topologySpreadConstraints)
    assert.deepStrictEqual(secretRef(objects, "DATABASE_URL"), { name: "ss-database", key: "url" })
    assert.deepStrictEqual(secretRef(objects, "JWT_SECRET"), { name: "ss-secrets", key: "jwt" })
    assert.deepStrictEqual(secretRef(objects, "AGENT_BOOTSTRAP_TOKEN"), { name: "ss-secrets", key: "bootstrap" })
    assert.deepStrictEqual(secretRef(objects, "METRICS_TOKEN"), { name: "ss-secrets", key: "metrics" })
    const secrets = find(objects, "Secret", "ss-secrets").data
    assert.strictEqual(Buffer.from(secrets.metrics, "base64").toString(), everyValue.metricsToken.value)
    assert.strictEqual(Buffer.from(secrets.jwt, "base64").toString(), everyValue.jwt.secret)
    assert.strictEqual(Buffer.from(secrets.bootstrap, "base64").toString(), everyValue.bootstrapToken.value)
    assert.strictEqual(Buffer.from(secrets.cluster, "base64").toString(), everyValue.clusterSecret.value)
    assert.strictEqual(Buffer.from(find(objects, "Secret", "ss-database").data.url, "base64").toString(), everyValue.database.url)
    const c = container(objects)
    for (const probe of ["startupProbe", "livenessProbe", "readinessProbe"]) assert.strictEqual(c[probe].httpGet.scheme, "HTTPS")
    assert.deepStrictEqual(c.ports, [{ name: "http", containerPort: 9000, protocol: "TCP" }])
    const ingress = find(objects, "Ingress").spec
    assert.strictEqual(ingress.ingressClassName, "nginx")
    assert.deepStrictEqual(ingress.rules[0].http.paths[0].backend, { service: { name: "ss", port: { name: "http" } } })
    assert.deepStrictEqual(ingress.tls, everyValue.ingress.tls)
    assert.strictEqual(find(objects, "Service").spec.type, "LoadBalancer")
  })

  it("takes JWT and bootstrap secrets from existing Secrets, or JWKS alone, without creating its own", async () => {
    const objects = await render(["--set", "jwt.existingSecret=idp", "--set", "bootstrapToken.existingSecret=boot"])
    assert.isFalse(objects.some((o) => o.kind === "Secret"))
    assert.deepStrictEqual(secretRef(objects, "JWT_SECRET"), { name: "idp", key: "jwt-secret" })
    assert.deepStrictEqual(secretRef(objects, "AGENT_BOOTSTRAP_TOKEN"), { name: "boot", key: "bootstrap-token" })
    const jwks = await render(["--set-string", "jwt.jwksUrl=https://idp/jwks", "--set", "bootstrapToken.existingSecret=boot"])
    assert.isFalse(jwks.some((o) => o.kind === "Secret"))
    assert.isFalse(env(jwks).has("JWT_SECRET"))
  })

  it("rejects bad values with a message naming the value", async () => {
    const cases: Array<[Record<string, string | number | boolean>, RegExp]> = [
      [{ "config.port": 0 }, /at '\/config\/port': minimum: got 0, want 1/],
      [{ "config.logLevel": "loud" }, /at '\/config\/logLevel': value must be one of/],
      [{ "config.commandTimeout": "five minutes" }, /at '\/config\/commandTimeout'/],
      [{ "config.heartbeatMissedLimit": 0 }, /at '\/config\/heartbeatMissedLimit'/],
      [{ "config.dataDir": "data" }, /at '\/config\/dataDir'/],
      [{ "config.otel.JAEGER_ENDPOINT": "x" }, /'JAEGER_ENDPOINT' does not match pattern '\^OTEL_/],
      [{ "database.url": "mysql://db/x" }, /at '\/database\/url'/],
      [{ "jwt.secret": "short" }, /at '\/jwt\/secret'/],
      [{ "bootstrapToken.value": "b".repeat(31) }, /at '\/bootstrapToken\/value'/],
      [{ "metricsToken.value": "m".repeat(31) }, /at '\/metricsToken\/value'/],
      [{ "config.jwtMaxTtl": "forever" }, /at '\/config\/jwtMaxTtl'/],
      [{ "persistence.size": "big" }, /at '\/persistence\/size'/],
      [{ replicaCount: -1 }, /at '\/replicaCount': minimum: got -1, want 0/],
      [{ "config.prot": 1 }, /at '\/config': additional properties 'prot' not allowed/]
    ]
    // helm reports every schema violation at once: one render with all the bad values.
    const stderr = await templateError(controlPlaneChart, cases.flatMap(([values]) => setFlags(values)))
    assert.match(stderr, /values don't meet the specifications of the schema/)
    for (const [values, expected] of cases) assert.match(stderr, expected, `${JSON.stringify(values)} not reported in:\n${stderr}`)
    assert.match(await templateError(controlPlaneChart, ["--set-string", "database.url=postgres://a/b", "--set", "database.existingSecret=x"]), /set either database\.url or database\.existingSecret/)
    assert.match(await templateError(controlPlaneChart, ["--set-string", `metricsToken.value=${"m".repeat(40)}`, "--set", "metricsToken.existingSecret=x"]), /set either metricsToken\.value or metricsToken\.existingSecret/)
  })

  it("METRICS_TOKEN: unset by default (/metrics open); from an existing Secret for a ServiceMonitor's bearerTokenSecret", async () => {
    assert.isFalse(env(await render()).has("METRICS_TOKEN"))
    const objects = await render(["--set", "metricsToken.existingSecret=prom-scrape"])
    assert.deepStrictEqual(secretRef(objects, "METRICS_TOKEN"), { name: "prom-scrape", key: "metrics-token" })
    assert.notProperty(find(objects, "Secret", "streamspace-secrets").data, "metrics-token")
  })

  it("serviceMonitor.enabled adds a ServiceMonitor on the http port that scrapes with the METRICS_TOKEN Secret", async () => {
    const api = ["--api-versions", "monitoring.coreos.com/v1/ServiceMonitor"]
    const open = find(await render(["--set", "serviceMonitor.enabled=true", ...api]), "ServiceMonitor")
    assert.deepStrictEqual(open.spec.endpoints, [{ port: "http", path: "/metrics", scheme: "http", interval: "30s", scrapeTimeout: "10s" }])
    const withToken = await render(["--set", "serviceMonitor.enabled=true", "--set", "serviceMonitor.labels.release=prom", "--set", "metricsToken.existingSecret=prom-scrape", "--set", "config.tlsSecret=tls", ...api])
    const monitor = find(withToken, "ServiceMonitor")
    assert.strictEqual(monitor.metadata.labels.release, "prom")
    assert.deepStrictEqual(monitor.spec.endpoints[0].bearerTokenSecret, { name: "prom-scrape", key: "metrics-token" })
    assert.strictEqual(monitor.spec.endpoints[0].scheme, "https")
    // It selects the Service whose port is named http.
    const service = find(withToken, "Service")
    assert.deepInclude(service.spec.selector, monitor.spec.selector.matchLabels)
    assert.strictEqual(service.spec.ports[0].name, "http")
    assert.match(await templateError(controlPlaneChart, ["--set", "serviceMonitor.enabled=true"]), /needs the Prometheus Operator's ServiceMonitor CRD/)
  })
})
