import assert from "node:assert/strict";
import http from "node:http";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { GmsError } from "../errors.ts";
import { GmsHttp } from "./http.ts";

/** A server accepting one Bearer token at a time; the log has the status of every request. */
async function withRotation(
  fn: (o: {
    client: GmsHttp;
    file: string;
    accept: (token: string) => void;
    statuses: number[];
    secrets: string[];
  }) => Promise<void>,
) {
  const dir = await mkdtemp(path.join(os.tmpdir(), "http-token-"));
  const file = path.join(dir, "token");
  await writeFile(file, "old-token-aaaa\n");
  let accepted = "old-token-aaaa";
  const statuses: number[] = [];
  const server = http.createServer((req, res) => {
    req.resume();
    const ok = req.headers.authorization === `Bearer ${accepted}`;
    statuses.push(ok ? 200 : 401);
    res.writeHead(ok ? 200 : 401, { "content-type": "application/json" });
    res.end(JSON.stringify(ok ? { data: {} } : { error: "Unauthorized" }));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const client = new GmsHttp({
    server: `http://127.0.0.1:${(server.address() as { port: number }).port}`,
    token: "old-token-aaaa",
    systemClientId: "",
    systemClientSecret: "",
    timeoutMs: 5_000,
    tokenFile: file,
  });
  const secrets: string[] = [];
  client.onSecret = (name, value) => secrets.push(`${name}=${value}`);
  try {
    await fn({ client, file, accept: (t) => accepted = t, statuses, secrets });
  } finally {
    await client.close();
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
    await rm(dir, { recursive: true, force: true });
  }
}

Deno.test("GmsHttp with token_file: a 401 re-reads the file and retries once with the new token", async () => {
  await withRotation(async ({ client, file, accept, statuses, secrets }) => {
    assert.equal(client.authKind, "token");
    assert.deepEqual(secrets, ["datahub.token_file=old-token-aaaa"], "the current token, at once");
    await client.json("read", "GET", "/x");
    // Rewritten within the second the file is not stat'ed again: only the 401 reveals it.
    await writeFile(file, "new-token-bbbb\n");
    accept("new-token-bbbb");
    assert.equal((await client.json("read", "GET", "/x")).status, 200);
    assert.deepEqual(statuses, [200, 401, 200]);
    assert.deepEqual(secrets.at(-1), "datahub.token_file=new-token-bbbb", "masked before use");
    // And again for a POST (the GraphQL path).
    await writeFile(file, "third-token-cccc\n");
    accept("third-token-cccc");
    const res = await client.json("graphql", "POST", "/api/graphql", { body: {} });
    assert.equal(res.status, 200);
    assert.deepEqual(statuses, [200, 401, 200, 401, 200]);
  });
});

Deno.test("GmsHttp with token_file: a 401 with an unchanged file is not retried", async () => {
  await withRotation(async ({ client, accept, statuses }) => {
    accept("someone-else-token");
    const err = await client.json("read", "GET", "/x").catch((e) => e);
    assert.ok(err instanceof GmsError && err.code === "GMS_AUTH");
    assert.match(err.message, /datahub\.token_file/);
    assert.ok(!err.message.includes("old-token-aaaa"));
    assert.deepEqual(statuses, [401]);
  });
});
