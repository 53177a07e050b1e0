/**
 * The host checks of `ingest-agent doctor` (doctor.ts):
 *
 *   runtime    ingestion.datahub_command is found (a path, or on PATH) and `datahub version`
 *              answers within 20 s, in the environment a run would get (credentials withheld)
 *   state_dir  created if missing, a probe file written and removed; refused like the agent
 *   work_dir   refuses them at start (a symbolic link, not a directory, another user's)
 *   lock       whether a running agent holds state_dir's agent.lock (read only, never taken)
 *   proxy      the proxy used for datahub.server (datahub.proxy or HTTP(S)_PROXY, and
 *              NO_PROXY), informational
 */
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { constants } from "node:fs";
import { access, lstat, mkdir, rm, stat, writeFile } from "node:fs/promises";
import path from "node:path";
import process from "node:process";
import type { AgentConfig } from "../config/config.ts";
import { proxyFor, withoutUserinfo } from "../gms/transport.ts";
import { chooseInstaller, installerProblem } from "../run/installer.ts";
import { credentialVariables, runEnvironment } from "../run/run_env.ts";
import { lockHolder } from "../state/lock.ts";
import { type Check, failed, passed } from "./doctor.ts";

export { proxyFor, withoutUserinfo };

/** How long `datahub version` may take (a cold Python start with many plugins is slow). */
export const CLI_TIMEOUT_MS = 20_000;

/** Where a command is: the executable file, or an existing file that is not executable. */
export async function findCommand(
  command: string,
  pathVariable: string | undefined,
): Promise<{ found?: string; notExecutable?: string }> {
  const candidates = command.includes("/")
    ? [path.resolve(command)]
    : (pathVariable ?? "").split(":").map((dir) => path.resolve(dir || ".", command));
  let notExecutable: string | undefined;
  for (const file of candidates) {
    if (!(await stat(file).then((s) => s.isFile(), () => false))) continue;
    if (await access(file, constants.X_OK).then(() => true, () => false)) return { found: file };
    notExecutable ??= file;
  }
  return notExecutable ? { notExecutable } : {};
}

interface CommandRun {
  code: number | null;
  signal: string | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
  error?: Error;
}

/** Runs `file args` in its own process group, killed (group and all) after timeoutMs. */
export function runCommand(
  file: string,
  args: string[],
  env: Record<string, string>,
  timeoutMs: number,
): Promise<CommandRun> {
  return new Promise((resolve) => {
    const run: CommandRun = { code: null, signal: null, stdout: "", stderr: "", timedOut: false };
    const child = spawn(file, args, { env, stdio: ["ignore", "pipe", "pipe"], detached: true });
    const killGroup = () => {
      try {
        if (child.pid) process.kill(-child.pid, "SIGKILL");
      } catch { /* gone */ }
    };
    let settled = false;
    const finish = () => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      child.stdout.destroy();
      child.stderr.destroy();
      resolve(run);
    };
    const timer = setTimeout(() => {
      run.timedOut = true;
      killGroup();
    }, timeoutMs);
    const keep = (key: "stdout" | "stderr") => (chunk: string) => {
      if (run[key].length < 64 * 1024) run[key] += chunk;
    };
    child.stdout.setEncoding("utf8").on("data", keep("stdout"));
    child.stderr.setEncoding("utf8").on("data", keep("stderr"));
    child.once("error", (err) => {
      run.error = err;
      finish();
    });
    child.once("exit", (code, signal) => {
      run.code = code;
      run.signal = signal;
      killGroup(); // nothing it started outlives it
      // Output still in the pipes is read until they close, for at most one second.
      child.once("close", finish);
      setTimeout(finish, 1000).unref();
    });
  });
}

/** 6. (venv, bundled) The installer's interpreter, or the bundles' directory. */
async function otherRuntime(
  config: AgentConfig,
  env: Record<string, string | undefined>,
): Promise<Check> {
  const i = config.ingestion;
  if (i.runtime === "bundled") {
    const found = await stat(i.bundledDir).then((s) => s.isDirectory(), () => false);
    return found
      ? passed("runtime", `bundled: environments under ${i.bundledDir} (<source type>-bundled)`)
      : failed(
        "runtime",
        `ingestion.bundled_dir ${i.bundledDir} does not exist`,
        "set ingestion.bundled_dir to the directory holding the <source type>-bundled environments.",
      );
  }
  const problem = installerProblem(config, env);
  if (problem) {
    return failed("runtime", problem, "install Python 3 with its venv module, or uv.");
  }
  const c = chooseInstaller(config, env);
  const how = c.kind === "uv" ? `uv (${c.uv}) with ${c.python}` : `${c.python} -m venv and pip`;
  const from = i.offline ? `offline from ${i.findLinks.join(", ")}` : "from the configured index";
  return passed("runtime", `venv: environments built by ${how}, ${from}, in ${i.venvDir}`);
}

