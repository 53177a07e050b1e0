import assert from "node:assert/strict";
import http from "node:http";
import type { Socket } from "node:net";
import { GmsError } from "../errors.ts";
import { VERSION } from "../version.ts";
import { type GmsConnection, GmsHttp, parseRetryAfter } from "./http.ts";

// ------------------------------------------------------------------------------ parseRetryAfter

Deno.test("parseRetryAfter: seconds become milliseconds", () => {
  assert.equal(parseRetryAfter("0"), 0);
  assert.equal(parseRetryAfter("5"), 5_000);
  assert.equal(parseRetryAfter(" 120 "), 120_000);
});

Deno.test("parseRetryAfter: an HTTP date is the time left until then", () => {
  const now = Date.parse("2026-11-30T14:00:00Z");
  assert.equal(parseRetryAfter("Mon, 30 Nov 2026 14:00:30 GMT", now), 30_000);
  // A date in the past means "now".
  assert.equal(parseRetryAfter("Mon, 30 Nov 2026 13:59:00 GMT", now), 0);
});

Deno.test("parseRetryAfter: absent or unreadable values give undefined", () => {
  assert.equal(parseRetryAfter(undefined), undefined);
  assert.equal(parseRetryAfter(""), undefined);
  assert.equal(parseRetryAfter("soon"), undefined);
});

// ------------------------------------------------------------------------------ GmsHttp

interface Seen {
  method: string;
  url: string;
  headers: http.IncomingHttpHeaders;
  body: string;
  /** The client's port: one per connection. */
  remotePort: number | undefined;
}

interface TestServer {
  url: string;
  seen: Seen[];
  close(): Promise<void>;
}

type Handler = (req: http.IncomingMessage, res: http.ServerResponse, body: string) => void;

