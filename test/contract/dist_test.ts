/**
 * `make dist`'s executables (dist/ingest-agent-<os>-<arch>[.exe], dist/SHA256SUMS): each is its
 * platform's executable format for the right CPU, of a plausible size, with the SEA blob where
 * that platform's Node looks for it (ELF note, Mach-O segment, PE resource) holding the bundle,
 * and the fuse flipped; SHA256SUMS matches; the linux-x64 one runs here.
 *
 * The directory is DIST_DIR (`make test` sets it, and builds dist first: then missing files
 * fail), else dist/ when it has a SHA256SUMS; with neither the tests are ignored (`make dist`).
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, readFileSync, statSync } from "node:fs";
import path from "node:path";
import process from "node:process";
import { VERSION } from "../../src/version.ts";

const ROOT = path.resolve(path.dirname(new URL(import.meta.url).pathname), "../..");
const DIR = process.env.DIST_DIR ? path.resolve(process.env.DIST_DIR) : path.join(ROOT, "dist");
const IGNORE = !process.env.DIST_DIR && !existsSync(path.join(DIR, "SHA256SUMS"));

const MB = 1_000_000;
/** Real sizes (Node 26): 108 MB (windows) to 154 MB (linux). */
const MIN_SIZE = 30 * MB;
const MAX_SIZE = 200 * MB;

/** Node's sentinel: `…:0` in a plain Node binary, `…:1` once a blob was injected. */
const FUSE = "NODE_SEA_FUSE_fce680ab2cc467b6e072b8b5df1996b2:";
/** The SEA blob's first 4 bytes (kMagic in Node's src/node_sea.h, little endian). */
const BLOB_MAGIC = 0x0143da20;
/** esbuild's comment above the entry module's code: the bundle itself is in the blob. */
const BUNDLE_MARK = "// src/main.ts\n";
const NAME = "NODE_SEA_BLOB";

type Format = "elf" | "macho" | "pe";
interface Target {
  file: string;
  format: Format;
  /** ELF e_machine, Mach-O cputype or PE Machine. */
  machine: number;
  cpu: string;
}

const TARGETS: Target[] = [
  { file: "ingest-agent-linux-x64", format: "elf", machine: 0x3e, cpu: "x86-64" },
  { file: "ingest-agent-linux-arm64", format: "elf", machine: 0xb7, cpu: "AArch64" },
  { file: "ingest-agent-darwin-x64", format: "macho", machine: 0x01000007, cpu: "x86_64" },
  { file: "ingest-agent-darwin-arm64", format: "macho", machine: 0x0100000c, cpu: "arm64" },
  { file: "ingest-agent-win-x64.exe", format: "pe", machine: 0x8664, cpu: "AMD64" },
];

/** Where the blob is: [offset, size] in the file. */
type Span = [number, number];

function ascii(b: Uint8Array, at: number, len: number): string {
  const end = b.indexOf(0, at);
  return new TextDecoder().decode(b.subarray(at, end >= 0 && end < at + len ? end : at + len));
}

/** Every offset of `needle` in `hay` (TypedArray.indexOf finds its first byte quickly). */
function* find(hay: Uint8Array, needle: Uint8Array): Generator<number> {
  for (let i = hay.indexOf(needle[0]!); i >= 0; i = hay.indexOf(needle[0]!, i + 1)) {
    let j = 1;
    while (j < needle.length && hay[i + j] === needle[j]) j++;
    if (j === needle.length) yield i;
  }
}

