import assert from "node:assert/strict";
import { MASK, MIN_SECRET_LENGTH, Redactor } from "./redact.ts";

function b64(s: string): string {
  let binary = "";
  for (const b of new TextEncoder().encode(s)) binary += String.fromCharCode(b);
  return btoa(binary);
}

Deno.test("Redactor: masks the raw value wherever it appears", () => {
  const r = new Redactor();
  r.add("DB_PASS", "s3cr3t-value");
  assert.equal(r.mask("password=s3cr3t-value;"), `password=${MASK};`);
  assert.equal(r.mask("s3cr3t-value s3cr3t-value"), `${MASK} ${MASK}`);
  assert.equal(r.mask("nothing to see"), "nothing to see");
});

Deno.test("Redactor: masks the JSON-escaped form of a value with quotes, backslash and newline", () => {
  const value = 'Zq"ss\\wo\nrd-xyz';
  const r = new Redactor();
  r.add("P", value);
  const json = JSON.stringify({ password: value });
  assert.ok(!json.includes(value)); // only the escaped form is in the text
  const masked = r.mask(json);
  assert.equal(masked, `{"password":"${MASK}"}`);
  // JSON inside JSON (a structured report embedded in a string).
  const nested = JSON.stringify({ report: json });
  assert.ok(!r.mask(nested).includes("Zq"), r.mask(nested));
  assert.equal(r.mask(nested), JSON.stringify({ report: `{"password":"${MASK}"}` }));
  assert.ok(r.mask(nested).includes(MASK));
});

Deno.test("Redactor: masks URL-encoded forms (%20 and +)", () => {
  const value = "my pass/word&=?";
  const r = new Redactor();
  r.add("P", value);
  const encoded = encodeURIComponent(value);
  assert.notEqual(encoded, value);
  assert.equal(r.mask(`https://u:${encoded}@host/db`), `https://u:${MASK}@host/db`);
  const plus = encoded.replace(/%20/g, "+");
  assert.equal(r.mask(`q=${plus}&x=1`), `q=${MASK}&x=1`);
});

Deno.test("Redactor: masks base64 with and without padding", () => {
  const value = "secret1"; // 7 bytes: base64 ends with "=="
  const padded = b64(value);
  assert.ok(padded.endsWith("=="));
  const unpadded = padded.replace(/=+$/, "");
  const r = new Redactor();
  r.add("P", value);
  assert.equal(r.mask(`Authorization: Basic ${padded}`), `Authorization: Basic ${MASK}`);
  assert.equal(r.mask(`token=${unpadded}.`), `token=${MASK}.`);
  assert.ok(!r.mask(`x${padded}x`).includes(unpadded));
});

Deno.test("Redactor: values shorter than MIN_SECRET_LENGTH are not masked but listed in tooShort", () => {
  assert.equal(MIN_SECRET_LENGTH, 4);
  const r = new Redactor();
  r.add("PIN", "abc");
  r.add("EMPTY", "");
  r.add("OK", "abcd");
  assert.deepEqual([...r.tooShort], ["PIN"]);
  assert.equal(r.mask("xyz abc xyz"), "xyz abc xyz");
  assert.equal(r.mask("abcd"), MASK);
  const none = new Redactor();
  none.add("PIN", "abc");
  assert.equal(none.size, 0);
  assert.equal(none.mask("abc abc"), "abc abc");
});

Deno.test("Redactor: each substantial line of a multi-line secret is masked on its own", () => {
  const key = [
    "-----BEGIN PRIVATE KEY-----",
    "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC",
    "BKcwggSjAgEAAoIBAQC7VJTUt9Us8cKj",
    "ab",
    "-----END PRIVATE KEY-----",
  ].join("\n");
  const r = new Redactor();
  r.add("KEY", key);
  // The CLI prints the key line by line.
  const lines = key.split("\n").map((l) => `DEBUG key: ${l}`);
  const masked = lines.map(r.mask);
  assert.equal(masked[1], `DEBUG key: ${MASK}`);
  assert.equal(masked[2], `DEBUG key: ${MASK}`);
  assert.equal(masked[0], `DEBUG key: ${MASK}`);
  // Short lines are not patterns: they would mask too much.
  assert.equal(masked[3], "DEBUG key: ab");
  assert.equal(r.mask("about"), "about");
  // CRLF line endings are handled too.
  const crlf = new Redactor();
  crlf.add("KEY", "line-one-1234\r\nline-two-5678");
  assert.equal(crlf.mask("x line-one-1234 y"), `x ${MASK} y`);
  assert.equal(crlf.mask("x line-two-5678 y"), `x ${MASK} y`);
});

Deno.test("Redactor: the longest value is masked first (no half-masked values)", () => {
  const r = new Redactor();
  r.add("SHORT", "abcd");
  r.add("LONG", "abcdefgh");
  assert.equal(r.mask("xabcdefghx"), `x${MASK}x`);
  assert.equal(r.mask("xabcdx"), `x${MASK}x`);
  const reversed = new Redactor();
  reversed.add("LONG", "abcdefgh");
  reversed.add("SHORT", "abcd");
  assert.equal(reversed.mask("xabcdefghx"), `x${MASK}x`);
});

Deno.test("Redactor: regex metacharacters in values are literal", () => {
  const r = new Redactor();
  r.add("P", "a.b*c+(d)|e$");
  assert.equal(r.mask("aXbbbcd"), "aXbbbcd");
  assert.equal(r.mask("e"), "e");
  assert.equal(r.mask("[a.b*c+(d)|e$]"), `[${MASK}]`);
});

Deno.test("Redactor: a secret added after masking is masked from then on", () => {
  const r = new Redactor();
  r.add("A", "first-secret");
  assert.equal(r.mask("first-secret second-secret"), `${MASK} second-secret`);
  r.add("B", "second-secret");
  assert.equal(r.mask("first-secret second-secret"), `${MASK} ${MASK}`);
});

Deno.test("Redactor.addAll: the agent-wide redactor masks a run's secrets", () => {
  const agent = new Redactor();
  agent.add("AGENT", "agent-token-1");
  assert.equal(agent.mask("run-secret-2 agent-token-1"), `run-secret-2 ${MASK}`);
  const run = new Redactor();
  run.add("RUN", "run-secret-2");
  agent.addAll(run);
  assert.equal(agent.mask("run-secret-2 agent-token-1"), `${MASK} ${MASK}`);
  // Encodings come along too.
  assert.equal(agent.mask(b64("run-secret-2")), MASK);
  assert.ok(agent.size >= run.size + 1);
  // The other redactor is unchanged.
  assert.equal(run.mask("agent-token-1"), "agent-token-1");
});

Deno.test("Redactor: without secrets text is returned unchanged", () => {
  const r = new Redactor();
  assert.equal(r.size, 0);
  const text = "********  anything goes ${X}";
  assert.equal(r.mask(text), text);
});
