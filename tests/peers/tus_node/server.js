// A real @tus/server with its file store, served over HTTPS that requires a client certificate
// from the given CA: the box's interop peer. Usage:
//   node server.js <directory> <cert.pem> <key.pem> <client-ca.pem>
// Listens on 127.0.0.1 on a free port and prints "listening <port>" once ready.
import { readFileSync } from "node:fs";
import https from "node:https";
import { Server } from "@tus/server";
import { FileStore } from "@tus/file-store";

const [directory, certFile, keyFile, caFile] = process.argv.slice(2);
const tus = new Server({ path: "/files", datastore: new FileStore({ directory }) });
const host = https.createServer(
  {
    cert: readFileSync(certFile),
    key: readFileSync(keyFile),
    ca: readFileSync(caFile),
    requestCert: true,
    rejectUnauthorized: true,
  },
  (req, res) => tus.handle(req, res),
);
host.listen(0, "127.0.0.1", () => {
  console.log(`listening ${host.address().port}`);
});
process.on("SIGTERM", () => host.close(() => process.exit(0)));
