/**
 * A tiny HTTP CONNECT proxy on 127.0.0.1 for tests (node:http's 'connect' event), which logs
 * every CONNECT target. It resolves names only through `hosts` (e.g. `gms.test` → 127.0.0.1), so
 * a client configured with such a name reaches the server only through it; and it never connects
 * anywhere but loopback (any other target is answered 502). `refuse` plays a proxy whose rules
 * deny the tunnel (403, or 407 for missing credentials); `silent` one that never answers.
 */
import http from "node:http";
import net from "node:net";
import type { Socket } from "node:net";
import type { Buffer } from "node:buffer";

export interface ConnectProxyOptions {
  /** Names the proxy resolves (to loopback addresses); 127.0.0.1 and localhost always work. */
  hosts?: Record<string, string>;
  /** Answer every CONNECT with this status instead of opening the tunnel. */
  refuse?: number;
  /** Never answer a CONNECT (the client must give up on its own). */
  silent?: boolean;
}

export class ConnectProxy implements AsyncDisposable {
  /** Every CONNECT target seen (`host:port`), in order. */
  readonly log: string[] = [];
  readonly #server: http.Server;
  readonly #sockets = new Set<Socket>();
  readonly #o: ConnectProxyOptions;

  private constructor(o: ConnectProxyOptions) {
    this.#o = o;
    this.#server = http.createServer((_req, res) => {
      res.writeHead(405, { "content-type": "text/plain" });
      res.end("only CONNECT is supported\n");
    });
    this.#server.on("connection", (s: Socket) => {
      this.#sockets.add(s);
      s.on("close", () => this.#sockets.delete(s));
    });
    this.#server.on(
      "connect",
      (req, client: Socket, head: Buffer) => this.#tunnel(req, client, head),
    );
  }

  static async start(o: ConnectProxyOptions = {}): Promise<ConnectProxy> {
    const proxy = new ConnectProxy(o);
    await new Promise<void>((resolve) => proxy.#server.listen(0, "127.0.0.1", resolve));
    return proxy;
  }

  get url(): string {
    const addr = this.#server.address();
    if (!addr || typeof addr !== "object") throw new Error("proxy is not listening");
    return `http://127.0.0.1:${addr.port}`;
  }

  #tunnel(req: http.IncomingMessage, client: Socket, head: Buffer): void {
    const target = req.url ?? "";
    this.log.push(target);
    client.on("error", () => {});
    if (this.#o.silent) return;
    if (this.#o.refuse) {
      const status = this.#o.refuse;
      const body = status === 407 ? "proxy authentication required\n" : "tunnel denied\n";
      client.end(
        `HTTP/1.1 ${status} ${http.STATUS_CODES[status]}\r\n` +
          (status === 407 ? 'Proxy-Authenticate: Basic realm="test"\r\n' : "") +
          `Content-Type: text/plain\r\nContent-Length: ${body.length}\r\n\r\n${body}`,
      );
      return;
    }
    const m = /^(.+):(\d+)$/.exec(target);
    const name = m?.[1]?.replace(/^\[|\]$/g, "").toLowerCase() ?? "";
    const address = this.#o.hosts?.[name] ??
      (name === "localhost" || name === "127.0.0.1" ? "127.0.0.1" : undefined);
    if (!m || !address || !/^127\./.test(address)) {
      client.end("HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n");
      return;
    }
    const upstream = net.connect(Number(m[2]), address, () => {
      client.write("HTTP/1.1 200 Connection Established\r\n\r\n");
      if (head.length > 0) upstream.write(head);
      upstream.pipe(client);
      client.pipe(upstream);
    });
    this.#sockets.add(upstream);
    upstream.on("close", () => this.#sockets.delete(upstream));
    upstream.on("error", () => client.destroy());
    client.on("close", () => upstream.destroy());
  }

  async close(): Promise<void> {
    for (const s of this.#sockets) s.destroy();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}
