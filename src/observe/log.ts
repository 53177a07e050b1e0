/**
 * observe/ owns what the operator looks at: the agent's own log (and, next, its endpoints and
 * metrics). It may import config/ and the vocabulary; never gms/, state/, run/ or pool/.
 *
 * The agent's own log: JSON lines when stdout is not a terminal, readable text on a terminal.
 * It logs URNs, statuses, timings and reasons; never tokens, recipes or environment values. As a
 * last line of defence every line passes through the redactor, which masks every secret value the
 * agent has resolved (see redact.ts).
 */
import process from "node:process";
import type { LogFormat, LogLevel } from "../config/config.ts";

export type Fields = Record<string, unknown>;

export interface Logger {
  debug(msg: string, fields?: Fields): void;
  info(msg: string, fields?: Fields): void;
  warn(msg: string, fields?: Fields): void;
  error(msg: string, fields?: Fields): void;
  /** A logger that adds `fields` to every line. */
  with(fields: Fields): Logger;
}

const RANK: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

export interface LoggerOptions {
  level?: LogLevel;
  format?: LogFormat;
  /** Where lines go; default process.stdout. */
  write?: (line: string) => void;
  /** Applied to every finished line (secret masking). */
  redact?: (line: string) => string;
  isTTY?: boolean;
}

export function createLogger(options: LoggerOptions = {}): Logger {
  const min = RANK[options.level ?? "info"];
  const tty = options.isTTY ?? Boolean(process.stdout.isTTY);
  const json = options.format === "json" || (options.format !== "text" && !tty);
  const write = options.write ?? ((line: string) => process.stdout.write(line));
  const redact = options.redact ?? ((line: string) => line);

  const make = (bound: Fields): Logger => {
    const emit = (level: LogLevel, msg: string, fields?: Fields) => {
      if (RANK[level] < min) return;
      const all = { ...bound, ...fields };
      const ts = new Date().toISOString();
      let line: string;
      if (json) {
        line = JSON.stringify({ ts, level, msg, ...normalise(all) });
      } else {
        const extra = Object.entries(normalise(all))
          .map(([k, v]) => `${k}=${typeof v === "string" && !/\s/.test(v) ? v : JSON.stringify(v)}`)
          .join(" ");
        line = `${ts} ${level.toUpperCase().padEnd(5)} ${msg}${extra ? ` ${extra}` : ""}`;
      }
      write(redact(line) + "\n");
    };
    return {
      debug: (m, f) => emit("debug", m, f),
      info: (m, f) => emit("info", m, f),
      warn: (m, f) => emit("warn", m, f),
      error: (m, f) => emit("error", m, f),
      with: (fields) => make({ ...bound, ...fields }),
    };
  };
  return make({});
}

/** Errors become `{code, message}`; undefined fields are dropped. */
function normalise(fields: Fields): Fields {
  const out: Fields = {};
  for (const [k, v] of Object.entries(fields)) {
    if (v === undefined) continue;
    if (v instanceof Error) {
      const code = (v as { code?: unknown }).code;
      out[k] = typeof code === "string" ? `${code}: ${v.message}` : v.message;
    } else {
      out[k] = v;
    }
  }
  return out;
}

/** A logger that drops everything (tests, `validate`). */
export const silentLogger: Logger = createLogger({ level: "error", write: () => {} });
