import assert from "node:assert/strict";
import { AgentError } from "../errors.ts";
import { parseExtraEnv, parseJsonList } from "./prepare.ts";

function argumentError(fn: () => unknown): AgentError {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof AgentError, `expected an AgentError, got ${err}`);
    assert.equal(err.code, "ARGUMENT_INVALID");
    return err;
  }
  assert.fail("expected ARGUMENT_INVALID");
}

Deno.test("parseExtraEnv: absent or blank means no variables", () => {
  assert.deepEqual(parseExtraEnv(undefined), {});
  assert.deepEqual(parseExtraEnv(""), {});
  assert.deepEqual(parseExtraEnv("  \n"), {});
  assert.deepEqual(parseExtraEnv("{}"), {});
});

Deno.test("parseExtraEnv: string values as is, other values stringified", () => {
  assert.deepEqual(
    parseExtraEnv(
      JSON.stringify({
        A: "x y",
        _B1: "",
        NUM: 3,
        FLOAT: 1.5,
        YES: true,
        NO: false,
        NIL: null,
        OBJ: { k: [1, "v"] },
        LIST: ["a"],
      }),
    ),
    {
      A: "x y",
      _B1: "",
      NUM: "3",
      FLOAT: "1.5",
      YES: "true",
      NO: "false",
      NIL: "null",
      OBJ: '{"k":[1,"v"]}',
      LIST: '["a"]',
    },
  );
});

Deno.test("parseExtraEnv: invalid JSON is ARGUMENT_INVALID without echoing the value", () => {
  const err = argumentError(() => parseExtraEnv('{"TOKEN": "hunter2-SECRET"'));
  assert.match(err.message, /not valid JSON/);
  assert.ok(!err.message.includes("hunter2"), err.message);
});

Deno.test("parseExtraEnv: a JSON value that is not an object is ARGUMENT_INVALID", () => {
  for (const raw of ["[]", '["A=1"]', '"A=1"', "1", "null", "true"]) {
    const err = argumentError(() => parseExtraEnv(raw));
    assert.match(err.message, /must be a JSON object/, raw);
  }
});

Deno.test("parseExtraEnv: invalid variable names are rejected and named", () => {
  for (const name of ["1ABC", "A-B", "A B", "", "A=B", "É"]) {
    const err = argumentError(() => parseExtraEnv(JSON.stringify({ [name]: "v" })));
    assert.ok(err.message.includes(JSON.stringify(name)), err.message);
  }
});

Deno.test("parseJsonList: absent or blank means an empty list", () => {
  assert.deepEqual(parseJsonList("extra_pip_requirements", undefined), []);
  assert.deepEqual(parseJsonList("extra_pip_requirements", ""), []);
  assert.deepEqual(parseJsonList("extra_pip_requirements", "  "), []);
  assert.deepEqual(parseJsonList("extra_pip_requirements", "[]"), []);
});

Deno.test("parseJsonList: a JSON array gives its items as strings", () => {
  assert.deepEqual(
    parseJsonList("extra_pip_plugins", '["acryl-datahub[mysql]==0.14.1", "pandas<3"]'),
    ["acryl-datahub[mysql]==0.14.1", "pandas<3"],
  );
  assert.deepEqual(parseJsonList("x", "[1, true]"), ["1", "true"]);
});

Deno.test("parseJsonList: anything else is ARGUMENT_INVALID naming the argument", () => {
  for (const raw of ["pandas", '"pandas"', '{"a": 1}', "[1,", "null", "3"]) {
    const err = argumentError(() => parseJsonList("extra_pip_requirements", raw));
    assert.match(err.message, /^extra_pip_requirements must be a JSON array/, raw);
  }
});
