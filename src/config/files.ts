/**
 * The files `datahub:` names: `token_file` and `tls.{ca_file, cert_file, key_file}`. Checked when
 * the configuration is compiled (readable, PEM, set together, the key's mode), so that a bad path
 * is a configuration error naming its key rather than a failure at the first request. The files'
 * contents are read again where they are used (gms/transport.ts, gms/token_file.ts), so a rotated
 * token or certificate is picked up there.
 */
import { readFileSync, statSync } from "node:fs";
import type { ConfigIssue } from "./config.ts";

/** The `datahub:` keys about files, as validated by schema.ts (paths already absolute). */
export interface DatahubFiles {
  token: string;
  tokenFile: string;
  tls: { caFile: string; certFile: string; keyFile: string; insecureSkipVerify: boolean };
}

/** Why a file cannot be read, in a few words (ENOENT → "no such file"). */
export function unreadable(err: unknown): string {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  if (code === "ENOENT") return "no such file";
  if (code === "EACCES" || code === "EPERM") return "permission denied";
  if (code === "EISDIR") return "is a directory, not a file";
  return err instanceof Error ? err.message : String(err);
}

/**
 * Reads a token file: its content without surrounding whitespace (a trailing newline is usual).
 * Throws an Error whose message says why (never the content).
 */
export function readTokenFile(file: string): string {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (err) {
    throw new Error(`cannot read ${file}: ${unreadable(err)}`);
  }
  const token = text.trim();
  if (!token) throw new Error(`${file} is empty`);
  if (/\s/.test(token)) throw new Error(`${file} holds more than one word; expected one token`);
  return token;
}

/** Reads a PEM file; undefined and an issue when it is unreadable or holds no `kind`. */
function readPem(
  key: string,
  file: string,
  kind: RegExp,
  what: string,
  issues: ConfigIssue[],
): string | undefined {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (err) {
    issues.push({ path: key, message: `cannot read ${file}: ${unreadable(err)}` });
    return undefined;
  }
  if (!kind.test(text)) {
    issues.push({ path: key, message: `${file} holds no PEM ${what}` });
    return undefined;
  }
  return text;
}

/**
 * Checks the files; resolves the token read from `token_file` (or `token`), the problems (each
 * naming its key) and the warnings (a private key readable by others, verification off).
 */
export function checkDatahubFiles(
  d: DatahubFiles,
): { token: string; issues: ConfigIssue[]; warnings: string[] } {
  const issues: ConfigIssue[] = [];
  const warnings: string[] = [];
  let token = d.token;
  if (d.tokenFile) {
    if (d.token) {
      issues.push({
        path: "datahub.token_file",
        message: "datahub.token and datahub.token_file are both set: use one of them",
      });
    }
    try {
      token = readTokenFile(d.tokenFile);
    } catch (err) {
      issues.push({ path: "datahub.token_file", message: (err as Error).message });
    }
  }
  const { caFile, certFile, keyFile, insecureSkipVerify } = d.tls;
  if (caFile) {
    readPem("datahub.tls.ca_file", caFile, /-----BEGIN CERTIFICATE-----/, "certificate", issues);
  }
  if (certFile && !keyFile) {
    issues.push({
      path: "datahub.tls.key_file",
      message: "datahub.tls.cert_file is set but key_file is not: a client certificate needs both",
    });
  }
  if (keyFile && !certFile) {
    issues.push({
      path: "datahub.tls.cert_file",
      message: "datahub.tls.key_file is set but cert_file is not: a client certificate needs both",
    });
  }
  if (certFile) {
    readPem(
      "datahub.tls.cert_file",
      certFile,
      /-----BEGIN CERTIFICATE-----/,
      "certificate",
      issues,
    );
  }
  if (keyFile) {
    const pem = readPem("datahub.tls.key_file", keyFile, /PRIVATE KEY-----/, "private key", issues);
    let mode: number | undefined;
    try {
      mode = statSync(keyFile).mode & 0o777;
    } catch { /* reported above */ }
    if (pem !== undefined && mode !== undefined && (mode & 0o177) !== 0) {
      warnings.push(
        `datahub.tls.key_file ${keyFile} has mode ${
          mode.toString(8).padStart(4, "0")
        }: a private key should be readable by its owner only (chmod 600 it)`,
      );
    }
  }
  if (insecureSkipVerify) warnings.push(INSECURE_WARNING);
  return { token, issues, warnings };
}

export const INSECURE_WARNING =
  "datahub.tls.insecure_skip_verify is true: GMS's certificate is not verified, so anyone on the " +
  "network path can impersonate GMS and take the agent's credentials; set datahub.tls.ca_file " +
  "to the CA that signed it instead";
