import assert from "node:assert/strict";
import { AgentError, GmsError } from "../errors.ts";
import { secretDenial } from "../gms/secret_denial.ts";
import { resolveSecrets } from "./secrets.ts";

/** A fake GMS whose secretValues answers from a map (or throws), recording every call. */
function fakeGms(answer: Record<string, string> | (() => never)) {
  const calls: string[][] = [];
  return {
    calls,
    secretValues: (names: string[]): Promise<Map<string, string>> => {
      calls.push([...names]);
      if (typeof answer === "function") return Promise.reject(tryCall(answer));
      return Promise.resolve(
        new Map(Object.entries(answer).filter(([k]) => names.includes(k))),
      );
    },
  };
}

function tryCall(fn: () => never): unknown {
  try {
    fn();
  } catch (err) {
    return err;
  }
}

async function rejection(p: Promise<unknown>): Promise<AgentError> {
  const err = await p.then(() => assert.fail("expected a rejection"), (e: unknown) => e);
  assert.ok(err instanceof AgentError, `expected an AgentError, got ${err}`);
  return err;
}

Deno.test("resolveSecrets: no names, no call to GMS", async () => {
  const gms = fakeGms({ A: "x" });
  const out = await resolveSecrets([], gms, { A: "y" });
  assert.equal(gms.calls.length, 0);
  assert.equal(out.values.size, 0);
  assert.deepEqual(out.notes, []);
});

Deno.test("resolveSecrets: one call for all names; DataHub wins over the environment", async () => {
  const gms = fakeGms({ DB_PASS: "from-datahub" });
  const out = await resolveSecrets(["DB_PASS", "API_KEY"], gms, {
    DB_PASS: "from-env",
    API_KEY: "env-key",
  });
  assert.deepEqual(gms.calls, [["DB_PASS", "API_KEY"]]);
  assert.equal(out.values.get("DB_PASS"), "from-datahub");
  // Not in DataHub: the environment is used.
  assert.equal(out.values.get("API_KEY"), "env-key");
  assert.deepEqual(out.notes, []);
});

Deno.test("resolveSecrets: an empty DataHub value still wins (it is defined)", async () => {
  const out = await resolveSecrets(["E"], fakeGms({ E: "" }), { E: "env" });
  assert.equal(out.values.get("E"), "");
});

Deno.test("resolveSecrets: a missing secret is SECRET_MISSING naming it, with no value", async () => {
  const gms = fakeGms({ FOUND_DH: "dh-value-123" });
  const err = await rejection(
    resolveSecrets(["FOUND_DH", "NOWHERE", "FOUND_ENV"], gms, {
      FOUND_ENV: "env-value-456",
      UNRELATED: "unrelated-789",
    }),
  );
  assert.equal(err.code, "SECRET_MISSING");
  assert.match(err.message, /'NOWHERE'/);
  assert.ok(!err.message.includes("FOUND_DH"), err.message);
  assert.ok(!err.message.includes("FOUND_ENV"), err.message);
  for (const value of ["dh-value-123", "env-value-456", "unrelated-789"]) {
    assert.ok(!err.message.includes(value), err.message);
  }
});

Deno.test("resolveSecrets: several missing secrets are all named", async () => {
  const err = await rejection(resolveSecrets(["A1", "B2"], fakeGms({}), {}));
  assert.equal(err.code, "SECRET_MISSING");
  assert.match(err.message, /secrets 'A1', 'B2' not found: define them in DataHub/);
});

Deno.test("resolveSecrets: one missing secret is 'define it'; refused ones follow the count too", async () => {
  const one = await rejection(resolveSecrets(["A1"], fakeGms({}), {}));
  assert.match(one.message, /^secret 'A1' not found: define it in DataHub/);
  const refuse = (n: string) => `'${n}' is refused`;
  const single = await rejection(resolveSecrets(["X"], fakeGms({}), { X: "x" }, refuse));
  assert.equal(single.code, "SECRET_NOT_ALLOWED");
  assert.match(single.message, /: define it in DataHub/);
  const both = await rejection(resolveSecrets(["X", "Y"], fakeGms({}), { X: "x", Y: "y" }, refuse));
  assert.match(both.message, /'X' is refused; 'Y' is refused: define them in DataHub/);
});

Deno.test("resolveSecrets: access denied with every name in the env uses the env and adds a note", async () => {
  const gms = fakeGms(() => {
    throw new AgentError("SECRET_ACCESS_DENIED", "getSecretValues: Unauthorized");
  });
  const out = await resolveSecrets(["A", "B"], gms, { A: "env-a", B: "env-b" });
  assert.equal(gms.calls.length, 1);
  assert.deepEqual([...out.values], [["A", "env-a"], ["B", "env-b"]]);
  assert.equal(out.notes.length, 1);
  assert.match(out.notes[0]!, /refused/);
  assert.match(out.notes[0]!, /2 secret\(s\)/);
  assert.ok(!out.notes[0]!.includes("env-a"));
});

Deno.test("resolveSecrets: access denied with a name missing from the env rethrows the denial", async () => {
  const denial = new AgentError("SECRET_ACCESS_DENIED", "getSecretValues: Unauthorized");
  const gms = fakeGms(() => {
    throw denial;
  });
  const err = await rejection(resolveSecrets(["A", "B"], gms, { A: "env-a" }));
  assert.equal(err, denial);
  assert.equal(err.code, "SECRET_ACCESS_DENIED");
});

