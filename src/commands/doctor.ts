/**
 * `ingest-agent doctor --config <file>`: checks, in order, everything the agent needs before it
 * can run a request, and prints one line per check with its mark, and for each failure the fix
 * in one sentence:
 *
 *   ✓ passed   ✗ failed (exit 1)   ! a warning (does not fail)   - skipped (a check it needs failed)
 *
 *   config → gms (reachable, version) → credentials → secrets → discovery → runtime (datahub CLI)
 *   → state_dir → work_dir → lock → proxy → clock
 *
 * Exit codes: 0 every check passed (warnings allowed), 1 a check failed, 2 bad usage or an
 * invalid configuration (its problems are printed like `validate` does). Read-only towards GMS:
 * nothing is claimed and nothing is written (doctor_gms.ts); on the host it only creates missing
 * directories and a probe file it removes again, and never takes the state_dir lock
 * (doctor_host.ts). Every line is masked: no token or secret value is ever printed.
 */
import { type AgentConfig, ConfigError, loadConfig } from "../config/config.ts";
import { GmsClient } from "../gms/client.ts";
import { silentLogger } from "../observe/log.ts";
import { Redactor } from "../run/redact.ts";
import {
  checkClock,
  checkCredentials,
  checkDiscovery,
  checkReachable,
  checkSecrets,
  GMS_TIMEOUT_MAX_MS,
} from "./doctor_gms.ts";
import {
  checkDirectory,
  checkLock,
  checkProxy,
  checkRuntime,
  withoutUserinfo,
} from "./doctor_host.ts";

/** ✓ passed, ✗ failed, ! warning (does not fail), - skipped. */
export type Mark = "✓" | "✗" | "!" | "-";

/** The outcome of one check: one line, plus the fix for a failure or a warning. */
export interface Check {
  name: string;
  mark: Mark;
  detail: string;
  fix?: string;
}

/** What doctor needs of the command line's Io (cli.ts). */
export interface DoctorIo {
  out: (text: string) => void;
  err: (text: string) => void;
  env: Record<string, string | undefined>;
}

export function passed(name: string, detail: string): Check {
  return { name, mark: "✓", detail };
}

export function failed(name: string, detail: string, fix: string): Check {
  return { name, mark: "✗", detail, fix };
}

export function skipped(name: string, because: string): Check {
  return { name, mark: "-", detail: `skipped: ${because}` };
}

const NAME_WIDTH = 12;

/** Formats one check: `✓ name         detail`, and `fix: …` under the detail. */
export function formatCheck(check: Check): string {
  const head = `${check.mark} ${check.name.padEnd(NAME_WIDTH)} ${check.detail}\n`;
  return check.fix ? `${head}${" ".repeat(NAME_WIDTH + 3)}fix: ${check.fix}\n` : head;
}

/** The closing line: all passed, or what failed. */
export function summary(checks: readonly Check[]): string {
  const count = (mark: Mark) => checks.filter((c) => c.mark === mark).length;
  const failures = checks.filter((c) => c.mark === "✗").map((c) => c.name);
  const warnings = count("!");
  const warned = warnings ? ` (${warnings} warning${warnings > 1 ? "s" : ""})` : "";
  if (failures.length === 0) return `doctor: all ${checks.length} checks passed${warned}\n`;
  const skips = count("-");
  return `doctor: ${failures.length} of ${checks.length} checks failed (${failures.join(", ")})${
    skips ? `, ${skips} skipped` : ""
  }${warned}\n`;
}

/** Runs every check against the configuration in `file`; resolves the exit code. */
export async function doctor(file: string, io: DoctorIo): Promise<number> {
  const checks: Check[] = [];
  let mask = (text: string) => text;
  const emit = (check: Check) => {
    checks.push(check);
    io.out(mask(formatCheck(check)));
  };

  // 1. The configuration: its problems are printed like `validate` prints them.
  let loaded;
  try {
    loaded = await loadConfig(file, { env: io.env });
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    const n = err.issues.length;
    io.err(err.issues.map((i) => `${i.path}: ${i.message}\n`).join(""));
    io.err(`ingest-agent: ${file}: ${n} problem${n > 1 ? "s" : ""}\n`);
    emit(failed(
      "config",
      `${file} is invalid: ${n} problem${n > 1 ? "s" : ""} (listed on stderr)`,
      `correct ${n > 1 ? "them" : "it"} (agent.yml documents every option) and run doctor again.`,
    ));
    return 2;
  }
  const { config } = loaded;
  mask = redactorFor(config).mask;
  for (const w of loaded.warnings) io.err(mask(`warning: ${w}\n`));
  const warnings = loaded.warnings.length;
  emit(passed(
    "config",
    `${file} is valid (${loaded.form} form, executor_id ${config.executorId}${
      warnings ? `; ${warnings} warning${warnings > 1 ? "s" : ""} on stderr` : ""
    })`,
  ));

  // 2–5. GMS: each step needs the previous one; after a failure the rest is skipped.
  const server = withoutUserinfo(config.datahub.server);
  const gms = new GmsClient(
    { ...config.datahub, timeoutMs: Math.min(config.datahub.timeoutMs, GMS_TIMEOUT_MAX_MS) },
    silentLogger,
  );
  let reachable = false;
  try {
    const reach = await checkReachable(gms, server);
    emit(reach);
    reachable = reach.mark === "✓";
    const creds = reachable
      ? await checkCredentials(gms)
      : skipped("credentials", "GMS is not reachable");
    emit(creds);
    const authorised = creds.mark === "✓";
    const why = reachable ? "the credentials were not accepted" : "GMS is not reachable";
    emit(authorised ? await checkSecrets(gms) : skipped("secrets", why));
    emit(authorised ? await checkDiscovery(gms, config.executorId) : skipped("discovery", why));
  } finally {
    await gms.close();
  }

  // 6–8. This host.
  emit(await checkRuntime(config, io.env));
  const stateDir = await checkDirectory("state_dir", config.agent.stateDir);
  emit(stateDir);
  emit(await checkDirectory("work_dir", config.agent.workDir));
  emit(
    stateDir.mark === "✓"
      ? await checkLock(config.agent.stateDir)
      : skipped("lock", "state_dir is not usable"),
  );
  emit(checkProxy(config.datahub.server, io.env, config.datahub.proxy));

  // 9. The clock, from the Date headers of GMS's answers above.
  emit(reachable ? checkClock(gms.http.clockOffsetMs) : skipped("clock", "GMS is not reachable"));

  io.out(mask(summary(checks)));
  return checks.some((c) => c.mark === "✗") ? 1 : 0;
}

/** Masks the agent's own credentials wherever they might surface (an error message, a URL). */
function redactorFor(config: AgentConfig): Redactor {
  const redactor = new Redactor();
  if (config.datahub.token) redactor.add("datahub.token", config.datahub.token);
  if (config.datahub.systemClientSecret) {
    redactor.add("datahub.system_client_secret", config.datahub.systemClientSecret);
  }
  try {
    const password = new URL(config.datahub.server).password;
    if (password) redactor.add("datahub.server password", decodeURIComponent(password));
  } catch { /* not a URL: nothing to mask */ }
  return redactor;
}
