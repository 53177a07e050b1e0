import assert from "node:assert/strict";
import { createLogger } from "./log.ts";
import { AgentError } from "../errors.ts";
import { Redactor } from "../run/redact.ts";

function capture(options: Parameters<typeof createLogger>[0]) {
  const lines: string[] = [];
  return { lines, log: createLogger({ ...options, write: (l) => lines.push(l) }) };
}

Deno.test("log: JSON lines when stdout is not a terminal, text on a terminal, or as configured", () => {
  const json = capture({ isTTY: false });
  json.log.info("claimed", { urn: "urn:li:x:1" });
  const parsed = JSON.parse(json.lines[0]!);
  assert.equal(parsed.level, "info");
  assert.equal(parsed.msg, "claimed");
  assert.equal(parsed.urn, "urn:li:x:1");
  assert.match(parsed.ts, /^\d{4}-\d\d-\d\dT/);

  const text = capture({ isTTY: true });
  text.log.warn("slow", { after: "3 tries" });
  assert.match(text.lines[0]!, /^\S+Z WARN {2}slow after="3 tries"\n$/);

  const forced = capture({ isTTY: true, format: "json" });
  forced.log.info("x");
  assert.doesNotThrow(() => JSON.parse(forced.lines[0]!));
});

Deno.test("log: the level filters; with() adds fields; errors show their code", () => {
  const { lines, log } = capture({ isTTY: false, level: "warn" });
  log.info("dropped");
  log.debug("dropped too");
  log.with({ urn: "u" }).error("failed", {
    error: new AgentError("SECRET_MISSING", "secret 'X' not found"),
  });
  assert.equal(lines.length, 1);
  const line = JSON.parse(lines[0]!);
  assert.equal(line.urn, "u");
  assert.equal(line.error, "SECRET_MISSING: secret 'X' not found");
});

Deno.test("log: every line passes through the redactor", () => {
  const redactor = new Redactor();
  redactor.add("token", "tok-12345-secret");
  const { lines, log } = capture({ isTTY: false, redact: redactor.mask });
  log.error("GMS said: bad token tok-12345-secret", { header: "Bearer tok-12345-secret" });
  assert.ok(!lines[0]!.includes("tok-12345-secret"));
  assert.match(lines[0]!, /\*{8}/);
});