Deno.test("resolveSecrets: another GMS failure is SECRET_MISSING with the cause kept", async () => {
  const cause = new GmsError("GMS_UNAVAILABLE", "secretValues", "HTTP 503", { status: 503 });
  const gms = fakeGms(() => {
    throw cause;
  });
  const err = await rejection(resolveSecrets(["A"], gms, { A: "env-a" }));
  assert.equal(err.code, "SECRET_MISSING");
  assert.equal(err.cause, cause);
  assert.match(err.message, /HTTP 503/);
  assert.ok(!err.message.includes("env-a"));
});

Deno.test("resolveSecrets: a non-GMS error passes through unchanged", async () => {
  const boom = new TypeError("bug");
  const gms = fakeGms(() => {
    throw boom;
  });
  const err = await resolveSecrets(["A"], gms, { A: "x" }).then(
    () => assert.fail("expected a rejection"),
    (e: unknown) => e,
  );
  assert.equal(err, boom);
});

Deno.test("resolveSecrets: a passing GMS failure is retried; a lasting one fails the run naming no value", async () => {
  let calls = 0;
  const flaky = {
    secretValues: (names: string[]) => {
      calls++;
      if (calls === 1) {
        return Promise.reject(
          new GmsError("GMS_UNAVAILABLE", "getSecretValues", "HTTP 503", { status: 503 }),
        );
      }
      return Promise.resolve(new Map(names.map((n) => [n, `value-of-${n}`])));
    },
  };
  const ok = await resolveSecrets(["A"], flaky, {});
  assert.equal(ok.values.get("A"), "value-of-A");
  assert.equal(calls, 2);

  let denied = 0;
  const broken = {
    secretValues: () => {
      denied++;
      return Promise.reject(
        new GmsError("GMS_REJECTED", "getSecretValues", "HTTP 400: bad", { status: 400 }),
      );
    },
  };
  await assert.rejects(resolveSecrets(["A"], broken, { A: "env-secret-value" }), (err: unknown) => {
    assert.ok(err instanceof AgentError);
    assert.ok(!err.message.includes("env-secret-value"));
    return true;
  });
  assert.equal(denied, 1, "a non-retryable error is not retried");
});

// How a refused getSecretValues is explained (gms/secret_denial.ts, used by the run's report
// and by doctor): the caller guard only where GMS's answer or its version shows it.
const PRIVILEGE_ANSWER =
  "getSecretValues: Unauthorized to perform this action. Please contact your DataHub administrator.";
const GUARD_ANSWER =
  "getSecretValues: Unauthorized to decrypt secrets: SecretService caller guard (SECRET_SERVICE_CALLER_GUARD_MODE=ENFORCE) denies non-system actor urn:li:corpuser:datahub";

Deno.test("secretDenial: a token refused by GMS v1.3.0 lacks Manage Secrets; no caller guard", () => {
  const d = secretDenial(PRIVILEGE_ANSWER, "v1.3.0", "token");
  assert.equal(d.cause, "privilege");
  assert.match(
    d.why,
    /^the token lacks the Manage Secrets privilege \(GMS v1\.3\.0 has no secret caller guard\)/,
  );
  assert.match(d.fix, /give the token's user the Manage Secrets platform privilege/);
  assert.doesNotMatch(`${d.why} ${d.fix}`, /v1\.6|SECRET_SERVICE_CALLER_GUARD_MODE/);
  // Unknown version, nothing about the guard in the answer: still the privilege.
  const unknown = secretDenial(PRIVILEGE_ANSWER, undefined, "token");
  assert.equal(unknown.cause, "privilege");
  assert.match(unknown.why, /version is unknown/);
});

Deno.test("secretDenial: the answer naming the caller guard blames it, whatever the version", () => {
  for (const version of ["v1.3.0", "v1.6.0.6", undefined]) {
    const d = secretDenial(GUARD_ANSWER, version, "token");
    assert.equal(d.cause, "caller-guard", String(version));
    assert.match(d.why, /secret caller guard \(SECRET_SERVICE_CALLER_GUARD_MODE=ENFORCE/);
    assert.match(d.fix, /^set datahub\.system_client_id and datahub\.system_client_secret/);
  }
  const system = secretDenial(GUARD_ANSWER, "v1.7.0", "system-client");
  assert.match(system.fix, /^check that datahub\.system_client_id .* GMS's own system client/);
});

Deno.test("secretDenial: from GMS v1.6.0 a generic refusal names both the guard and the privilege", () => {
  for (const version of ["v1.6.0", "1.6.1", "v1.7.0-SNAPSHOT", "v2.0.0"]) {
    const d = secretDenial(PRIVILEGE_ANSWER, version, "token");
    assert.equal(d.cause, "guard-or-privilege", version);
    assert.match(
      d.why,
      new RegExp(`^GMS ${version.replace(/\./g, "\\.")} has the secret caller guard`),
    );
    assert.match(d.why, /Manage Secrets/);
  }
  assert.equal(secretDenial(PRIVILEGE_ANSWER, "v1.5.9", "token").cause, "privilege");
  // System auth passes the guard: a refusal of it is about the credentials.
  const system = secretDenial(PRIVILEGE_ANSWER, "v1.6.0", "system-client");
  assert.equal(system.cause, "privilege");
  assert.match(system.fix, /GMS's own system client/);
});
