/**
 * Certificates made at test time with `openssl`: a private CA, a server certificate for
 * 127.0.0.1, localhost and gms.test (subjectAltName), and a client certificate, all signed by
 * the CA; plus a second CA nobody trusts (for "wrong CA" cases). Keys are 0600.
 */
import { chmod, readFile, writeFile } from "node:fs/promises";
import path from "node:path";

export interface Pki {
  dir: string;
  /** PEM files. */
  caFile: string;
  serverCert: string;
  serverKey: string;
  clientCert: string;
  clientKey: string;
  otherCaFile: string;
  /** Their contents. */
  ca: string;
  server: { key: string; cert: string };
}

async function openssl(args: string[], cwd: string): Promise<void> {
  const out = await new Deno.Command("openssl", { args, cwd, stdout: "null", stderr: "piped" })
    .output();
  if (!out.success) {
    throw new Error(`openssl ${args.join(" ")} failed: ${new TextDecoder().decode(out.stderr)}`);
  }
}

async function makeCa(dir: string, name: string): Promise<void> {
  await openssl([
    "req",
    "-x509",
    "-newkey",
    "rsa:2048",
    "-nodes",
    "-keyout",
    `${name}.key`,
    "-out",
    `${name}.pem`,
    "-days",
    "2",
    "-subj",
    `/CN=${name} (ingest-agent tests)`,
    "-addext",
    "basicConstraints=critical,CA:TRUE",
    "-addext",
    "keyUsage=critical,keyCertSign,cRLSign",
  ], dir);
}

async function makeLeaf(dir: string, name: string, ca: string, ext: string): Promise<void> {
  await writeFile(path.join(dir, `${name}.ext`), ext);
  await openssl([
    "req",
    "-newkey",
    "rsa:2048",
    "-nodes",
    "-keyout",
    `${name}.key`,
    "-out",
    `${name}.csr`,
    "-subj",
    `/CN=${name}`,
  ], dir);
  await openssl([
    "x509",
    "-req",
    "-in",
    `${name}.csr`,
    "-CA",
    `${ca}.pem`,
    "-CAkey",
    `${ca}.key`,
    "-CAcreateserial",
    "-out",
    `${name}.pem`,
    "-days",
    "2",
    "-extfile",
    `${name}.ext`,
  ], dir);
  await chmod(path.join(dir, `${name}.key`), 0o600);
}

/** Makes the CA and certificates in `dir` (which must exist). */
export async function makePki(dir: string): Promise<Pki> {
  await makeCa(dir, "ca");
  await makeCa(dir, "other-ca");
  await makeLeaf(
    dir,
    "server",
    "ca",
    "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:gms.test\nbasicConstraints=CA:FALSE\n" +
      "extendedKeyUsage=serverAuth\n",
  );
  await makeLeaf(dir, "client", "ca", "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n");
  const file = (name: string) => path.join(dir, name);
  return {
    dir,
    caFile: file("ca.pem"),
    serverCert: file("server.pem"),
    serverKey: file("server.key"),
    clientCert: file("client.pem"),
    clientKey: file("client.key"),
    otherCaFile: file("other-ca.pem"),
    ca: await readFile(file("ca.pem"), "utf8"),
    server: {
      key: await readFile(file("server.key"), "utf8"),
      cert: await readFile(file("server.pem"), "utf8"),
    },
  };
}
