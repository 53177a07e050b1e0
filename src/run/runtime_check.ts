/**
 * Whether runs can start on this host: the datahub CLI that `ingestion.datahub_command` names can
 * be found and executed (runtime `preinstalled`). A broken host must not eat a pool's queue by
 * claiming requests only to fail them: while the check fails the agent claims nothing, says why
 * (log, /readyz), and checks again at most once a minute.
 */
import type { AgentConfig } from "../config/config.ts";
import process from "node:process";
import type { Logger } from "../observe/log.ts";
import { resolveCommand } from "./process.ts";

export const RECHECK_MS = 60_000;

/** The problem with the configured CLI, or undefined when it can be started. */
export function cliProblem(
  config: AgentConfig,
  env: Record<string, string | undefined>,
  cwd = process.cwd(),
): string | undefined {
  if (config.ingestion.runtime !== "preinstalled") return undefined;
  try {
    resolveCommand(config.ingestion.datahubCommand, env.PATH ?? "", cwd);
    return undefined;
  } catch (err) {
    return `ingestion.datahub_command: ${(err as Error).message}`;
  }
}

export class RuntimeCheck {
  readonly #config: AgentConfig;
  readonly #env: Record<string, string | undefined>;
  readonly #log: Logger;
  readonly #onChange: (problem: string | undefined) => void;
  #checkedAt = -Infinity;
  #problem: string | undefined;

  constructor(o: {
    config: AgentConfig;
    env: Record<string, string | undefined>;
    log: Logger;
    /** Told when the outcome changes (LiveState: /readyz). */
    onChange?: (problem: string | undefined) => void;
  }) {
    this.#config = o.config;
    this.#env = o.env;
    this.#log = o.log;
    this.#onChange = o.onChange ?? (() => {});
  }

  /** The current problem (checked again when the last check is a minute old). */
  problem = (now = performance.now()): Promise<string | undefined> => {
    if (now - this.#checkedAt >= RECHECK_MS) {
      this.#checkedAt = now;
      const problem = cliProblem(this.#config, this.#env);
      if (problem && problem !== this.#problem) {
        this.#log.error("cannot run requests here; claiming none until this is fixed", {
          problem,
          recheck_in_ms: RECHECK_MS,
        });
      } else if (!problem && this.#problem) {
        this.#log.info("the datahub CLI can be started again; claiming requests");
      }
      if (problem !== this.#problem) this.#onChange(problem);
      this.#problem = problem;
    }
    return Promise.resolve(this.#problem);
  };
}
