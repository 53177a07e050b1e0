/**
 * What `datahub.server` must be: an http:// or https:// URL with a host, on a port Node's fetch
 * may connect to. The Fetch standard's "bad ports" (undici's `badPorts`, which the GraphQL
 * requests go through) fail every request with a bare "bad port", so they are refused here with
 * a sentence instead.
 */

/** The Fetch standard's port blocking list (https://fetch.spec.whatwg.org/#port-blocking). */
export const BLOCKED_PORTS: ReadonlySet<number> = new Set(
  (
    "1 7 9 11 13 15 17 19 20 21 22 23 25 37 42 43 53 69 77 79 87 95 101 102 103 104 109 110 111 " +
    "113 115 117 119 123 135 137 139 143 161 179 389 427 465 512 513 514 515 526 530 531 532 540 " +
    "548 554 556 563 587 601 636 989 990 993 995 1719 1720 1723 2049 3659 4045 4190 5060 5061 " +
    "6000 6566 6665 6666 6667 6668 6669 6679 6697 10080"
  ).split(" ").map(Number),
);

/** Why `value` cannot be GMS's URL, or undefined when it can. */
export function serverUrlProblem(value: string): string | undefined {
  if (!/^https?:\/\/[^\s/]+/i.test(value)) return "expected an http:// or https:// URL";
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    return "not a valid URL (check the host and port)"; // never echoed: it may hold a password
  }
  if (!url.hostname) return "expected a host name after the scheme";
  const port = Number(url.port);
  if (url.port && BLOCKED_PORTS.has(port)) {
    return `port ${port} is one Node's fetch refuses to connect to (a "bad port" of the Fetch ` +
      "standard), so the agent could not reach GMS there: serve GMS on another port (8080 is " +
      "its default) or reach it through a gateway on another one";
  }
  return undefined;
}
