/**
 * A throwaway certificate authority for the Kubernetes API test server, made with openssl at start:
 * a CA, a server certificate whose subjectAltName holds every address the server listens on (kubectl and
 * Node check the IP), and client certificates on demand (CN = user, O = group, as kube-apiserver reads them).
 */
import { existsSync } from "node:fs";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { run } from "../../process.js";

export interface Pki {
  dir: string;
  caFile: string;
  caKeyFile: string;
  certFile: string;
  keyFile: string;
}

async function openssl(args: string[]): Promise<void> {
  const result = await run("openssl", args);
  if (result.code !== 0) throw new Error(`openssl ${args[0]} failed: ${result.stderr.trim()}`);
}

const EC_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];

/** Makes the CA and the server certificate in `dir`. */
export async function makePki(dir: string, addresses: { ips: string[]; dns: string[] }): Promise<Pki> {
  const pki: Pki = { dir, caFile: join(dir, "ca.crt"), caKeyFile: join(dir, "ca.key"), certFile: join(dir, "server.crt"), keyFile: join(dir, "server.key") };
  // A server restarted over the same state directory keeps its CA and certificate: clients keep trusting it.
  if ([pki.caFile, pki.caKeyFile, pki.certFile, pki.keyFile].every((file) => existsSync(file))) return pki;
  await openssl(["req", "-x509", ...EC_KEY, "-keyout", pki.caKeyFile, "-out", pki.caFile, "-days", "7", "-subj", "/CN=podroutes-test-ca", "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"]);
  const san = [...new Set(addresses.ips)].map((ip) => `IP:${ip}`).concat([...new Set(addresses.dns)].map((name) => `DNS:${name}`)).join(",");
  await sign(pki, "server", "/CN=kube-apiserver", [`subjectAltName=${san}`, "extendedKeyUsage=serverAuth"]);
  return pki;
}

/** A client certificate signed by the CA: kube-apiserver takes the user from CN and groups from O. */
export async function issueClientCertificate(pki: Pki, user: string, group?: string): Promise<{ certFile: string; keyFile: string }> {
  const base = `client-${user.replace(/[^A-Za-z0-9_-]/g, "_")}`;
  await sign(pki, base, `/CN=${user}${group ? `/O=${group}` : ""}`, ["extendedKeyUsage=clientAuth"]);
  return { certFile: join(pki.dir, `${base}.crt`), keyFile: join(pki.dir, `${base}.key`) };
}

async function sign(pki: Pki, base: string, subject: string, extensions: string[]): Promise<void> {
  const key = join(pki.dir, `${base}.key`);
  const csr = join(pki.dir, `${base}.csr`);
  const ext = join(pki.dir, `${base}.ext`);
  await writeFile(ext, `[v3]\nbasicConstraints=CA:FALSE\n${extensions.join("\n")}\n`);
  await openssl(["req", "-new", ...EC_KEY, "-keyout", key, "-out", csr, "-subj", subject]);
  await openssl(["x509", "-req", "-in", csr, "-CA", pki.caFile, "-CAkey", pki.caKeyFile, "-CAcreateserial", "-days", "7", "-out", join(pki.dir, `${base}.crt`), "-extfile", ext, "-extensions", "v3"]);
}
