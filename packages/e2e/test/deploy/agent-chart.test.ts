// The agent Helm chart, proven with the real helm: lint, render with defaults and with every value
// set, schema and template checks for bad values, every object against the Kubernetes schemas, and
// the rendered Deployment (env, probes, ports, security context) against the agent guide.
import { readFileSync } from "node:fs"
import * as path from "node:path"
import { assert, describe, it } from "vitest"
import { parse } from "yaml"
import { agentChart, find, helm, type K8sObject, parseObjects, setFlags, template, templateError, validateAll } from "./helm.ts"

const requiredValues = path.join(agentChart, "ci/required-values.yaml")
const required = ["--values", requiredValues]

const envOf = (deployment: K8sObject): Map<string, any> => {
  const container = deployment.spec.template.spec.containers.find((c: any) => c.name === "agent")
  return new Map(container.env.map((e: any) => [e.name, e]))
}
const envValues = (deployment: K8sObject): Record<string, string> =>
  Object.fromEntries([...envOf(deployment)].filter(([, e]) => "value" in e).map(([k, e]) => [k, e.value]))

// The agent guide's Configuration Reference and issue 4's defaults: what a default install sets (not
// VNC_BUFFER_SIZE: the agent never used it, and the chart no longer sets it).
const guideDefaults: Record<string, string> = {
  AGENT_ID: "k8s-prod-us-east-1",
  CONTROL_PLANE_URL: "wss://streamspace.example.com",
  PLATFORM: "kubernetes",
  NAMESPACE: "streamspace",
  HEARTBEAT_INTERVAL: "30s",
  RECONNECT_DELAY: "5s",
  MAX_RECONNECT_DELAY: "5m",
  MAX_SESSIONS: "100",
  RECONNECT_RESET_AFTER: "1m",
  PING_INTERVAL: "20s",
  PING_TIMEOUT: "10s",
  SESSION_IMAGE_PULL_POLICY: "IfNotPresent",
  SESSION_DEFAULT_CPU: "1000m",
  SESSION_DEFAULT_MEMORY: "2Gi",
  SESSION_DEFAULT_STORAGE: "10Gi",
  SESSION_EPHEMERAL_STORAGE_LIMIT: "10Gi",
  SESSION_SERVICE_TYPE: "ClusterIP",
  WARM_POOL_INTERVAL: "10s",
  VNC_PORT: "5900",
  VNC_TUNNEL_TIMEOUT: "1h",
  VNC_TUNNEL_WINDOW: "1048576",
  LOG_LEVEL: "info",
  LOG_FORMAT: "json",
  LOG_REPEAT_LIMIT: "60",
  METRICS_ENABLED: "true",
  METRICS_PORT: "9090",
  HEALTH_PORT: "8080",
  COMMAND_TIMEOUT: "5m",
  GRACEFUL_SHUTDOWN_TIMEOUT: "30s",
  MAX_CONCURRENT_OPERATIONS: "10",
  ALLOW_INSECURE_TRANSPORT: "false",
  AGENT_CREDENTIAL_SECRET: "streamspace-k8s-agent-credential"
}

// Every value of values.yaml set to a non-default (leaf paths; see the coverage test below).
/** What a cluster with the Prometheus Operator serves (helm template knows no cluster's APIs otherwise). */
const withServiceMonitorApi = ["--api-versions", "monitoring.coreos.com/v1/ServiceMonitor"]

