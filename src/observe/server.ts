/**
 * The agent's own HTTP endpoints on `observability.listen` (plain HTTP; bind it to loopback or a
 * trusted network): `/healthz` (the poll loop is alive), `/readyz` (GMS answers with accepted
 * credentials), `/status` (JSON of the live state) and `/metrics` (Prometheus text). They read
 * LiveState and the metrics registry only; they never reach GMS themselves.
 */
import http from "node:http";
import type { AddressInfo } from "node:net";
import type { Registry } from "prom-client";
import { AgentError } from "../errors.ts";
import type { LiveState } from "./live.ts";

/** `host:port`, `[v6]:port` or `:port` (all interfaces) → what `listen()` takes. */
export function parseListen(value: string): { host: string | undefined; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:[\]]*)):(\d{1,5})$/.exec(value.trim());
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) {
    throw new AgentError(
      "CONFIG_INVALID",
      `observability.listen: expected host:port or :port (e.g. 127.0.0.1:9464), got ${
        JSON.stringify(value)
      }`,
    );
  }
  const host = m[1] ?? m[2];
  return { host: host ? host : undefined, port };
}

export interface Endpoints {
  /** The bound address (port 0 resolved). */
  address: string;
  close(): Promise<void>;
}

export async function serveEndpoints(
  listen: string,
  live: LiveState,
  registry: Registry | undefined,
): Promise<Endpoints> {
  const { host, port } = parseListen(listen);
  const server = http.createServer((req, res) => {
    void handle(req, res, live, registry).catch(() => {
      if (!res.headersSent) res.writeHead(500);
      res.end();
    });
  });
  server.keepAliveTimeout = 5_000;
  await new Promise<void>((resolve, reject) => {
    server.once("error", (err: NodeJS.ErrnoException) => {
      const why = err.code === "EADDRINUSE"
        ? "the port is in use (another agent or program listens there)"
        : err.code === "EACCES"
        ? "permission denied (ports below 1024 need privileges)"
        : err.message;
      reject(new AgentError("USAGE", `observability.listen ${listen}: ${why}`));
    });
    server.listen(port, host, () => resolve());
  });
  const a = server.address() as AddressInfo;
  server.unref(); // never what keeps the agent running
  return {
    address: `${a.family === "IPv6" ? `[${a.address}]` : a.address}:${a.port}`,
    close: () => new Promise((r) => server.close(() => r())),
  };
}

async function handle(
  req: http.IncomingMessage,
  res: http.ServerResponse,
  live: LiveState,
  registry: Registry | undefined,
): Promise<void> {
  const path = new URL(req.url ?? "/", "http://agent").pathname;
  if (req.method !== "GET" && req.method !== "HEAD") {
    return send(res, 405, "text/plain", "method not allowed\n");
  }
  switch (path) {
    case "/healthz": {
      const h = live.health();
      return h.ok
        ? send(res, 200, "text/plain", "ok\n")
        : send(res, 503, "text/plain", `${h.reason}\n`);
    }
    case "/readyz": {
      const r = live.readiness();
      return r.ready
        ? send(res, 200, "application/json", JSON.stringify({ ready: true }) + "\n")
        : send(res, 503, "application/json", JSON.stringify(r) + "\n");
    }
    case "/status":
      return send(res, 200, "application/json", JSON.stringify(live.status(), null, 2) + "\n");
    case "/metrics":
      if (!registry) return send(res, 404, "text/plain", "metrics are off\n");
      return send(res, 200, registry.contentType, await registry.metrics());
    default:
      return send(res, 404, "text/plain", "not found: /healthz /readyz /status /metrics\n");
  }
}

function send(res: http.ServerResponse, status: number, type: string, body: string): void {
  res.writeHead(status, { "content-type": type, "cache-control": "no-store" });
  res.end(body);
}
