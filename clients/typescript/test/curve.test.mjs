//  curve.test.mjs — the client over CurveZMQ: faissproxyd started with
//  --curve-secret-file (a key pair from `faissproxy keygen --curve`) and
//  --curve-clients-file listing one client key. That client searches as
//  FAISS does; an unlisted client key, a wrong server key and a plain
//  client never complete the handshake and time out (docs/PROTOCOL.md).

import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { after, before, test } from "node:test";
import * as zmq from "zeromq";
import { FaissProxyClient, FaissProxyError, Status } from "../dist/index.js";
import { Server, daemonPath } from "./helpers/server.mjs";
import { assertSameSearch, faissReference, randomVectors } from "./helpers/reference.mjs";

const listed = zmq.curveKeyPair();
let keyDir;
let server;

before(async () => {
    keyDir = mkdtempSync(join(tmpdir(), "fpx-tscurve-"));
    const keyFile = join(keyDir, "server.key");
    const cli = join(dirname(daemonPath()), "faissproxy");
    const printed = execFileSync(cli, ["keygen", "--curve", keyFile], { encoding: "utf8" });
    const serverKey = printed.trim().split("=").slice(1).join("=");
    assert.equal(serverKey.length, 40);
    const clientsFile = join(keyDir, "clients");
    writeFileSync(clientsFile, `${listed.publicKey}\n`);
    server = await new Server({
        serverKey,
        extraArgs: ["--curve-secret-file", keyFile, "--curve-clients-file", clientsFile],
    });
    //  The readiness ping uses the listed key pair.
    const client = server.client.bind(server);
    server.client = (options = {}) => client({ clientKeyPair: listed, ...options });
    await server.start();
});

after(async () => {
    const status = await server?.stop();
    const log = server?.log();
    server?.cleanup();
    if (keyDir)
        rmSync(keyDir, { recursive: true, force: true });
    assert.equal(status, 0, `faissproxyd exit status; log:\n${log}`);
});

async function timesOut(options) {
    const client = new FaissProxyClient({ endpoint: server.endpoint, apiKey: server.key, timeoutMs: 500,
        ...options });
    try {
        const error = await client.ping().catch((e) => e);
        assert.ok(error instanceof FaissProxyError, `expected a timeout, got ${JSON.stringify(error)}`);
        assert.equal(error.status, Status.FPX_ETIMEDOUT, error.message);
    } finally {
        client.close();
    }
}

test("a listed client key searches over CURVE as FAISS does", async () => {
    const client = server.client();
    try {
        const d = 8;
        const xb = randomVectors(200, d, 11);
        const xq = randomVectors(5, d, 12);
        const index = await client.create(null, d, "Flat");
        await client.add(index.name, xb, d);
        const result = await client.search(index.name, xq, d, 4);
        const ref = faissReference({ d, factory: "Flat", adds: [{ x: "xb" }], search: { x: "xq", k: 4 } },
            { xb, xq });
        assertSameSearch(result, ref.search, "CURVE search");
    } finally {
        client.close();
    }
});

test("an unlisted client key gets no reply", async () => {
    await timesOut({ serverKey: server.serverKey });
});

test("a wrong server key gets no reply", async () => {
    await timesOut({ serverKey: zmq.curveKeyPair().publicKey, clientKeyPair: listed });
});

test("a plain client gets no reply", async () => {
    await timesOut({ serverKey: "" });
});