const everyValue = {
  agent: {
    id: "k8s-eu-west",
    controlPlaneUrl: "wss://cp.example.com:8443/",
    platform: "kubernetes",
    region: "eu-west-1",
    namespace: "tenant-a",
    kubeconfig: "/etc/kube/config",
    resources: { requests: { cpu: "250m", memory: "256Mi" }, limits: { cpu: "2", memory: "2Gi" } },
    replicaCount: 1,
    priority: "high",
    priorityClassName: "streamspace-agents",
    heartbeatInterval: "15s",
    reconnectDelay: "2s",
    maxReconnectDelay: "10m",
    maxSessions: 50,
    reconnectResetAfter: "2m",
    pingInterval: "15s",
    pingTimeout: "5s",
    session: {
      imagePullPolicy: "Always",
      defaultCpu: "500m",
      defaultMemory: "1Gi",
      defaultStorage: "20Gi",
      ephemeralStorageLimit: "4Gi",
      storageClass: "gp3",
      serviceType: "NodePort",
      warmPoolInterval: "5s",
      podTemplate: { apiVersion: "v1", kind: "Pod", spec: { nodeSelector: { workload: "streamspace" } } }
    },
    vnc: { port: 5901, tunnelTimeout: "2h", tunnelWindow: 2097152 },
    logging: { level: "debug", format: "text", repeatLimit: 30 },
    metrics: { enabled: true, port: 9191 },
    healthPort: 8181,
    healthHost: "0.0.0.0",
    commandTimeout: "3m",
    gracefulShutdownTimeout: "1m",
    maxConcurrentOperations: 5,
    proxy: { httpsProxy: "http://proxy.corp:3128", httpProxy: "http://proxy.corp:3128", noProxy: "10.0.0.0/8,.svc" },
    controlPlaneCA: { configMap: "corp-ca", secret: "", key: "root.pem" },
    allowInsecureTransport: false,
    credentialSecret: "agent-eu-credential",
    otel: { OTEL_EXPORTER_OTLP_ENDPOINT: "http://otel-collector:4318", OTEL_SERVICE_NAME: "streamspace-agent-eu" },
    extraEnv: [{ name: "NODE_OPTIONS", value: "--max-old-space-size=768" }]
  },
  token: { existingSecret: "", key: "bootstrap", value: "s3cret-bootstrap-token" },
  image: { repository: "registry.example.com/streamspace/agent", tag: "1.2.3", pullPolicy: "Always" },
  imagePullSecrets: [{ name: "regcred" }],
  nameOverride: "agent",
  fullnameOverride: "agent-eu",
  rbac: { create: true },
  serviceAccount: { create: true, name: "agent-eu-sa", annotations: { "example.com/role": "agent" } },
  affinity: {
    podAntiAffinity: { enabled: true },
    nodeAffinity: {
      requiredDuringSchedulingIgnoredDuringExecution: {
        nodeSelectorTerms: [{ matchExpressions: [{ key: "streamspace", operator: "In", values: ["agent"] }] }]
      }
    }
  },
  nodeSelector: { "kubernetes.io/os": "linux" },
  tolerations: [{ key: "streamspace", operator: "Equal", value: "agents", effect: "NoSchedule" }],
  podAnnotations: { "example.com/team": "platform" },
  podLabels: { team: "platform" },
  podSecurityContext: { runAsNonRoot: true, runAsUser: 20000, runAsGroup: 20000, fsGroup: 20000, seccompProfile: { type: "RuntimeDefault" } },
  securityContext: { allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, runAsNonRoot: true, capabilities: { drop: ["ALL"] } },
  terminationGracePeriodSeconds: 90,
  livenessProbe: { initialDelaySeconds: 20, periodSeconds: 20, timeoutSeconds: 3, failureThreshold: 5 },
  readinessProbe: { initialDelaySeconds: 5, periodSeconds: 5, timeoutSeconds: 3, failureThreshold: 2 },
  service: { type: "ClusterIP", annotations: { "example.com/scrape": "true" } },
  serviceMonitor: { enabled: true, interval: "15s", scrapeTimeout: "5s", labels: { release: "prometheus" } },
  networkPolicy: {
    enabled: true,
    ingressFrom: [{ namespaceSelector: { matchLabels: { "kubernetes.io/metadata.name": "monitoring" } } }],
    apiServer: { ports: [6443], cidrs: ["10.96.0.1/32"] },
    controlPlane: { port: null, to: [{ ipBlock: { cidr: "203.0.113.0/24" } }] },
    dns: true,
    extraEgress: [{ ports: [{ protocol: "TCP", port: 3128 }] }]
  },
  sessionNetworkPolicy: {
    enabled: true,
    ingress: [{ from: [{ podSelector: { matchLabels: { app: "recorder" } } }], ports: [{ protocol: "TCP", port: 5900 }] }],
    denyEgressTo: ["169.254.169.254/32", "fd00:ec2::254/128", "10.0.0.0/8"],
    apiServerCidrs: ["192.0.2.10/32"],
    dns: true,
    extraEgress: [{ to: [{ ipBlock: { cidr: "10.1.2.3/32" } }], ports: [{ protocol: "TCP", port: 443 }] }]
  },
  namespace: { create: true, podSecurity: { enforce: "restricted", audit: "restricted", warn: "restricted" } },
  extraVolumes: [{ name: "kubeconfig", secret: { secretName: "remote-kubeconfig" } }],
  extraVolumeMounts: [{ name: "kubeconfig", mountPath: "/etc/kube", readOnly: true }]
}

