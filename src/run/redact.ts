/**
 * Secret masking. Every secret value resolved for a run, and its common encodings (JSON-escaped,
 * URL-encoded, base64), is replaced by `********` before text reaches run.log, a report written
 * to GMS, an error message or the agent's own log. Output is masked per line, after the pipe's
 * chunks were joined into lines, so a value split across two reads is still caught.
 */

export const MASK = "********";
/** Shorter values are not masked: they would mask everything (the run's report says so). */
export const MIN_SECRET_LENGTH = 4;

export class Redactor {
  readonly #patterns = new Set<string>();
  #regex: RegExp | undefined;
  /** Secrets too short to mask, by name (reported, never printed). */
  readonly tooShort = new Set<string>();

  /** Registers a secret value under its name. */
  add(name: string, value: string): void {
    if (value.length < MIN_SECRET_LENGTH) {
      if (value.length > 0) this.tooShort.add(name);
      return;
    }
    const before = this.#patterns.size;
    for (const form of encodings(value)) {
      if (form.length >= MIN_SECRET_LENGTH) this.#patterns.add(form);
    }
    // A multi-line value (a private key) is printed line by line: mask each substantial line.
    if (value.includes("\n")) {
      for (const line of value.split(/\r?\n/)) {
        if (line.trim().length >= 8) this.#patterns.add(line);
      }
    }
    if (this.#patterns.size !== before) this.#regex = undefined;
  }

  /** Adds every secret of another redactor (a run's secrets to the agent-wide one). */
  addAll(other: Redactor): void {
    for (const p of other.#patterns) this.#patterns.add(p);
    this.#regex = undefined;
  }

  /** The masked forms (kept in the 0600 journal, so a restarted agent still masks a run). */
  patterns(): string[] {
    return [...this.#patterns];
  }

  /** Adds masked forms saved by `patterns()`. */
  addPatterns(patterns: readonly string[]): void {
    for (const p of patterns) if (p.length >= MIN_SECRET_LENGTH) this.#patterns.add(p);
    this.#regex = undefined;
  }

  get size(): number {
    return this.#patterns.size;
  }

  mask = (text: string): string => {
    if (this.#patterns.size === 0 || text.length < MIN_SECRET_LENGTH) return text;
    if (!this.#regex) {
      // Longest first, so a value's encoding is not half-masked by a shorter value inside it.
      const sorted = [...this.#patterns].sort((a, b) => b.length - a.length);
      this.#regex = new RegExp(sorted.map(escapeRegExp).join("|"), "g");
    }
    return text.replace(this.#regex, MASK);
  };
}

function encodings(value: string): string[] {
  const forms = new Set<string>([value]);
  const json = JSON.stringify(value).slice(1, -1);
  forms.add(json);
  forms.add(JSON.stringify(json).slice(1, -1)); // JSON inside JSON (structured reports)
  forms.add(encodeURIComponent(value));
  forms.add(encodeURIComponent(value).replace(/%20/g, "+"));
  const b64 = toBase64(value);
  forms.add(b64);
  forms.add(b64.replace(/=+$/, ""));
  return [...forms];
}

function toBase64(value: string): string {
  const bytes = new TextEncoder().encode(value);
  let binary = "";
  for (const b of bytes) binary += String.fromCharCode(b);
  return btoa(binary);
}

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}