/** ELF64 little endian: the PT_NOTE note named NODE_SEA_BLOB (what Node reads at start). */
function elf(b: Uint8Array, v: DataView, machine: number): Span {
  assert.deepEqual([...b.subarray(0, 4)], [0x7f, 0x45, 0x4c, 0x46], "ELF magic");
  assert.equal(b[4], 2, "ELFCLASS64");
  assert.equal(b[5], 1, "little endian");
  assert.ok([2, 3].includes(v.getUint16(16, true)), "ET_EXEC or ET_DYN");
  assert.equal(v.getUint16(18, true), machine, "e_machine");
  const phoff = Number(v.getBigUint64(32, true));
  const phentsize = v.getUint16(54, true);
  for (let i = 0; i < v.getUint16(56, true); i++) {
    const ph = phoff + i * phentsize;
    if (v.getUint32(ph, true) !== 4) continue; // PT_NOTE
    const start = Number(v.getBigUint64(ph + 8, true));
    const end = start + Number(v.getBigUint64(ph + 32, true));
    for (let n = start; n + 12 <= end;) {
      const namesz = v.getUint32(n, true);
      const descsz = v.getUint32(n + 4, true);
      const desc = n + 12 + align4(namesz);
      if (ascii(b, n + 12, namesz) === NAME) return [desc, descsz];
      n = desc + align4(descsz);
    }
  }
  assert.fail(`no ${NAME} note`);
}

/** Mach-O 64 little endian: segment NODE_SEA, section __NODE_SEA_BLOB; no stale signature. */
function macho(b: Uint8Array, v: DataView, machine: number): Span {
  assert.equal(v.getUint32(0, true), 0xfeedfacf, "MH_MAGIC_64");
  assert.equal(v.getUint32(4, true), machine, "cputype");
  assert.equal(v.getUint32(12, true), 2, "MH_EXECUTE");
  let blob: Span | undefined;
  const commands: number[] = [];
  for (let i = 0, c = 32; i < v.getUint32(16, true); i++, c += v.getUint32(c + 4, true)) {
    const cmd = v.getUint32(c, true);
    commands.push(cmd);
    if (cmd !== 0x19 || ascii(b, c + 8, 16) !== "NODE_SEA") continue; // LC_SEGMENT_64
    for (let s = 0, sec = c + 72; s < v.getUint32(c + 64, true); s++, sec += 80) {
      if (ascii(b, sec, 16) !== `__${NAME}`) continue;
      blob = [v.getUint32(sec + 48, true), Number(v.getBigUint64(sec + 40, true))];
    }
  }
  // The injection drops Node's signature (it would no longer match); README: sign on macOS.
  assert.ok(!commands.includes(0x1d), "no LC_CODE_SIGNATURE left that no longer matches");
  assert.ok(blob, `no NODE_SEA segment with a __${NAME} section`);
  return blob;
}

/** PE32+: the RCDATA resource named NODE_SEA_BLOB in the resource directory. */
function pe(b: Uint8Array, v: DataView, machine: number): Span {
  assert.equal(ascii(b, 0, 2), "MZ", "DOS header");
  const h = v.getUint32(0x3c, true);
  assert.deepEqual([...b.subarray(h, h + 4)], [0x50, 0x45, 0, 0], "PE signature");
  assert.equal(v.getUint16(h + 4, true), machine, "Machine");
  const opt = h + 24;
  assert.equal(v.getUint16(opt, true), 0x20b, "PE32+");
  assert.equal(v.getUint16(opt + 68, true), 3, "console subsystem");
  const sections = opt + v.getUint16(h + 20, true);
  const toFile = (rva: number): number => {
    for (let i = 0; i < v.getUint16(h + 6, true); i++) {
      const s = sections + i * 40;
      const va = v.getUint32(s + 12, true);
      if (rva >= va && rva < va + v.getUint32(s + 16, true)) {
        return rva - va + v.getUint32(s + 20, true);
      }
    }
    assert.fail(`RVA ${rva.toString(16)} in no section`);
  };
  const root = toFile(v.getUint32(opt + 112 + 2 * 8, true)); // data directory 2: resources
  /** The entries of a resource directory: [id or name, offset of its child or data]. */
  const entries = (dir: number): [number | string, number][] => {
    const count = v.getUint16(dir + 12, true) + v.getUint16(dir + 14, true);
    return Array.from({ length: count }, (_, i) => {
      const id = v.getUint32(dir + 16 + i * 8, true);
      const child = root + (v.getUint32(dir + 20 + i * 8, true) & 0x7fffffff);
      if (!(id & 0x80000000)) return [id, child];
      const at = root + (id & 0x7fffffff);
      const name = b.subarray(at + 2, at + 2 + 2 * v.getUint16(at, true));
      return [new TextDecoder("utf-16le").decode(name), child];
    });
  };
  const rcdata = entries(root).find(([id]) => id === 10); // RT_RCDATA
  assert.ok(rcdata, "no RCDATA resources");
  const named = entries(rcdata[1]).find(([name]) => name === NAME);
  assert.ok(named, `no RCDATA resource named ${NAME}`);
  const data = entries(named[1])[0]?.[1];
  assert.ok(data !== undefined, "no language entry");
  return [toFile(v.getUint32(data, true)), v.getUint32(data + 4, true)];
}

