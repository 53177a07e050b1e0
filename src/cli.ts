import { VERSION } from "./version.ts";
export function main(args: string[]): Promise<number> {
  if (args.includes("--version")) console.log(`ingest-agent ${VERSION}`);
  return Promise.resolve(0);
}
