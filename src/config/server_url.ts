/**
 * What `datahub.server` must be: an http:// or https:// URL with a host. (Any port: the agent
 * talks to GMS through node:http, which has no "bad port" list like the Fetch standard's.)
 */

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
  return undefined;
}