/** 6. The datahub CLI: found, and `datahub version` answers with its version. */
export async function checkRuntime(
  config: AgentConfig,
  env: Record<string, string | undefined>,
): Promise<Check> {
  if (config.ingestion.runtime !== "preinstalled") return await otherRuntime(config, env);
  const command = config.ingestion.datahubCommand;
  const where = await findCommand(command, env.PATH);
  if (where.notExecutable && !where.found) {
    return failed(
      "runtime",
      `${where.notExecutable} (ingestion.datahub_command) is not executable`,
      "make it executable (chmod +x) or set ingestion.datahub_command to the datahub CLI itself.",
    );
  }
  if (!where.found) {
    return failed(
      "runtime",
      command.includes("/")
        ? `ingestion.datahub_command ${path.resolve(command)} does not exist`
        : `'${command}' (ingestion.datahub_command) is not on PATH`,
      "install the datahub CLI (pip install acryl-datahub) or set ingestion.datahub_command to its absolute path.",
    );
  }
  // The environment a run would get, so a CLI that needs e.g. pass_env variables is seen as runs see it.
  const runEnv = runEnvironment(env, {
    passEnv: config.ingestion.passEnv,
    extra: {},
    withheld: credentialVariables(env, config.datahub),
    marker: { name: "INGEST_AGENT_DOCTOR", value: "1" },
  });
  const run = await runCommand(where.found, ["version"], runEnv, CLI_TIMEOUT_MS);
  const shown = `${where.found} version`;
  const repair =
    "repair the CLI's installation (pip install --upgrade acryl-datahub in its environment) or set ingestion.datahub_command to a working datahub CLI.";
  if (run.error) return failed("runtime", `${shown} could not start: ${run.error.message}`, repair);
  if (run.timedOut) {
    return failed("runtime", `${shown} did not answer within ${CLI_TIMEOUT_MS / 1000} s`, repair);
  }
  if (run.code !== 0) {
    const last = lastLine(run.stderr) ?? lastLine(run.stdout);
    return failed(
      "runtime",
      `${shown} exited with ${run.signal ? `signal ${run.signal}` : `code ${run.code}`}${
        last ? `: ${last}` : ""
      }`,
      repair,
    );
  }
  const version = /DataHub CLI version:\s*(\S+)/.exec(run.stdout)?.[1];
  if (!version) {
    return failed(
      "runtime",
      `${shown} printed no "DataHub CLI version:" line`,
      "set ingestion.datahub_command to the datahub CLI (from the acryl-datahub package).",
    );
  }
  return passed("runtime", `${where.found}: DataHub CLI version ${version}`);
}

function lastLine(text: string): string | undefined {
  const lines = text.split("\n").map((l) => l.trim()).filter((l) => l !== "");
  return lines.at(-1)?.slice(0, 300);
}

/** 7. A directory the agent can use: created if missing, a probe file written and removed. */
export async function checkDirectory(name: "state_dir" | "work_dir", dir: string): Promise<Check> {
  const key = `agent.${name}`;
  try {
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const st = await lstat(dir);
    // The agent refuses these at start (state/private_fs.ts).
    if (st.isSymbolicLink()) {
      return failed(
        name,
        `${dir} is a symbolic link, which the agent refuses`,
        `set ${key} to the real directory it points to.`,
      );
    }
    if (!st.isDirectory()) {
      return failed(name, `${dir} is not a directory`, `set ${key} to a directory.`);
    }
    const uid = typeof process.getuid === "function" ? process.getuid() : undefined;
    if (uid !== undefined && st.uid !== uid) {
      return failed(
        name,
        `${dir} is owned by uid ${st.uid}, not by this user (uid ${uid}), which the agent refuses`,
        `set ${key} to a directory of the agent's own user.`,
      );
    }
    const probe = path.join(
      dir,
      `.ingest-agent-doctor-${process.pid}-${randomBytes(4).toString("hex")}`,
    );
    await writeFile(probe, "ingest-agent doctor\n", { flag: "wx", mode: 0o600 });
    await rm(probe, { force: true });
    const mode = st.mode & 0o777;
    const wide = (mode & 0o077) !== 0
      ? ` (mode ${mode.toString(8).padStart(4, "0")}: the agent narrows it to 0700 at start)`
      : "";
    return passed(name, `${dir} is writable${wide}`);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const fix = code === "ENOTDIR"
      ? `a part of the path is a file, not a directory: set ${key} to a directory the agent's user can create.`
      : code === "EACCES" || code === "EPERM" || code === "EROFS"
      ? `let the agent's user write there, or set ${key} to a directory it owns.`
      : `set ${key} to a local directory the agent's user can create and write.`;
    return failed(name, `${dir} is not writable: ${(err as Error).message}`, fix);
  }
}

/** 7. Whether another agent holds state_dir (its agent.lock; never taken or changed here). */
export async function checkLock(stateDir: string): Promise<Check> {
  const lock = path.join(stateDir, "agent.lock");
  let holder;
  try {
    holder = await lockHolder(stateDir);
  } catch (err) {
    return failed(
      "lock",
      `cannot read ${lock}: ${(err as Error).message}`,
      "let the agent's user read its state_dir.",
    );
  }
  if (!holder) return passed("lock", `no running agent holds ${lock}`);
  return failed(
    "lock",
    `${lock} is held by a running agent (pid ${holder.pid})`,
    `each agent needs its own agent.state_dir (pid ${holder.pid} uses this one).`,
  );
}

/** 8. The proxy in effect for datahub.server, or none (informational: always passes). */
export function checkProxy(
  server: string,
  env: Record<string, string | undefined>,
  configured = "",
): Check {
  const shown = withoutUserinfo(server);
  const { proxy, variable, noProxy } = proxyFor(server, env, configured);
  if (proxy) return passed("proxy", `${withoutUserinfo(proxy)} (from ${variable}) for ${shown}`);
  if (noProxy) return passed("proxy", `none for ${shown} (${noProxy} excludes it)`);
  return passed("proxy", `none for ${shown}`);
}
