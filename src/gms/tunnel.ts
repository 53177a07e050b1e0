/**
 * A CONNECT tunnel through an HTTP(S) proxy to GMS (`datahub.proxy`, HTTPS_PROXY/HTTP_PROXY): the
 * proxy is asked to open `host:port`, with the proxy URL's user and password as Basic
 * credentials; a proxy that does not answer within the deadline, or answers anything but 200, is
 * an error (ProxyRefusal names its status). Over the tunnel, TLS to an https:// GMS is set up
 * with the same trust and identity as a direct connection.
 */
import { Buffer } from "node:buffer";
import http from "node:http";
import type { Socket } from "node:net";
import process from "node:process";
import type tls from "node:tls";

/** A built-in module loaded on first use (node:https and node:tls only where TLS is spoken). */
export function builtin<T>(name: string): T {
  return process.getBuiltinModule(name) as T;
}

/** The proxy answered CONNECT with a status other than 200. */
export class ProxyRefusal extends Error {
  readonly status: number;
  constructor(status: number) {
    super(`Proxy response (${status}) !== 200 when HTTP Tunneling`);
    this.name = "ProxyRefusal";
    this.status = status;
  }
}

export interface TunnelOptions {
  proxy: URL;
  /** The GMS end of the tunnel. */
  host: string;
  port: number;
  /** TLS to GMS inside the tunnel (undefined: plain HTTP). */
  targetTls?: tls.ConnectionOptions;
  /** TLS to an https:// proxy itself (trust only). */
  proxyTls: tls.ConnectionOptions;
  timeoutMs: number;
}

/** Opens the tunnel; resolves the socket requests to GMS are written to. */
export function openTunnel(o: TunnelOptions): Promise<Socket> {
  const target = `${o.host.includes(":") ? `[${o.host}]` : o.host}:${o.port}`;
  const secureProxy = o.proxy.protocol === "https:";
  const headers: Record<string, string> = { host: target };
  if (o.proxy.username || o.proxy.password) {
    const user = decodeURIComponent(o.proxy.username);
    const pass = decodeURIComponent(o.proxy.password);
    headers["proxy-authorization"] = `Basic ${Buffer.from(`${user}:${pass}`).toString("base64")}`;
  }
  return new Promise<Socket>((resolve, reject) => {
    const request = secureProxy
      ? builtin<typeof import("node:https")>("node:https").request
      : http.request;
    const req = request({
      host: o.proxy.hostname.replace(/^\[|\]$/g, ""),
      port: Number(o.proxy.port) || (secureProxy ? 443 : 80),
      method: "CONNECT",
      path: target,
      headers,
      agent: false,
      ...(secureProxy ? o.proxyTls : {}),
    });
    const timer = setTimeout(() => {
      const e = Object.assign(
        new Error(`the proxy did not answer CONNECT within ${o.timeoutMs}ms`),
        {
          code: "ETIMEDOUT",
        },
      );
      req.destroy(e);
    }, o.timeoutMs);
    req.once("connect", (res, socket) => {
      clearTimeout(timer);
      if (res.statusCode !== 200) {
        socket.destroy();
        reject(new ProxyRefusal(res.statusCode ?? 0));
        return;
      }
      if (!o.targetTls) return resolve(socket);
      const secured = builtin<typeof import("node:tls")>("node:tls")
        .connect({ ...o.targetTls, socket, servername: servername(o.host) });
      resolve(secured);
    });
    req.once("error", (err) => {
      clearTimeout(timer);
      reject(err);
    });
    req.end();
  });
}

/** SNI takes host names only, not IP addresses. */
export function servername(host: string): string | undefined {
  return /^[\d.]+$|:/.test(host) ? undefined : host;
}
