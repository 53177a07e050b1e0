/** The agent's version, also sent in the User-Agent header (`ingest-agent/<version>`). */
export const VERSION = "0.1.0";

/** `v1.3.0`, `1.6.0.2`, `v0.14.1-acryl` → [major, minor, patch] (GMS's /config versions). */
export function parseVersion(v: string): [number, number, number] | undefined {
  const m = /^v?(\d+)\.(\d+)\.(\d+)/.exec(v.trim());
  return m ? [Number(m[1]), Number(m[2]), Number(m[3])] : undefined;
}

/** Whether version `v` is `min` or later. */
export function atLeast(v: [number, number, number], min: [number, number, number]): boolean {
  for (let i = 0; i < 3; i++) if (v[i] !== min[i]) return v[i]! > min[i]!;
  return true;
}
