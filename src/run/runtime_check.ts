/**
 * Whether runs can start on this host now (the admission gate: while it names a reason the agent
 * claims nothing, and the requests stay pending for another agent):
 *   - the datahub CLI that `ingestion.datahub_command` names can be found and executed (runtime
 *     `preinstalled`). A broken host must not eat a pool's queue by claiming requests only to
 *     fail them: the log and /readyz say why; checked again at most once a minute;
 *   - the host's MemAvailable (/proc/meminfo) is at least `agent.min_available_memory`: checked
 *     every poll (one small read); the log says why when it starts and stops blocking, /status
 *     (`admission.blocked`) while it does. /readyz stays green: a busy host is not a broken agent.
 */
import type { AgentConfig } from "../config/config.ts";
import process from "node:process";
import type { Logger } from "../observe/log.ts";
import { hostMemAvailable } from "../state/procs.ts";
import { formatBytes } from "./memory.ts";
import { installerProblem } from "./installer.ts";
import { resolveCommand } from "./process.ts";

export const RECHECK_MS = 60_000;

/** Why no run may start for lack of memory (agent.min_available_memory), or undefined. */
export function memoryProblem(
  minBytes: number,
  availableBytes: number | undefined,
): string | undefined {
  if (minBytes <= 0 || availableBytes === undefined || availableBytes >= minBytes) return undefined;
  return `the host's MemAvailable (${
    formatBytes(availableBytes)
  }) is below agent.min_available_memory ` +
    `(${formatBytes(minBytes)}); no run starts until more memory is free`;
}

/** The problem with the configured CLI, or undefined when it can be started. */
export function cliProblem(
  config: AgentConfig,
  env: Record<string, string | undefined>,
  cwd = process.cwd(),
): string | undefined {
  // venv: the installer's interpreter (and uv when required); bundled: per request (runtime.ts).
  if (config.ingestion.runtime === "venv") return installerProblem(config, env);
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
  readonly #onMemory: (blocked: string | undefined) => void;
  readonly #memAvailable: () => number | undefined;
  #checkedAt = -Infinity;
  #problem: string | undefined;
  #memory: string | undefined;

  constructor(o: {
    config: AgentConfig;
    env: Record<string, string | undefined>;
    log: Logger;
    /** Told when the outcome changes (LiveState: /readyz). */
    onChange?: (problem: string | undefined) => void;
    /** Told the memory reason whenever it changes (LiveState: /status admission.blocked). */
    onMemory?: (blocked: string | undefined) => void;
    /** The host's MemAvailable in bytes (tests pass a fake). */
    memAvailable?: () => number | undefined;
  }) {
    this.#config = o.config;
    this.#env = o.env;
    this.#log = o.log;
    this.#onChange = o.onChange ?? (() => {});
    this.#onMemory = o.onMemory ?? (() => {});
    this.#memAvailable = o.memAvailable ?? (() => hostMemAvailable());
    const { minAvailableMemoryBytes: min, runMemoryLimitBytes: limit } = o.config.agent;
    if (min > 0 && this.#memAvailable() === undefined) {
      o.log.warn(
        "agent.min_available_memory is not enforced: this host's /proc/meminfo has no MemAvailable",
      );
    }
    if (limit > 0 && process.platform !== "linux") {
      o.log.warn(
        "agent.run_memory_limit is not enforced here: run memory is read from Linux /proc",
      );
    }
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
    return Promise.resolve(this.#problem ?? this.#checkMemory());
  };

  /** The memory reason now; logged when it starts and stops blocking, not on every poll. */
  #checkMemory(): string | undefined {
    const min = this.#config.agent.minAvailableMemoryBytes;
    if (min <= 0) return undefined;
    const available = this.#memAvailable();
    const blocked = memoryProblem(min, available);
    if (blocked && !this.#memory) {
      this.#log.warn("not claiming requests: too little memory available", {
        problem: blocked,
        mem_available_bytes: available,
        min_available_memory_bytes: min,
      });
    } else if (!blocked && this.#memory) {
      this.#log.info("enough memory available again; claiming requests", {
        mem_available_bytes: available,
      });
    }
    if (blocked !== this.#memory) this.#onMemory(blocked);
    this.#memory = blocked;
    return blocked;
  }
}