const leafPaths = (value: unknown, prefix = ""): Array<string> =>
  value !== null && typeof value === "object" && !Array.isArray(value) && Object.keys(value).length > 0
    ? Object.entries(value).flatMap(([k, v]) => leafPaths(v, prefix === "" ? k : `${prefix}.${k}`))
    : [prefix]

const writeValues = async (values: unknown): Promise<string> => {
  const { mkdtemp, writeFile } = await import("node:fs/promises")
  const { tmpdir } = await import("node:os")
  const dir = await mkdtemp(path.join(tmpdir(), "agent-values-"))
  const file = path.join(dir, "values.json")
  await writeFile(file, JSON.stringify(values))
  return file
}

describe("helm/streamspace-agent", () => {
  it("passes helm lint --strict, with the chart defaults and with the required values", async () => {
    for (const args of [[], required]) {
      const r = await helm("lint", "--strict", agentChart, ...args)
      assert.strictEqual(r.code, 0, `helm lint --strict ${args.join(" ")} failed:\n${r.stdout}\n${r.stderr}`)
    }
  })

  it("renders valid Kubernetes objects with the defaults: ServiceAccount, Role, RoleBinding, credential Secret, Service, Deployment, sessions' NetworkPolicy", async () => {
    const objects = parseObjects(await template(agentChart, required))
    assert.deepStrictEqual(objects.map((o) => `${o.kind}/${o.metadata.name}`).sort(), [
      "Deployment/streamspace-k8s-agent",
      "NetworkPolicy/streamspace-k8s-agent-sessions",
      "Role/streamspace-k8s-agent",
      "RoleBinding/streamspace-k8s-agent",
      "Secret/streamspace-k8s-agent-credential",
      "Service/streamspace-k8s-agent",
      "ServiceAccount/streamspace-k8s-agent"
    ])
    assert.deepStrictEqual(await validateAll(objects), [])
    for (const o of objects) assert.strictEqual(o.metadata.namespace, "streamspace", `${o.kind} namespace`)
    // Namespaced permissions only.
    assert.isFalse(objects.some((o) => o.kind === "ClusterRole" || o.kind === "ClusterRoleBinding"))
  })

  it("renders the agent Deployment the guide describes: env with its defaults, probes, ports, security context", async () => {
    const objects = parseObjects(await template(agentChart, required))
    const deployment = find(objects, "Deployment")
    const spec = deployment.spec
    assert.strictEqual(spec.replicas, 1)
    assert.strictEqual(spec.strategy.type, "Recreate")
    assert.deepInclude(spec.selector.matchLabels, { app: "streamspace", component: "k8s-agent" })
    assert.deepInclude(spec.template.metadata.labels, spec.selector.matchLabels)
    const pod = spec.template.spec
    assert.strictEqual(pod.serviceAccountName, "streamspace-k8s-agent")
    assert.isAbove(pod.terminationGracePeriodSeconds, 30, "grace period above GRACEFUL_SHUTDOWN_TIMEOUT")
    assert.isFalse(pod.enableServiceLinks, "no service-link env vars that could shadow settings")
    assert.strictEqual(pod.containers.length, 1)
    const c = pod.containers[0]
    assert.strictEqual(c.name, "agent")
    assert.strictEqual(c.image, "streamspace/k8s-agent:0.1.0")

    // Env: every default of the guide, and nothing that would make the id depend on the pod.
    assert.deepStrictEqual(envValues(deployment), guideDefaults)
    const env = envOf(deployment)
    assert.deepStrictEqual(env.get("AGENT_TOKEN").valueFrom, { secretKeyRef: { name: "streamspace-k8s-agent-token", key: "token" } })
    for (const e of env.values()) assert.isUndefined(e.valueFrom?.fieldRef, `${e.name} must not come from the pod (fieldRef)`)
    // Optional variables with empty defaults are left unset (the agent's own default applies).
    for (const name of ["REGION", "KUBECONFIG", "SESSION_STORAGE_CLASS", "SESSION_POD_TEMPLATE", "HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY", "CONTROL_PLANE_CA_FILE"]) {
      assert.isFalse(env.has(name), `${name} unset by default`)
    }

    // Probes and ports as in the guide.
    assert.deepStrictEqual(c.livenessProbe, { httpGet: { path: "/health", port: 8080 }, initialDelaySeconds: 30, periodSeconds: 30, timeoutSeconds: 5, failureThreshold: 3 })
    assert.deepStrictEqual(c.readinessProbe, { httpGet: { path: "/ready", port: 8080 }, initialDelaySeconds: 10, periodSeconds: 10, timeoutSeconds: 5, failureThreshold: 3 })
    assert.deepStrictEqual(c.ports, [
      { name: "health", containerPort: 8080, protocol: "TCP" },
      { name: "metrics", containerPort: 9090, protocol: "TCP" }
    ])
    assert.deepStrictEqual(c.resources, { requests: { cpu: "500m", memory: "512Mi" }, limits: { cpu: "1000m", memory: "1Gi" } })

    // Pod Security "restricted": non-root numeric user, no escalation, no capabilities, RuntimeDefault seccomp.
    assert.deepInclude(pod.securityContext, { runAsNonRoot: true, runAsUser: 10001, seccompProfile: { type: "RuntimeDefault" } })
    assert.deepStrictEqual(c.securityContext, { allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, runAsNonRoot: true, capabilities: { drop: ["ALL"] } })
    assert.deepInclude(c.volumeMounts, { name: "tmp", mountPath: "/tmp" })

    // The Service exposes health and metrics under the names the ServiceMonitor uses.
    const service = find(objects, "Service")
    assert.deepStrictEqual(service.spec.selector, spec.selector.matchLabels)
    assert.deepStrictEqual(service.spec.ports.map((p: any) => `${p.name}:${p.port}`), ["health:8080", "metrics:9090"])
  })

  it("keeps the agent id stable: the same id for every render and pod, independent of the release's pods", async () => {
    const a = envOf(find(parseObjects(await template(agentChart, required)), "Deployment")).get("AGENT_ID")
    const b = envOf(find(parseObjects(await template(agentChart, [...required, "--set", "image.tag=9.9.9"])), "Deployment")).get("AGENT_ID")
    assert.deepStrictEqual(a, { name: "AGENT_ID", value: "k8s-prod-us-east-1" })
    assert.deepStrictEqual(b, a)
  })

  it("builds the Role from files/role-rules.yaml: namespaced, no wildcards, no escalation, no reading all Secrets", async () => {
    // Which permissions the agent needs is proven by the agent's own tests, which run it under this
    // file; here: the Role is that file, and the file never grants what no agent should have.
    const fileRules = parse(readFileSync(path.join(agentChart, "files/role-rules.yaml"), "utf8"))
    const objects = parseObjects(await template(agentChart, required))
    const role = find(objects, "Role")
    // The file, with the credential Secret's name in place of the resourceNames placeholder.
    assert.deepStrictEqual(
      role.rules,
      fileRules.map((r: any) => (r.resourceNames === undefined ? r : { ...r, resourceNames: ["streamspace-k8s-agent-credential"] }))
    )
    assert.isAbove(role.rules.length, 0)
    const clusterScoped = ["namespaces", "nodes", "persistentvolumes", "clusterroles", "clusterrolebindings", "storageclasses"]
    for (const r of role.rules) {
      const where = JSON.stringify(r)
      for (const list of [r.apiGroups, r.resources, r.verbs]) assert.notInclude(list, "*", `no wildcard: ${where}`)
      for (const verb of ["escalate", "bind", "impersonate", "deletecollection"]) assert.notInclude(r.verbs, verb, where)
      for (const res of r.resources) assert.notInclude(clusterScoped, res, `cluster-scoped resource in a Role: ${where}`)
      if (r.resources.includes("secrets")) {
        assert.notInclude(r.verbs, "list", "listing Secrets would expose every Secret of the namespace")
        assert.notInclude(r.verbs, "watch", "watching Secrets would expose every Secret of the namespace")
        assert.deepStrictEqual(r.resourceNames, ["streamspace-k8s-agent-credential"], "only the agent's own credential Secret")
      }
      assert.isUndefined(r.nonResourceURLs, where)
    }
    // The VNC tunnel needs both verbs on pods/portforward (GET upgrade; create checked since 1.35).
    assert.includeMembers(role.rules.find((r: any) => r.resources.includes("pods/portforward"))?.verbs ?? [], ["get", "create"])
    const binding = find(objects, "RoleBinding")
    assert.deepStrictEqual(binding.roleRef, { apiGroup: "rbac.authorization.k8s.io", kind: "Role", name: "streamspace-k8s-agent" })
    assert.deepStrictEqual(binding.subjects, [{ kind: "ServiceAccount", name: "streamspace-k8s-agent", namespace: "streamspace" }])
  })

  it("covers every value of values.yaml in the every-value test", () => {
    const defaults = parse(readFileSync(path.join(agentChart, "values.yaml"), "utf8"))
    const covered = new Set(leafPaths(everyValue))
    const missing = leafPaths(defaults).filter((p) => !covered.has(p) && ![...covered].some((c) => c.startsWith(`${p}.`)))
    assert.deepStrictEqual(missing, [], "values added to values.yaml must be added to everyValue")
  })

  it("sets every variable the agent reads (packages/agent/src/AgentConfig.ts)", async () => {
    const source = readFileSync(path.join(agentChart, "../../packages/agent/src/AgentConfig.ts"), "utf8")
    const read = new Set([...source.matchAll(/"([A-Z][A-Z0-9_]{2,})"/g)].map((m) => m[1]!))
    // Only meaningful outside a cluster: in a pod the credential lives in AGENT_CREDENTIAL_SECRET.
    read.delete("AGENT_CREDENTIAL_FILE")
    // Set by the kubelet in every pod (the API server's address, the service account's mount).
    for (const v of ["KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT", "SERVICE_ACCOUNT_DIR"]) read.delete(v)
    const rendered = envOf(find(parseObjects(await template(agentChart, ["--values", await writeValues(everyValue), ...withServiceMonitorApi], "eu", "agents")), "Deployment"))
    assert.deepStrictEqual([...read].filter((v) => !rendered.has(v)).sort(), [], "agent variables without a chart value: add them to values.yaml and templates/deployment.yaml")
  })

  it("renders every documented value into valid objects", async () => {
    const objects = parseObjects(await template(agentChart, ["--values", await writeValues(everyValue), ...withServiceMonitorApi], "eu", "agents"))
    assert.deepStrictEqual(objects.map((o) => `${o.kind}/${o.metadata.name}`).sort(), [
      "ConfigMap/agent-eu-session-template",
      "Deployment/agent-eu",
      "Namespace/tenant-a",
      "NetworkPolicy/agent-eu",
      "NetworkPolicy/agent-eu-sessions",
      "Role/agent-eu",
      "RoleBinding/agent-eu",
      "Secret/agent-eu-credential",
      "Secret/agent-eu-token",
      "Service/agent-eu",
      "ServiceAccount/agent-eu-sa",
      "ServiceMonitor/agent-eu"
    ])
    assert.deepStrictEqual(await validateAll(objects), [])

    const deployment = find(objects, "Deployment")
    assert.deepStrictEqual(envValues(deployment), {
      AGENT_ID: "k8s-eu-west",
      CONTROL_PLANE_URL: "wss://cp.example.com:8443/",
      AGENT_CREDENTIAL_SECRET: "agent-eu-credential",
      PLATFORM: "kubernetes",
      REGION: "eu-west-1",
      NAMESPACE: "tenant-a",
      KUBECONFIG: "/etc/kube/config",
      HEARTBEAT_INTERVAL: "15s",
      RECONNECT_DELAY: "2s",
      MAX_RECONNECT_DELAY: "10m",
      MAX_SESSIONS: "50",
      RECONNECT_RESET_AFTER: "2m",
      PING_INTERVAL: "15s",
      PING_TIMEOUT: "5s",
      SESSION_IMAGE_PULL_POLICY: "Always",
      SESSION_DEFAULT_CPU: "500m",
      SESSION_DEFAULT_MEMORY: "1Gi",
      SESSION_DEFAULT_STORAGE: "20Gi",
      SESSION_EPHEMERAL_STORAGE_LIMIT: "4Gi",
      SESSION_STORAGE_CLASS: "gp3",
      SESSION_SERVICE_TYPE: "NodePort",
      WARM_POOL_INTERVAL: "5s",
      SESSION_POD_TEMPLATE: "/etc/streamspace/session/pod-template.yaml",
      VNC_PORT: "5901",
      VNC_TUNNEL_TIMEOUT: "2h",
      VNC_TUNNEL_WINDOW: "2097152",
      LOG_LEVEL: "debug",
      LOG_FORMAT: "text",
      LOG_REPEAT_LIMIT: "30",
      METRICS_ENABLED: "true",
      METRICS_PORT: "9191",
      HEALTH_PORT: "8181",
      HEALTH_HOST: "0.0.0.0",
      COMMAND_TIMEOUT: "3m",
      GRACEFUL_SHUTDOWN_TIMEOUT: "1m",
      MAX_CONCURRENT_OPERATIONS: "5",
      HTTPS_PROXY: "http://proxy.corp:3128",
      HTTP_PROXY: "http://proxy.corp:3128",
      NO_PROXY: "10.0.0.0/8,.svc",
      OTEL_EXPORTER_OTLP_ENDPOINT: "http://otel-collector:4318",
      OTEL_SERVICE_NAME: "streamspace-agent-eu",
      CONTROL_PLANE_CA_FILE: "/etc/streamspace/ca/root.pem",
      ALLOW_INSECURE_TRANSPORT: "false",
      NODE_OPTIONS: "--max-old-space-size=768"
    })
    assert.deepStrictEqual(envOf(deployment).get("AGENT_TOKEN").valueFrom, { secretKeyRef: { name: "agent-eu-token", key: "bootstrap" } })
    const pod = deployment.spec.template.spec
    const c = pod.containers[0]
    assert.strictEqual(c.image, "registry.example.com/streamspace/agent:1.2.3")
    assert.strictEqual(c.livenessProbe.httpGet.port, 8181)
    assert.strictEqual(c.readinessProbe.httpGet.port, 8181)
    assert.deepStrictEqual(c.ports.map((p: any) => p.containerPort), [8181, 9191])
    assert.strictEqual(deployment.spec.template.metadata.labels["streamspace.io/priority"], "high")
    assert.strictEqual(pod.priorityClassName, "streamspace-agents")
    assert.strictEqual(pod.affinity.podAntiAffinity.preferredDuringSchedulingIgnoredDuringExecution[0].podAffinityTerm.topologyKey, "kubernetes.io/hostname")
    assert.deepStrictEqual(pod.volumes.map((v: any) => v.name), ["tmp", "session-template", "control-plane-ca", "kubeconfig"])
    assert.deepInclude(c.volumeMounts, { name: "control-plane-ca", mountPath: "/etc/streamspace/ca", readOnly: true })

    // The Role and RoleBinding live in the sessions namespace; the subject in the release namespace.
    assert.strictEqual(find(objects, "Role").metadata.namespace, "tenant-a")
    assert.deepStrictEqual(find(objects, "RoleBinding").subjects, [{ kind: "ServiceAccount", name: "agent-eu-sa", namespace: "agents" }])
    assert.deepInclude(find(objects, "Namespace").metadata.labels, {
      "pod-security.kubernetes.io/enforce": "restricted",
      "pod-security.kubernetes.io/audit": "restricted",
      "pod-security.kubernetes.io/warn": "restricted"
    })
    assert.deepStrictEqual(parse(find(objects, "ConfigMap").data["pod-template.yaml"]), everyValue.agent.session.podTemplate)
    assert.strictEqual(Buffer.from(find(objects, "Secret", "agent-eu-token").data.bootstrap, "base64").toString(), "s3cret-bootstrap-token")
    // The credential Secret: created empty (upgrades keep what the agent wrote) in the sessions namespace, and the
    // only Secret the Role reaches.
    const credential = find(objects, "Secret", "agent-eu-credential")
    assert.strictEqual(credential.metadata.namespace, "tenant-a")
    assert.isUndefined(credential.data)
    assert.deepStrictEqual(find(objects, "Role").rules.filter((r: { resources: Array<string> }) => r.resources.includes("secrets")), [
      { apiGroups: [""], resources: ["secrets"], resourceNames: ["agent-eu-credential"], verbs: ["get", "update"] }
    ])

    // ServiceMonitor scrapes the Service's metrics port.
    const service = find(objects, "Service")
    const monitor = find(objects, "ServiceMonitor")
    assert.deepStrictEqual(monitor.spec.selector.matchLabels, service.spec.selector)
    for (const [k, v] of Object.entries(monitor.spec.selector.matchLabels)) assert.strictEqual(service.metadata.labels[k], v)
    assert.deepStrictEqual(monitor.spec.endpoints, [{ port: "metrics", path: "/metrics", interval: "15s", scrapeTimeout: "5s" }])
    assert.isTrue(service.spec.ports.some((p: any) => p.name === "metrics"))
    assert.strictEqual(monitor.metadata.labels.release, "prometheus")

    // NetworkPolicy: ingress to health/metrics only; egress to DNS, the API server, the control plane (port from the URL).
    const np = find(objects, "NetworkPolicy", "agent-eu").spec
    assert.deepStrictEqual(np.policyTypes, ["Ingress", "Egress"])
    assert.deepStrictEqual(np.ingress, [{
      ports: [{ protocol: "TCP", port: 8181 }, { protocol: "TCP", port: 9191 }],
      from: everyValue.networkPolicy.ingressFrom
    }])
    assert.deepStrictEqual(np.egress, [
      { ports: [{ protocol: "UDP", port: 53 }, { protocol: "TCP", port: 53 }] },
      { ports: [{ protocol: "TCP", port: 6443 }], to: [{ ipBlock: { cidr: "10.96.0.1/32" } }] },
      { ports: [{ protocol: "TCP", port: 8443 }], to: [{ ipBlock: { cidr: "203.0.113.0/24" } }] },
      { ports: [{ protocol: "TCP", port: 3128 }] }
    ])
  })

  it("ships a NetworkPolicy for the agent's session pods: no ingress, egress except metadata and the API server", async () => {
    const defaults = find(parseObjects(await template(agentChart, required)), "NetworkPolicy", "streamspace-k8s-agent-sessions")
    assert.strictEqual(defaults.metadata.namespace, "streamspace")
    assert.deepStrictEqual(defaults.spec.podSelector, { matchLabels: { app: "session", agent: "k8s-prod-us-east-1" } })
    assert.deepStrictEqual(defaults.spec.policyTypes, ["Ingress", "Egress"])
    assert.deepStrictEqual(defaults.spec.ingress, [])
    assert.deepStrictEqual(defaults.spec.egress, [
      { ports: [{ protocol: "UDP", port: 53 }, { protocol: "TCP", port: 53 }] },
      { to: [{ ipBlock: { cidr: "0.0.0.0/0", except: ["169.254.169.254/32"] } }, { ipBlock: { cidr: "::/0", except: ["fd00:ec2::254/128"] } }] }
    ])
    const every = find(parseObjects(await template(agentChart, ["--values", await writeValues(everyValue), ...withServiceMonitorApi], "eu", "agents")), "NetworkPolicy", "agent-eu-sessions")
    assert.strictEqual(every.metadata.namespace, "tenant-a")
    assert.deepStrictEqual(every.spec.ingress, everyValue.sessionNetworkPolicy.ingress)
    assert.deepStrictEqual(every.spec.egress.slice(1), [
      { to: [{ ipBlock: { cidr: "0.0.0.0/0", except: ["169.254.169.254/32", "10.0.0.0/8", "192.0.2.10/32"] } }, { ipBlock: { cidr: "::/0", except: ["fd00:ec2::254/128"] } }] },
      ...everyValue.sessionNetworkPolicy.extraEgress
    ])
    const off = parseObjects(await template(agentChart, [...required, "--set", "sessionNetworkPolicy.enabled=false"]))
    assert.isFalse(off.some((o) => o.metadata.name === "streamspace-k8s-agent-sessions"))
  })

  it("derives the control-plane egress port from the URL scheme when none is given", async () => {
    const egressPort = async (url: string, extra: Array<string> = []) => {
      const objects = parseObjects(await template(agentChart, [...required, "--set", "networkPolicy.enabled=true", "--set-string", `agent.controlPlaneUrl=${url}`, ...extra]))
      return find(objects, "NetworkPolicy", "streamspace-k8s-agent").spec.egress[2].ports[0].port
    }
    const ports = await Promise.all([
      egressPort("wss://cp.example.com"),
      egressPort("ws://cp.internal", ["--set", "agent.allowInsecureTransport=true"]),
      egressPort("wss://cp.example.com", ["--set", "networkPolicy.controlPlane.port=9443"])
    ])
    assert.deepStrictEqual(ports, [443, 80, 9443])
  })

  it("rejects bad values at install time with a message naming the value", async () => {
    const cases: Array<[Record<string, string | number | boolean>, RegExp]> = [
      [{ "agent.id": "Bad_ID" }, /at '\/agent\/id': 'Bad_ID' does not match pattern/],
      [{ "agent.controlPlaneUrl": "https://cp.example.com" }, /at '\/agent\/controlPlaneUrl'/],
      [{ "agent.maxSessions": -1 }, /at '\/agent\/maxSessions': minimum: got -1, want 0/],
      [{ "agent.vnc.tunnelWindow": 1000 }, /at '\/agent\/vnc\/tunnelWindow': minimum: got 1,?000, want 65,?536/],
      [{ "agent.maxConcurrentOperations": -1 }, /at '\/agent\/maxConcurrentOperations'/],
      [{ "agent.heartbeatInterval": "30 seconds" }, /at '\/agent\/heartbeatInterval': '30 seconds' does not match pattern/],
      [{ "agent.logging.level": "verbose" }, /at '\/agent\/logging\/level': value must be one of/],
      [{ "agent.logging.format": "xml" }, /at '\/agent\/logging\/format': value must be one of 'json', 'text'/],
      [{ "agent.session.serviceType": "Ingress" }, /at '\/agent\/session\/serviceType'/],
      [{ "agent.session.defaultMemory": "lots" }, /at '\/agent\/session\/defaultMemory'/],
      [{ "agent.vnc.port": 70000 }, /at '\/agent\/vnc\/port': maximum: got 70,?000, want 65,?535/],
      [{ "agent.metrics.enabled": "yes" }, /at '\/agent\/metrics\/enabled': got string, want boolean/],
      [{ "agent.platform": "docker" }, /at '\/agent\/platform': value must be 'kubernetes'/],
      [{ "agent.namespace": "" }, /at '\/agent\/namespace'/],
      [{ "agent.idd": "typo" }, /at '\/agent': additional properties 'idd' not allowed/]
    ]
    // helm reports every schema violation at once: one render with all the bad values.
    const stderr = await templateError(agentChart, [...required, ...cases.flatMap(([values]) => setFlags(values))])
    assert.match(stderr, /values don't meet the specifications of the schema/)
    for (const [values, expected] of cases) assert.match(stderr, expected, `${JSON.stringify(values)} not reported in:\n${stderr}`)
  })

  it("fails rendering with a clear message for what the schema cannot express", async () => {
    const cases: Array<[Array<string>, RegExp]> = [
      [["--set", "token.existingSecret=t", "--set", "agent.controlPlaneUrl=wss://x"], /agent\.id is required/],
      [["--set", "token.existingSecret=t", "--set", "agent.id=a"], /agent\.controlPlaneUrl is required/],
      [["--set", "agent.id=a", "--set", "agent.controlPlaneUrl=wss://x"], /the agent token is required: set token\.existingSecret .* or token\.value/],
      [[...required, "--set-string", "agent.controlPlaneUrl=ws://cp.example.com"], /uses ws:\/\/ \(unencrypted\).*allowInsecureTransport=true/],
      [[...required, "--set", "agent.replicaCount=2"], /agent\.replicaCount=2: an agent id runs in exactly one pod/],
      [[...required, "--set", "agent.controlPlaneCA.configMap=a", "--set", "agent.controlPlaneCA.secret=b"], /set either configMap or secret/],
      [[...required, "--set", "serviceMonitor.enabled=true", "--set", "agent.metrics.enabled=false"], /serviceMonitor\.enabled needs agent\.metrics\.enabled=true/],
      [[...required, "--set", "serviceMonitor.enabled=true"], /needs the Prometheus Operator's ServiceMonitor CRD \(monitoring\.coreos\.com\/v1\), which this cluster does not serve/],
      [[...required, "--set", "agent.metrics.port=8080"], /agent\.healthPort and agent\.metrics\.port are both 8080/]
    ]
    const errors = await Promise.all(cases.map(([args]) => templateError(agentChart, args)))
    cases.forEach(([args, expected], i) => assert.match(errors[i]!, expected, args.join(" ")))
    // ws:// is accepted when explicitly allowed.
    const env = envValues(find(parseObjects(await template(agentChart, [...required, "--set-string", "agent.controlPlaneUrl=ws://cp.internal:8000", "--set", "agent.allowInsecureTransport=true"])), "Deployment"))
    assert.strictEqual(env.ALLOW_INSECURE_TRANSPORT, "true")
  })

  it("drops the metrics port everywhere when metrics are disabled", async () => {
    const objects = parseObjects(await template(agentChart, [...required, "--set", "agent.metrics.enabled=false", "--set", "networkPolicy.enabled=true"]))
    assert.deepStrictEqual(find(objects, "Service").spec.ports.map((p: any) => p.name), ["health"])
    const c = find(objects, "Deployment").spec.template.spec.containers[0]
    assert.deepStrictEqual(c.ports.map((p: any) => p.name), ["health"])
    assert.deepStrictEqual(find(objects, "NetworkPolicy", "streamspace-k8s-agent").spec.ingress[0].ports, [{ protocol: "TCP", port: 8080 }])
    assert.strictEqual(envValues(find(objects, "Deployment")).METRICS_ENABLED, "false")
  })
})
