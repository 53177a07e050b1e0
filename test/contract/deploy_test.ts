/**
 * deploy/ agrees with the agent it deploys: the Kubernetes manifests parse and agree with the
 * ConfigMap's agent.yml (probe paths and port, grace period, volumes under state_dir/work_dir, the
 * config path in the args, the credentials' variables), the kustomization lists every manifest,
 * that agent.yml is valid by the agent's own loader, the systemd unit's stop timeout covers the
 * drain of the agent.yml it ships, and `systemd-analyze verify` / `kubectl kustomize` accept the
 * unit and the kustomization where those tools exist (reported as ignored elsewhere).
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import {
  chmodSync,
  existsSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import os from "node:os";
import path from "node:path";
import process from "node:process";
import { parse, parseAllDocuments } from "yaml";
import { loadConfig, type LoadedConfig } from "../../src/config/config.ts";
import { parseDuration } from "../../src/config/duration.ts";
import * as v from "valibot";
import { nativeSchema } from "../../src/config/schema.ts";
import { parseListen } from "../../src/observe/server.ts";

const ROOT = path.resolve(path.dirname(new URL(import.meta.url).pathname), "../..");
const K8S = path.join(ROOT, "deploy/kubernetes");
const UNIT = path.join(ROOT, "deploy/systemd/ingest-agent.service");
const UNIT_CONFIG = path.join(ROOT, "deploy/systemd/agent.yml");
const CONTAINERFILE = path.join(ROOT, "deploy/Containerfile");
const CONFIG_PATH = "/etc/ingest-agent/agent.yml";
const AGENT_ARGS = ["run", "--config", CONFIG_PATH];
/** After the drain's last SIGKILL, results still have to reach GMS: the least time left for it. */
const DELIVERY_MARGIN_MS = 60_000;

// deno-lint-ignore no-explicit-any
type Obj = Record<string, any>;

// ---------------------------------------------------------------------------------------------
// Reading the manifests

function manifests(): { file: string; docs: Obj[] }[] {
  return readdirSync(K8S).filter((f) => /\.ya?ml$/.test(f)).sort().map((file) => {
    const docs = parseAllDocuments(readFileSync(path.join(K8S, file), "utf8"));
    for (const doc of docs) {
      assert.deepEqual(doc.errors.map((e) => e.message), [], `${file}: YAML errors`);
    }
    return { file, docs: docs.map((d) => d.toJS() as Obj).filter((d) => d !== null) };
  });
}

function theOne(kind: string): { file: string; doc: Obj } {
  const found = manifests().flatMap(({ file, docs }) =>
    docs.filter((d) => d.kind === kind).map((doc) => ({ file, doc }))
  );
  assert.equal(found.length, 1, `exactly one ${kind} in deploy/kubernetes`);
  return found[0]!;
}

const deployment = () => theOne("Deployment").doc;
const podSpec = (): Obj => deployment().spec.template.spec;
function container(): Obj {
  const containers = podSpec().containers as Obj[];
  const c = containers.find((x) => x.name === "ingest-agent");
  assert.ok(c, "deployment.yaml: a container named ingest-agent");
  return c;
}

/** The ConfigMap's agent.yml as text, and the file name (key) it is mounted as. */
function configMapAgentYml(): { name: string; text: string } {
  const cm = theOne("ConfigMap").doc;
  const text = cm.data?.["agent.yml"];
  assert.equal(typeof text, "string", "configmap.yaml: data.agent.yml");
  return { name: cm.metadata.name, text };
}

/** The secret's values (stringData, or base64 data) by key. */
function secretValues(): { name: string; values: Record<string, string> } {
  const s = theOne("Secret").doc;
  const values: Record<string, string> = { ...(s.stringData ?? {}) };
  for (const [k, v] of Object.entries(s.data ?? {})) values[k] = atob(String(v));
  return { name: s.metadata.name, values };
}

