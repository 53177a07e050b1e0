import assert from "node:assert/strict";
import { AgentError } from "../errors.ts";
import {
  hasSink,
  parseRecipe,
  type Recipe,
  secretNames,
  sourceType,
  substituteSecrets,
  withRunId,
} from "./recipe.ts";

const SECRET = "hunter2-SECRET";

function recipeError(text: string): AgentError {
  try {
    parseRecipe(text);
  } catch (err) {
    assert.ok(err instanceof AgentError, `expected an AgentError, got ${err}`);
    assert.equal(err.code, "RECIPE_INVALID");
    return err;
  }
  assert.fail("expected the recipe to be rejected");
}

Deno.test("parseRecipe: a JSON recipe", () => {
  const r = parseRecipe(
    JSON.stringify({ source: { type: "mysql", config: { host: "db" } }, sink: { type: "x" } }),
  );
  assert.deepEqual(r.source, { type: "mysql", config: { host: "db" } });
  assert.equal(sourceType(r), "mysql");
  assert.equal(hasSink(r), true);
});

Deno.test("parseRecipe: a YAML recipe", () => {
  const r = parseRecipe(
    "source:\n  type: snowflake\n  config:\n    password: ${SF_PASS}\n    port: 443\n",
  );
  assert.deepEqual(r, {
    source: { type: "snowflake", config: { password: "${SF_PASS}", port: 443 } },
  });
  assert.equal(sourceType(r), "snowflake");
  assert.equal(hasSink(r), false);
});

Deno.test("hasSink: a null sink is no sink", () => {
  assert.equal(hasSink({ source: { type: "a" }, sink: null }), false);
  assert.equal(hasSink({ source: { type: "a" }, sink: { type: "datahub-rest" } }), true);
});

Deno.test("parseRecipe: malformed JSON gives line and column, never the recipe text", () => {
  const text =
    `{\n  "source": {\n    "type": "mysql",\n    "config": {"password": "${SECRET}" "x": 1}\n  }\n}`;
  const err = recipeError(text);
  assert.match(err.message, /not valid JSON/);
  assert.match(err.message, /line 4, column \d+/);
  assert.ok(!err.message.includes(SECRET), err.message);
  assert.ok(!err.message.includes("hunter2"), err.message);
});

Deno.test("parseRecipe: truncated JSON gives a position at the end, never the recipe text", () => {
  const text =
    `{\n  "source": {\n    "type": "mysql",\n    "config": {"password": "${SECRET}"}\n  }\n`;
  const err = recipeError(text);
  assert.match(err.message, /not valid JSON/);
  assert.match(err.message, /line \d+, column \d+/);
  assert.ok(!err.message.includes(SECRET), err.message);
});

Deno.test("parseRecipe: malformed YAML is RECIPE_INVALID without the recipe text", () => {
  for (
    const text of [
      `source:\n  type: mysql\n  config:\n    password: "${SECRET}\n`,
      `source:\n  type: mysql\n  config:\n    password: ${SECRET}\n   bad: [1\n`,
      `source: {type: mysql, password: ${SECRET}`,
    ]
  ) {
    const err = recipeError(text);
    assert.match(err.message, /not valid YAML/);
    assert.ok(!err.message.includes(SECRET), err.message);
    assert.ok(!err.message.includes("hunter2"), err.message);
  }
});

Deno.test("parseRecipe: empty, non-mapping and source-less recipes are rejected", () => {
  assert.match(recipeError("").message, /no recipe/);
  assert.match(recipeError("   \n ").message, /no recipe/);
  assert.match(recipeError("[1, 2]").message, /mapping/);
  assert.match(recipeError('"just a string"').message, /mapping/);
  assert.match(recipeError("42").message, /mapping/);
  assert.match(recipeError('{"sink": {"type": "datahub-rest"}}').message, /source\.type/);
  assert.match(recipeError('{"source": {"config": {}}}').message, /source\.type/);
  assert.match(recipeError('{"source": {"type": 3}}').message, /source\.type/);
  assert.match(recipeError("source: mysql\n").message, /source\.type/);
});

