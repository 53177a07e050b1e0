/**
 * Every GraphQL document the agent sends must validate against the real upstream schema
 * (../shared/datahub-graphql, read in place, never copied into the project), and the variables
 * it builds must coerce to the declared input types.
 */
import assert from "node:assert/strict";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { buildSchema, getVariableValues, type GraphQLSchema, parse, validate } from "graphql";
import { searchVariables } from "../../src/gms/client.ts";
import { ALL_OPERATIONS } from "../../src/gms/operations.ts";

const ROOT = path.resolve(path.dirname(new URL(import.meta.url).pathname), "../..");
const SCHEMA_DIR = path.resolve(ROOT, "../shared/datahub-graphql");
const present = existsSync(SCHEMA_DIR);

function upstreamSchema(): GraphQLSchema {
  const sdl = readdirSync(SCHEMA_DIR).filter((f) => f.endsWith(".graphql")).sort()
    .map((f) => readFileSync(path.join(SCHEMA_DIR, f), "utf8")).join("\n");
  return buildSchema(sdl);
}

Deno.test({
  name: "contract: every GraphQL operation validates against the upstream DataHub schema",
  ignore: !present,
  fn() {
    const schema = upstreamSchema();
    assert.ok(Object.keys(ALL_OPERATIONS).length >= 3);
    for (const [name, text] of Object.entries(ALL_OPERATIONS)) {
      const errors = validate(schema, parse(text));
      assert.deepEqual(errors.map((e) => e.message), [], `${name} does not validate`);
    }
  },
});

Deno.test({
  name: "contract: discovery variables coerce to the upstream input types",
  ignore: !present,
  fn() {
    const schema = upstreamSchema();
    const doc = parse(ALL_OPERATIONS.DISCOVER_SEARCH!);
    const op = doc.definitions[0];
    assert.ok(op && op.kind === "OperationDefinition");
    for (const executorId of ["default", "remote-pool"]) {
      const coerced = getVariableValues(
        schema,
        op.variableDefinitions ?? [],
        searchVariables(executorId, { count: 20 }),
      );
      assert.equal(coerced.errors, undefined, JSON.stringify(coerced.errors));
    }
    const broken = getVariableValues(schema, op.variableDefinitions ?? [], {
      ...searchVariables("default", { count: 20 }),
      pendingFilters: [{ and: [{ field: "executorId", condition: "EQUALS" }] }],
    });
    assert.ok(broken.errors && broken.errors.length > 0, "a wrong enum value is caught");
  },
});