function align4(n: number): number {
  return (n + 3) & ~3;
}

const FORMATS = { elf, macho, pe };

function sums(): Map<string, string> {
  const text = readFileSync(path.join(DIR, "SHA256SUMS"), "utf8");
  return new Map(
    text.trimEnd().split("\n").map((line) => {
      const m = /^([0-9a-f]{64}) [ *](.+)$/.exec(line);
      assert.ok(m, `SHA256SUMS line: ${line}`);
      return [m[2]!, m[1]!];
    }),
  );
}

Deno.test({
  name: "dist: SHA256SUMS lists the five executables, and nothing else",
  ignore: IGNORE,
  fn() {
    assert.deepEqual([...sums().keys()].sort(), TARGETS.map((t) => t.file).sort());
  },
});

for (const t of TARGETS) {
  Deno.test({
    name: `dist: ${t.file} is ${t.format} for ${t.cpu}, the bundle injected, as in SHA256SUMS`,
    ignore: IGNORE,
    fn() {
      const file = path.join(DIR, t.file);
      const size = statSync(file).size;
      assert.ok(size > MIN_SIZE && size < MAX_SIZE, `${t.file}: ${size} bytes`);
      if (t.format !== "pe") assert.ok(statSync(file).mode & 0o100, "executable bit");
      const buf = readFileSync(file);
      const b = new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
      const v = new DataView(b.buffer, b.byteOffset, b.byteLength);

      const [at, len] = FORMATS[t.format](b, v, t.machine);
      assert.ok(at + len <= size && len > 8, `blob ${at}+${len} inside the file`);
      assert.equal(v.getUint32(at, true), BLOB_MAGIC, "the blob's magic");
      const mark = new TextEncoder().encode(BUNDLE_MARK);
      assert.ok(!find(b.subarray(at, at + len), mark).next().done, "the bundle is in the blob");

      const fuse = new TextEncoder().encode(FUSE);
      const states = [...find(b, fuse)].map((i) => String.fromCharCode(b[i + fuse.length]!));
      assert.deepEqual(states, ["1"], "the fuse, flipped once");

      const sha = createHash("sha256").update(b).digest("hex");
      assert.equal(sha, sums().get(t.file), "SHA256SUMS");
    },
  });
}

Deno.test({
  name: "dist: ingest-agent-linux-x64 runs here (--version)",
  ignore: IGNORE || process.platform !== "linux" || process.arch !== "x64",
  fn() {
    const run = spawnSync(path.join(DIR, "ingest-agent-linux-x64"), ["--version"], {
      encoding: "utf8",
      timeout: 30_000,
    });
    assert.equal(run.status, 0, run.stderr);
    assert.equal(run.stdout.trim(), `ingest-agent ${VERSION}`);
    assert.equal(run.stderr, "", "no warning (the SEA warning is off, the code cache accepted)");
  },
});