Deno.test("secretNames: only ${NAME}, in order of appearance, without duplicates", () => {
  const recipe = {
    source: {
      type: "mysql",
      config: {
        username: "${DB_USER}",
        password: "${DB_PASS}",
        uri: "mysql://${DB_USER}:${DB_PASS}@${DB_HOST}/x",
        port: 3306,
        defaulted: "${WITH_DEFAULT:-x}",
        shell: "$SHELL_STYLE and $ALSO",
        list: ["${IN_LIST}", { deep: "pre-${DEEP}-post" }],
        nothing: null,
      },
    },
  };
  assert.deepEqual(secretNames(recipe), ["DB_USER", "DB_PASS", "DB_HOST", "IN_LIST", "DEEP"]);
  assert.deepEqual(secretNames({ source: { type: "a" } }), []);
  assert.deepEqual(secretNames("${ONE} ${TWO} ${ONE}"), ["ONE", "TWO"]);
});

Deno.test("substituteSecrets: awkward values survive JSON.stringify/JSON.parse exactly", () => {
  const values = new Map([
    ["QUOTED", `pa"ss'word`],
    ["BACKSLASH", "C:\\path\\to\\key\\"],
    ["NEWLINES", "-----BEGIN KEY-----\nabc\r\ndef\n-----END KEY-----\n"],
    ["DOLLARS", "${NOT_A_SECRET} $& $1 $$"],
    ["UNICODE", "pässwörd ✓ \u0000 \t"],
  ]);
  const recipe: Recipe = {
    source: {
      type: "postgres",
      config: {
        a: "${QUOTED}",
        b: "${BACKSLASH}",
        c: "${NEWLINES}",
        d: "${DOLLARS}",
        e: "prefix ${UNICODE} suffix",
        list: ["${QUOTED}", 1, true, null],
      },
    },
  };
  const out = substituteSecrets(recipe, values);
  const roundTrip = JSON.parse(JSON.stringify(out)) as Recipe;
  const config = (roundTrip.source as Recipe).config as Recipe;
  assert.equal(config.a, values.get("QUOTED"));
  assert.equal(config.b, values.get("BACKSLASH"));
  assert.equal(config.c, values.get("NEWLINES"));
  // A value's own ${...} is not substituted again.
  assert.equal(config.d, values.get("DOLLARS"));
  assert.equal(config.e, `prefix ${values.get("UNICODE")} suffix`);
  assert.deepEqual(config.list, [values.get("QUOTED"), 1, true, null]);
  // The input is not modified.
  assert.equal(((recipe.source as Recipe).config as Recipe).a, "${QUOTED}");
});

Deno.test("substituteSecrets: unknown names and non-secret syntax are left as they are", () => {
  const out = substituteSecrets(
    { source: { type: "x", config: { a: "${UNKNOWN}", b: "${V:-d}", c: "$V", d: "${V}" } } },
    new Map([["V", "value"]]),
  );
  assert.deepEqual((out.source as Recipe).config, {
    a: "${UNKNOWN}",
    b: "${V:-d}",
    c: "$V",
    d: "value",
  });
});

Deno.test("withRunId: sets run_id on a copy, replacing an existing one", () => {
  const recipe: Recipe = { source: { type: "x" }, run_id: "old" };
  const out = withRunId(recipe, "4f1c-uuid");
  assert.equal(out.run_id, "4f1c-uuid");
  assert.deepEqual(out.source, { type: "x" });
  assert.equal(recipe.run_id, "old");
  assert.equal(withRunId({ source: { type: "x" } }, "id-2").run_id, "id-2");
});

Deno.test("parseRecipe: malformed YAML error gives line and column", () => {
  const text = 'source:\n  type: mysql\n  config:\n    password: "hunter2-SECRET\n';
  try {
    parseRecipe(text);
    assert.fail("expected a rejection");
  } catch (err) {
    assert.ok(err instanceof AgentError);
    assert.equal(err.code, "RECIPE_INVALID");
    assert.match(err.message, /line \d+, column \d+/);
    assert.ok(!err.message.includes("hunter2-SECRET"));
  }
});
