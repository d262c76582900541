import { execFileSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";

export interface CertFiles {
  readonly caCert: string;
  readonly caKey: string;
}

/** A throwaway CA (openssl) in `dir`. */
export function makeCa(dir: string): CertFiles {
  const caKey = path.join(dir, "ca.key");
  const caCert = path.join(dir, "ca.crt");
  execFileSync(
    "openssl",
    [
      "req",
      "-x509",
      "-newkey",
      "ec",
      "-pkeyopt",
      "ec_paramgen_curve:prime256v1",
      "-nodes",
      "-keyout",
      caKey,
      "-out",
      caCert,
      "-days",
      "2",
      "-subj",
      "/CN=eventsdb test CA",
    ],
    { stdio: "pipe" },
  );
  return { caCert, caKey };
}

/**
 * A certificate signed by the CA, for 127.0.0.1/localhost (server) or a client; written to
 * `<name>.crt` / `<name>.key` in `dir`. The serial number lets a test tell certificates apart.
 */
export function issue(
  dir: string,
  ca: CertFiles,
  name: string,
  serial: number,
  client = false,
): { cert: string; key: string } {
  const key = path.join(dir, `${name}.key`);
  const csr = path.join(dir, `${name}.csr`);
  const cert = path.join(dir, `${name}.crt`);
  const ext = path.join(dir, `${name}.ext`);
  fs.writeFileSync(
    ext,
    client
      ? "extendedKeyUsage=clientAuth\n"
      : "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
  );
  execFileSync(
    "openssl",
    [
      "req",
      "-newkey",
      "ec",
      "-pkeyopt",
      "ec_paramgen_curve:prime256v1",
      "-nodes",
      "-keyout",
      key,
      "-out",
      csr,
      "-subj",
      `/CN=${name}`,
    ],
    { stdio: "pipe" },
  );
  execFileSync(
    "openssl",
    [
      "x509",
      "-req",
      "-in",
      csr,
      "-CA",
      ca.caCert,
      "-CAkey",
      ca.caKey,
      "-set_serial",
      String(serial),
      "-out",
      cert,
      "-days",
      "2",
      "-extfile",
      ext,
    ],
    { stdio: "pipe" },
  );
  return { cert, key };
}
