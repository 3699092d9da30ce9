//  server.mjs — starts and stops a real faissproxyd on loopback for the
//  tests: $FPX_DAEMON (else the tree's build/bin/faissproxyd), a free
//  127.0.0.1 port, one tenant with a random key, a fresh temporary data
//  directory. Ready when a ping through this client succeeds; stop()
//  sends SIGTERM and returns the exit status (the daemon must exit 0).

import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { accessSync, constants, mkdtempSync, openSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { FaissProxyClient, Status } from "../../dist/index.js";

const here = dirname(fileURLToPath(import.meta.url));
export const ROOT = join(here, "..", "..", "..", "..");

export function daemonPath() {
    return process.env.FPX_DAEMON || join(ROOT, "build", "bin", "faissproxyd");
}

function freePort() {
    return new Promise((resolve, reject) => {
        const server = createServer();
        server.once("error", reject);
        server.listen(0, "127.0.0.1", () => {
            const { port } = server.address();
            server.close(() => resolve(port));
        });
    });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export class Server {
    constructor({ tenant = "tstest", extraArgs = [], serverKey = "" } = {}) {
        this.tenant = tenant;
        this.extraArgs = extraArgs;
        this.serverKey = serverKey;
        this.key = randomBytes(16).toString("hex");
        this.dataDir = mkdtempSync(join(tmpdir(), "fpx-tstest-"));
        this.proc = null;
        this.exit = null;
    }

    client(options = {}) {
        return new FaissProxyClient({
            endpoint: this.endpoint, apiKey: this.key, serverKey: this.serverKey,
            timeoutMs: 20000, ...options,
        });
    }

    async start() {
        const daemon = daemonPath();
        accessSync(daemon, constants.X_OK);
        for (let attempt = 0; attempt < 10; attempt++)
            if (await this.startOn(daemon, await freePort()))
                return this;
        throw new Error(`could not start ${daemon}:\n${this.log()}`);
    }

    async startOn(daemon, port) {
        this.endpoint = `tcp://127.0.0.1:${port}`;
        this.logPath = join(this.dataDir, "daemon.log");
        const log = openSync(this.logPath, "w");
        this.proc = spawn(daemon, ["--bind", this.endpoint, "--api-key", `${this.tenant}:${this.key}`,
            "--data-dir", join(this.dataDir, "data"), "--workers", "2", "--log-level", "warn",
            ...this.extraArgs], { stdio: ["ignore", log, log] });
        this.exit = new Promise((resolve) => this.proc.once("exit", (code, signal) => resolve(signal ?? code)));
        let exited = false;
        this.exit.then(() => { exited = true; });
        const client = this.client({ timeoutMs: 300 });
        try {
            for (const deadline = Date.now() + 30000; Date.now() < deadline && !exited;) {
                try {
                    await client.ping();
                    return true;
                } catch (error) {
                    if (error.status === Status.FPX_EAUTH)
                        break;          // another server answers on this port
                    await sleep(50);
                }
            }
        } finally {
            client.close();
        }
        if (!exited)
            this.proc.kill("SIGKILL");
        await this.exit;
        this.proc = null;
        return false;
    }

    log() {
        try {
            return readFileSync(this.logPath, "utf8");
        } catch {
            return "";
        }
    }

    /** SIGTERM; resolves to the daemon's exit status. */
    async stop() {
        if (!this.proc)
            return 0;
        this.proc.kill("SIGTERM");
        const timer = setTimeout(() => this.proc.kill("SIGKILL"), 30000);
        const status = await this.exit;
        clearTimeout(timer);
        this.proc = null;
        return status;
    }

    cleanup() {
        rmSync(this.dataDir, { recursive: true, force: true });
    }
}
