/**
 * `ingest-agent validate --config <file>`: the configuration's problems (printed by cli.ts as
 * they come from loading it), the datahub CLI's, and on success one line saying what the agent
 * would use: `<file>: valid (<form> form, executor_id <id>, server <url>, auth <mode>)`.
 */
import type { AgentConfig, LoadedConfig } from "../config/config.ts";
import type { AuthKind } from "../gms/http.ts";
import { withoutUserinfo } from "../gms/transport.ts";
import { cliProblem } from "../run/runtime_check.ts";

export interface ValidateIo {
  out: (text: string) => void;
  err: (text: string) => void;
  env: Record<string, string | undefined>;
}

/** Exit code 0 (valid) or 2, after the warnings on stderr. */
export function validate(file: string, loaded: LoadedConfig, io: ValidateIo): number {
  for (const w of loaded.warnings) io.err(`warning: ${w}\n`);
  const cli = cliProblem(loaded.config, io.env);
  if (cli) {
    io.err(`${cli}\ningest-agent: ${file}: 1 problem\n`);
    return 2;
  }
  const { config } = loaded;
  io.out(
    `${file}: valid (${loaded.form} form, executor_id ${config.executorId}, server ${
      withoutUserinfo(config.datahub.server)
    }, auth ${authMode(config.datahub)})\n`,
  );
  return 0;
}

/** The credentials GmsHttp will send (gms/http.ts): the system client wins over a token. */
export function authMode(datahub: AgentConfig["datahub"]): AuthKind {
  if (datahub.systemClientId) return "system-client";
  return datahub.tokenFile || datahub.token ? "token" : "none";
}

/**
 * The usage error for an argument that is not an option or a command; a file name given
 * without `--config` (`ingest-agent validate agent.yml`) is told how to pass it.
 */
export function unknownArgument(arg: string): string {
  const file = !arg.startsWith("-") && /[./\\]/.test(arg); // a path, not a mistyped command
  return `unknown argument '${arg}'${
    file ? `: to use it as the configuration, give --config ${arg}` : ""
  }`;
}