/** The container's environment as the pod would have it (secretKeyRef read from secret.yaml). */
function containerEnv(): Record<string, string> {
  const secret = secretValues();
  const env: Record<string, string> = {};
  for (const e of (container().env ?? []) as Obj[]) {
    if (e.value !== undefined) env[e.name] = String(e.value);
    const ref = e.valueFrom?.secretKeyRef;
    if (ref) {
      assert.equal(ref.name, secret.name, `env ${e.name}: secretKeyRef names secret.yaml's Secret`);
      const value = secret.values[ref.key];
      if (value === undefined) {
        assert.equal(
          ref.optional,
          true,
          `env ${e.name}: key ${ref.key} is missing from the Secret`,
        );
      } else env[e.name] = value;
    }
  }
  return env;
}

async function load(text: string, env: Record<string, string>): Promise<LoadedConfig> {
  const dir = mkdtempSync(path.join(os.tmpdir(), "deploy-test-"));
  try {
    const file = path.join(dir, "agent.yml");
    writeFileSync(file, text);
    return await loadConfig(file, { env, home: "/nonexistent-home" });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const configMapConfig = () => load(configMapAgentYml().text, containerEnv());

/** True when `child` is strictly inside `dir` (both absolute). */
function inside(child: string, dir: string): boolean {
  const rel = path.relative(dir, child);
  return rel !== "" && !rel.startsWith("..") && !path.isAbsolute(rel);
}

// ---------------------------------------------------------------------------------------------
// Kubernetes

Deno.test("deploy/kubernetes: every file is YAML with apiVersion, kind and a name", () => {
  const all = manifests();
  assert.ok(all.length >= 5, `expected the manifests, found ${all.map((m) => m.file)}`);
  for (const { file, docs } of all) {
    assert.ok(docs.length > 0, `${file}: no document`);
    for (const doc of docs) {
      assert.equal(typeof doc.apiVersion, "string", `${file}: apiVersion`);
      assert.equal(typeof doc.kind, "string", `${file}: kind`);
      if (doc.kind !== "Kustomization") {
        assert.equal(typeof doc.metadata?.name, "string", `${file}: metadata.name`);
      }
    }
  }
  for (const kind of ["Deployment", "ConfigMap", "Secret", "PodDisruptionBudget"]) theOne(kind);
});

Deno.test("deploy/kubernetes: the kustomization lists every manifest file, and only those", () => {
  const { file, doc } = theOne("Kustomization");
  assert.equal(file, "kustomization.yaml");
  const files = manifests().map((m) => m.file).filter((f) => f !== file);
  const listed = [...(doc.resources ?? [])].sort();
  assert.deepEqual(listed, files.sort());
  const image = (doc.images ?? []).find((i: Obj) => i.name === container().image);
  assert.ok(image, `kustomization.yaml: images has an entry for ${container().image}`);
});

Deno.test("deploy/kubernetes: the ConfigMap's agent.yml is valid by the agent's loader", async () => {
  const env = containerEnv();
  const { config, form, warnings } = await load(configMapAgentYml().text, env);
  assert.equal(form, "native");
  assert.deepEqual(warnings, []);
  assert.ok(config.datahub.server.startsWith("https://"), "datahub.server is https");
  // The credentials reach the agent from the Secret.
  assert.equal(config.datahub.token, secretValues().values.token);
  // Every ${VAR} the file reads is defined by the container.
  const vars = [...configMapAgentYml().text.matchAll(/\$\{([A-Za-z_][A-Za-z0-9_]*)/g)]
    .map((m) => m[1]!);
  const defined = ((container().env ?? []) as Obj[]).map((e) => e.name);
  for (const v of vars) assert.ok(defined.includes(v), `${v} is read by agent.yml: set it in env`);
});

Deno.test("deploy/kubernetes: the probes use /healthz and /readyz on observability.listen's port", async () => {
  const { config } = await configMapConfig();
  assert.notEqual(config.observability.listen, "", "observability.listen must be set");
  const listen = parseListen(config.observability.listen);
  // The kubelet probes the pod's IP: loopback would fail every probe.
  assert.ok(
    listen.host === undefined || ["0.0.0.0", "::"].includes(listen.host),
    `observability.listen ${config.observability.listen} must listen on every interface`,
  );
  const c = container();
  const portOf = (p: number | string): number => {
    if (typeof p === "number") return p;
    const named = (c.ports as Obj[]).find((x) => x.name === p);
    assert.ok(named, `probe port ${p}: no container port by that name`);
    return named.containerPort;
  };
  assert.equal(c.livenessProbe?.httpGet?.path, "/healthz");
  assert.equal(c.readinessProbe?.httpGet?.path, "/readyz");
  assert.equal(portOf(c.livenessProbe.httpGet.port), listen.port);
  assert.equal(portOf(c.readinessProbe.httpGet.port), listen.port);
  assert.ok(
    (c.ports as Obj[]).some((p) => p.name === "metrics" && p.containerPort === listen.port),
  );
});

Deno.test("deploy/kubernetes: terminationGracePeriodSeconds covers the drain", async () => {
  const { config } = await configMapConfig();
  // Read with the project's own duration parser too (the loader's value must be the same).
  const raw = parse(configMapAgentYml().text) as Obj;
  assert.equal(parseDuration(raw.agent.shutdown_timeout), config.agent.shutdownTimeoutMs);
  const need = config.agent.shutdownTimeoutMs + config.agent.cancelGraceMs + DELIVERY_MARGIN_MS;
  const grace = podSpec().terminationGracePeriodSeconds;
  assert.equal(typeof grace, "number", "terminationGracePeriodSeconds is set");
  assert.ok(
    grace * 1000 >= need,
    `terminationGracePeriodSeconds ${grace} < shutdown_timeout + cancel_grace + ${
      DELIVERY_MARGIN_MS / 1000
    } s (${need / 1000} s)`,
  );
});

Deno.test("deploy/kubernetes: writable volumes hold state_dir, work_dir, HOME and /tmp", async () => {
  const { config } = await configMapConfig();
  const spec = podSpec();
  const c = container();
  assert.equal(c.securityContext?.readOnlyRootFilesystem, true);
  const volumes = new Map((spec.volumes as Obj[]).map((v) => [v.name, v]));
  const writable = ((c.volumeMounts ?? []) as Obj[]).filter((m) => {
    const v = volumes.get(m.name);
    assert.ok(v, `volumeMount ${m.name}: no such volume`);
    return m.readOnly !== true && (v.emptyDir || v.persistentVolumeClaim || v.ephemeral);
  });
  const env = containerEnv();
  const dirs: [string, string][] = [
    ["agent.state_dir", config.agent.stateDir],
    ["agent.work_dir", config.agent.workDir],
    ["HOME", env.HOME ?? "(unset)"],
  ];
  for (const [what, dir] of dirs) {
    const mount = writable.find((m) => dir === m.mountPath || inside(dir, m.mountPath));
    assert.ok(mount, `${what} ${dir} is not on a writable volume`);
    if (what !== "HOME") {
      // A volume's root is root's: the agent refuses a state_dir/work_dir it does not own.
      assert.notEqual(dir, mount.mountPath, `${what} must be a subdirectory of its volume`);
    }
  }
  assert.ok(writable.some((m) => m.mountPath === "/tmp"), "/tmp on a writable volume");
  // The config path in the args is the ConfigMap's agent.yml.
  assert.deepEqual(c.args, AGENT_ARGS);
  const configMount = ((c.volumeMounts ?? []) as Obj[]).find((m) =>
    inside(CONFIG_PATH, m.mountPath)
  );
  assert.ok(configMount, `${CONFIG_PATH} is not on a volume`);
  assert.equal(volumes.get(configMount.name)?.configMap?.name, configMapAgentYml().name);
  assert.equal(path.relative(configMount.mountPath, CONFIG_PATH), "agent.yml");
});

Deno.test("deploy/kubernetes: a non-root pool of several replicas under a PodDisruptionBudget", () => {
  const d = deployment();
  assert.ok(d.spec.replicas >= 2, "replicas ≥ 2 (a pool)");
  const labels = d.spec.template.metadata.labels;
  const matches = (sel: Obj) => Object.entries(sel).every(([k, v]) => labels[k] === v);
  assert.ok(matches(d.spec.selector.matchLabels), "the Deployment's selector matches its pods");
  const pdb = theOne("PodDisruptionBudget").doc;
  assert.equal(pdb.spec.maxUnavailable, 1);
  assert.ok(matches(pdb.spec.selector.matchLabels), "the PDB's selector matches the pods");
  const pod = podSpec().securityContext ?? {};
  const sc = container().securityContext ?? {};
  assert.equal(pod.runAsNonRoot ?? sc.runAsNonRoot, true, "runAsNonRoot");
  assert.ok((pod.runAsUser ?? sc.runAsUser) > 0, "runAsUser is not root");
  assert.equal(sc.allowPrivilegeEscalation, false);
  assert.deepEqual(sc.capabilities?.drop, ["ALL"]);
});

Deno.test("deploy/Containerfile agrees with deployment.yaml", () => {
  const text = readFileSync(CONTAINERFILE, "utf8");
  const last = (instr: string) => {
    const all = [...text.matchAll(new RegExp(`^${instr}\\s+(.+)$`, "gm"))].map((m) => m[1]!);
    assert.ok(all.length > 0, `Containerfile: no ${instr}`);
    return all.at(-1)!.trim();
  };
  assert.deepEqual(JSON.parse(last("ENTRYPOINT")), ["/usr/local/bin/ingest-agent"]);
  assert.deepEqual(JSON.parse(last("CMD")), AGENT_ARGS);
  assert.match(text, /^COPY\b.*\s\/usr\/local\/bin\/ingest-agent$/m);
  assert.match(text, /^ARG AGENT_BIN=dist\/ingest-agent$/m);
  assert.match(text, /^ARG BASE_IMAGE=acryldata\/datahub-ingestion:/m);
  const uid = Number(last("USER").split(":")[0]);
  assert.ok(uid > 0, "Containerfile: a numeric non-root USER");
  assert.equal(podSpec().securityContext?.runAsUser, uid, "runAsUser is the image's USER");
  assert.equal(Number(last("EXPOSE")), container().ports[0].containerPort);
  assert.equal(last("ENV").replace(/^HOME=/, ""), containerEnv().HOME);
});

// ---------------------------------------------------------------------------------------------
// systemd

/** The unit as INI: section → key → values (a key may repeat). */
function readUnit(text: string): Map<string, Map<string, string[]>> {
  const sections = new Map<string, Map<string, string[]>>();
  let current: Map<string, string[]> | undefined;
  for (const line of text.replace(/\\\n/g, " ").split("\n").map((l) => l.trim())) {
    if (line === "" || line.startsWith("#") || line.startsWith(";")) continue;
    const section = /^\[(.+)\]$/.exec(line);
    if (section) {
      current = new Map();
      sections.set(section[1]!, current);
      continue;
    }
    const eq = line.indexOf("=");
    assert.ok(current && eq > 0, `not a unit file line: ${line}`);
    const key = line.slice(0, eq).trim();
    current.set(key, [...(current.get(key) ?? []), line.slice(eq + 1).trim()]);
  }
  return sections;
}

/** A systemd time span (`7min`, `420`, `5min 30s`) in ms; a bare number is seconds. */
function parseTimespan(value: string): number {
  if (value === "infinity") return Infinity;
  const units: Record<string, number> = {
    us: 1e-3,
    ms: 1,
    s: 1000,
    sec: 1000,
    second: 1000,
    seconds: 1000,
    m: 60_000,
    min: 60_000,
    minute: 60_000,
    minutes: 60_000,
    h: 3_600_000,
    hr: 3_600_000,
    hour: 3_600_000,
    hours: 3_600_000,
    d: 86_400_000,
    day: 86_400_000,
    days: 86_400_000,
  };
  let total = 0;
  const rest = value.replace(/(\d+(?:\.\d+)?)\s*([a-z]*)/g, (_all, n: string, unit: string) => {
    const size = units[unit || "s"];
    assert.ok(size !== undefined, `unknown time unit ${unit} in ${value}`);
    total += Number(n) * size;
    return "";
  });
  assert.equal(rest.trim(), "", `not a time span: ${value}`);
  return total;
}

Deno.test("parseTimespan reads systemd time spans", () => {
  assert.equal(parseTimespan("7min"), 420_000);
  assert.equal(parseTimespan("420"), 420_000);
  assert.equal(parseTimespan("5min 30s"), 330_000);
  assert.throws(() => parseTimespan("7 fortnights"));
});

const service = (): Map<string, string[]> =>
  readUnit(readFileSync(UNIT, "utf8")).get("Service") ?? new Map();
const one = (s: Map<string, string[]>, key: string) => s.get(key)?.at(-1);

/** The agent.yml shipped for the unit, or the schema's defaults when there is none. */
async function unitConfig(): Promise<
  { shutdownMs: number; cancelGraceMs: number; dirs?: string[] }
> {
  if (!existsSync(UNIT_CONFIG)) {
    const d = v.parse(nativeSchema, {}).agent;
    return { shutdownMs: d.shutdown_timeout, cancelGraceMs: d.cancel_grace };
  }
  const { config, form } = await load(readFileSync(UNIT_CONFIG, "utf8"), {
    DATAHUB_GMS_TOKEN: "test-token",
  });
  assert.equal(form, "native");
  return {
    shutdownMs: config.agent.shutdownTimeoutMs,
    cancelGraceMs: config.agent.cancelGraceMs,
    dirs: [config.agent.stateDir, config.agent.workDir],
  };
}

Deno.test("deploy/systemd: a dedicated user, mixed kill, restarts, sandbox that lets runs start", () => {
  const s = service();
  assert.equal(one(s, "ExecStart"), `/usr/local/bin/ingest-agent ${AGENT_ARGS.join(" ")}`);
  const user = one(s, "User");
  assert.ok(user && user !== "root" && user !== "0", "User= names a dedicated user");
  assert.equal(one(s, "Restart"), "on-failure");
  assert.equal(one(s, "KillMode"), "mixed");
  assert.equal(one(s, "KillSignal") ?? "SIGTERM", "SIGTERM");
  assert.equal(one(s, "OOMPolicy"), "continue", "a run's OOM kill must not stop the service");
  assert.equal(one(s, "ProtectSystem"), "strict");
  assert.equal(one(s, "NoNewPrivileges"), "yes");
  assert.equal(one(s, "PrivateTmp"), "yes");
  assert.ok(one(s, "EnvironmentFile") || one(s, "LoadCredential"), "a way in for the token");
  // Settings that would break the agent (V8's JIT) or its runs (networking, /proc).
  for (
    const [key, bad] of [
      ["MemoryDenyWriteExecute", "yes"],
      ["PrivateNetwork", "yes"],
      ["ProcSubset", "pid"],
      ["KillMode", "process"],
    ]
  ) assert.notEqual(one(s, key!), bad, `${key}=${bad} breaks the agent or its runs`);
});

Deno.test("deploy/systemd: TimeoutStopSec covers the drain of the agent.yml it runs", async () => {
  const { shutdownMs, cancelGraceMs } = await unitConfig();
  const stop = parseTimespan(one(service(), "TimeoutStopSec") ?? "90s");
  const need = shutdownMs + cancelGraceMs + DELIVERY_MARGIN_MS;
  assert.ok(Number.isFinite(stop), "TimeoutStopSec must be finite");
  assert.ok(stop >= need, `TimeoutStopSec ${stop / 1000} s < ${need / 1000} s`);
});

Deno.test("deploy/systemd: state_dir and work_dir of its agent.yml are writable in the sandbox", async () => {
  const { dirs } = await unitConfig();
  assert.ok(dirs, "deploy/systemd/agent.yml is shipped");
  const s = service();
  const writable = [
    ...(s.get("ReadWritePaths") ?? []).flatMap((v) => v.split(/\s+/)),
    ...(s.get("StateDirectory") ?? []).flatMap((v) => v.split(/\s+/)).map((d) => `/var/lib/${d}`),
  ].map((p) => p.replace(/^-/, ""));
  for (const dir of dirs) {
    assert.ok(
      writable.some((w) => dir === w || inside(dir, w)),
      `${dir} is outside ReadWritePaths=/StateDirectory= (${writable.join(" ")})`,
    );
    assert.ok(
      !inside(dir, "/home") && !inside(dir, "/tmp"),
      `${dir}: hidden by ProtectHome/PrivateTmp`,
    );
  }
});

function hasTool(name: string): boolean {
  return (process.env.PATH ?? "").split(path.delimiter).some((dir) => {
    try {
      return statSync(path.join(dir, name)).isFile();
    } catch {
      return false;
    }
  });
}

const HAS_SYSTEMD_ANALYZE = hasTool("systemd-analyze");
const HAS_KUBECTL = hasTool("kubectl");
if (!HAS_SYSTEMD_ANALYZE) {
  console.log("note: no systemd-analyze here: `verify` of the unit ignored");
}
if (!HAS_KUBECTL) console.log("note: no kubectl here: `kubectl kustomize` ignored");

/** systemd-analyze verify on a copy whose ExecStart points at a stub; its complaints about it. */
function verifyUnit(text: string): string[] {
  const dir = mkdtempSync(path.join(os.tmpdir(), "deploy-unit-"));
  try {
    const stub = path.join(dir, "ingest-agent");
    writeFileSync(stub, "#!/bin/sh\nexit 0\n");
    chmodSync(stub, 0o755);
    const unit = path.join(dir, "ingest-agent.service");
    writeFileSync(unit, text.replaceAll("/usr/local/bin/ingest-agent", stub));
    const r = spawnSync("systemd-analyze", ["verify", unit], { encoding: "utf8" });
    const lines = `${r.stdout}\n${r.stderr}`.split("\n").filter((l) => l.includes("ingest-agent"));
    return r.status === 0 ? lines : [`exit ${r.status}`, ...lines];
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

Deno.test({
  name: "deploy/systemd: systemd-analyze verify accepts the unit",
  ignore: !HAS_SYSTEMD_ANALYZE,
  fn() {
    const text = readFileSync(UNIT, "utf8");
    // The check has teeth: a misspelt value is reported.
    assert.notDeepEqual(verifyUnit(text.replace("KillMode=mixed", "KillMode=mixd")), []);
    assert.deepEqual(verifyUnit(text), []);
  },
});

Deno.test({
  name: "deploy/kubernetes: kubectl kustomize builds the kustomization",
  ignore: !HAS_KUBECTL,
  fn() {
    const r = spawnSync("kubectl", ["kustomize", K8S], { encoding: "utf8" });
    assert.equal(r.status, 0, r.stderr);
    const kinds = parseAllDocuments(r.stdout).map((d) => (d.toJS() as Obj).kind).sort();
    assert.deepEqual(kinds, ["ConfigMap", "Deployment", "PodDisruptionBudget", "Secret"]);
    const built = parseAllDocuments(r.stdout).map((d) => d.toJS() as Obj)
      .find((d) => d.kind === "Deployment")!;
    const image = built.spec.template.spec.containers[0].image as string;
    const entry = theOne("Kustomization").doc.images[0];
    assert.equal(image, `${entry.newName}:${entry.newTag}`);
  },
});