async function startServer(handler: Handler): Promise<TestServer> {
  const seen: Seen[] = [];
  const sockets = new Set<Socket>();
  const server = http.createServer((req, res) => {
    let body = "";
    req.setEncoding("utf8");
    req.on("data", (c: string) => body += c);
    req.on("end", () => {
      seen.push({
        method: req.method!,
        url: req.url!,
        headers: req.headers,
        body,
        remotePort: req.socket.remotePort,
      });
      handler(req, res, body);
    });
  });
  server.on("connection", (s: Socket) => {
    sockets.add(s);
    s.on("close", () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const addr = server.address();
  assert.ok(addr && typeof addr === "object");
  return {
    url: `http://127.0.0.1:${addr.port}`,
    seen,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

function json(res: http.ServerResponse, status: number, body: unknown, headers = {}) {
  res.writeHead(status, { "content-type": "application/json", ...headers });
  res.end(JSON.stringify(body));
}

function conn(server: string, over: Partial<GmsConnection> = {}): GmsConnection {
  return {
    server,
    token: "",
    systemClientId: "",
    systemClientSecret: "",
    timeoutMs: 5_000,
    ...over,
  };
}

async function rejection(p: Promise<unknown>): Promise<GmsError> {
  const err = await p.then(() => assert.fail("expected a rejection"), (e: unknown) => e);
  assert.ok(err instanceof GmsError, `expected a GmsError, got ${err}`);
  return err;
}

/** Runs fn with a server and a client, closing both whatever happens. */
async function withServer(
  handler: Handler,
  over: Partial<GmsConnection>,
  fn: (client: GmsHttp, server: TestServer) => Promise<void>,
): Promise<void> {
  const server = await startServer(handler);
  const client = new GmsHttp(conn(server.url, over));
  try {
    await fn(client, server);
  } finally {
    await client.close();
    await server.close();
  }
}

Deno.test("GmsHttp: sends Bearer token, user-agent, JSON body and query; returns the JSON", async () => {
  await withServer(
    (_req, res, body) => json(res, 200, { echoed: JSON.parse(body) }),
    { token: "tok-123" },
    async (client, server) => {
      assert.equal(client.authKind, "token");
      const res = await client.json("write", "POST", "/openapi/v3/x", {
        query: { a: "1", b: ["2", "3"] },
        body: { hello: "wörld" },
      });
      assert.equal(res.status, 200);
      assert.deepEqual(res.body, { echoed: { hello: "wörld" } });
      const req = server.seen[0]!;
      assert.equal(req.method, "POST");
      assert.equal(req.url, "/openapi/v3/x?a=1&b=2&b=3");
      assert.equal(req.headers.authorization, "Bearer tok-123");
      assert.equal(req.headers["user-agent"], `ingest-agent/${VERSION}`);
      assert.equal(req.headers["content-type"], "application/json");
    },
  );
});

Deno.test("GmsHttp: system client credentials are sent literally as Basic id:secret and win over the token", async () => {
  await withServer(
    (_req, res) => json(res, 200, {}),
    { token: "tok-123", systemClientId: "__datahub_system", systemClientSecret: "John:Snow" },
    async (client, server) => {
      assert.equal(client.authKind, "system-client");
      await client.json("read", "GET", "/x");
      assert.equal(server.seen[0]!.headers.authorization, "Basic __datahub_system:John:Snow");
      assert.equal(server.seen[0]!.headers["user-agent"], `ingest-agent/${VERSION}`);
    },
  );
});

Deno.test("GmsHttp: no credentials, no Authorization header; trailing slashes of the server are dropped", async () => {
  const server = await startServer((_req, res) => json(res, 200, { ok: true }));
  const client = new GmsHttp(conn(server.url + "//"));
  try {
    assert.equal(client.authKind, "none");
    assert.equal(client.server, server.url);
    await client.json("read", "GET", "/health");
    assert.equal(server.seen[0]!.headers.authorization, undefined);
    assert.equal(server.seen[0]!.url, "/health");
  } finally {
    await client.close();
    await server.close();
  }
});

Deno.test("GmsHttp: 401 is GMS_AUTH with a hint, never the credential", async () => {
  await withServer(
    (_req, res) => json(res, 401, { message: "Unauthorized" }),
    { token: "tok-SECRET-987" },
    async (client) => {
      const err = await rejection(client.json("claim", "GET", "/x"));
      assert.equal(err.code, "GMS_AUTH");
      assert.equal(err.status, 401);
      assert.equal(err.operation, "claim");
      assert.match(err.message, /^claim: HTTP 401/);
      assert.match(err.message, /datahub\.token/);
      assert.ok(!err.message.includes("tok-SECRET-987"));
    },
  );
});

Deno.test("GmsHttp: 412 is GMS_PRECONDITION", async () => {
  await withServer(
    (_req, res) => json(res, 412, { error: "version mismatch" }),
    {},
    async (client) => {
      const err = await rejection(client.json("writeResult", "POST", "/x", { body: {} }));
      assert.equal(err.code, "GMS_PRECONDITION");
      assert.equal(err.status, 412);
      assert.match(err.message, /version mismatch/);
    },
  );
});

Deno.test("GmsHttp: 429 with Retry-After is GMS_RATE_LIMITED with retryAfterMs", async () => {
  await withServer(
    (_req, res) => json(res, 429, { message: "slow down" }, { "retry-after": "7" }),
    {},
    async (client) => {
      const err = await rejection(client.json("poll", "GET", "/x"));
      assert.equal(err.code, "GMS_RATE_LIMITED");
      assert.equal(err.status, 429);
      assert.equal(err.retryAfterMs, 7_000);
    },
  );
});

Deno.test("GmsHttp: 503 is GMS_UNAVAILABLE (text body kept in the message)", async () => {
  await withServer(
    (_req, res) => {
      res.writeHead(503, { "content-type": "text/plain" });
      res.end("Service   Unavailable\n");
    },
    {},
    async (client) => {
      const err = await rejection(client.json("poll", "GET", "/x"));
      assert.equal(err.code, "GMS_UNAVAILABLE");
      assert.equal(err.status, 503);
      assert.equal(err.retryAfterMs, undefined);
      assert.match(err.message, /HTTP 503: Service Unavailable/);
    },
  );
});

Deno.test("GmsHttp: a refused connection is GMS_UNREACHABLE", async () => {
  // Take a free port, then close the server so nothing listens there.
  const server = await startServer((_req, res) => json(res, 200, {}));
  const url = server.url;
  await server.close();
  const client = new GmsHttp(conn(url));
  try {
    const err = await rejection(client.json("poll", "GET", "/x"));
    assert.equal(err.code, "GMS_UNREACHABLE");
    assert.equal(err.status, undefined);
    assert.match(err.message, /cannot reach GMS/);
  } finally {
    await client.close();
  }
});

Deno.test("GmsHttp: a server that never answers is GMS_TIMEOUT after the configured timeout", async () => {
  // The handler never responds; close() destroys the hanging socket.
  await withServer(() => {}, { timeoutMs: 300 }, async (client) => {
    let guard: ReturnType<typeof setTimeout> | undefined;
    const tooLate = new Promise<never>((_, reject) => {
      guard = setTimeout(() => reject(new Error("no timeout within 10s")), 10_000);
    });
    try {
      const err = await rejection(Promise.race([client.json("poll", "GET", "/x"), tooLate]));
      assert.equal(err.code, "GMS_TIMEOUT");
      assert.match(err.message, /300ms/);
    } finally {
      clearTimeout(guard);
    }
  });
});

Deno.test("GmsHttp.json: adds auth and user-agent to the caller's headers; one kept-alive connection", async () => {
  await withServer(
    (_req, res) => json(res, 200, { data: { ok: true } }),
    { token: "tok-9" },
    async (client, server) => {
      for (let i = 0; i < 3; i++) {
        const res = await client.json("graphql", "POST", "/api/graphql", {
          headers: { "x-extra": "1" },
          body: { query: "{ ok }" },
        });
        assert.equal(res.status, 200);
        assert.deepEqual(res.body, { data: { ok: true } });
      }
      const req = server.seen[0]!;
      assert.equal(req.headers.authorization, "Bearer tok-9");
      assert.equal(req.headers["user-agent"], `ingest-agent/${VERSION}`);
      assert.equal(req.headers["x-extra"], "1");
      assert.equal(req.headers["content-type"], "application/json");
      assert.equal(req.body, JSON.stringify({ query: "{ ok }" }));
      const ports = new Set(server.seen.map((r) => r.remotePort));
      assert.equal(ports.size, 1, `3 requests on ${ports.size} connections`);
    },
  );
});
