//  protocol.test.mjs — the generated wire constants are those of
//  protocol/, and the generator follows the protocol's lists as they grow.

import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { test } from "node:test";
import {
    FPX_MAGIC, FPX_PROTOCOL_VERSION, FPX_REPLY_HEADER_SIZE, FPX_REQUEST_HEADER_SIZE, OPCODE_NAMES,
    Opcode, STATUS_MESSAGES, STATUS_NAMES, Status, statusName,
} from "../dist/index.js";
import { ROOT } from "./helpers/server.mjs";

const here = dirname(fileURLToPath(import.meta.url));
const generator = join(here, "..", "scripts", "gen-protocol.mjs");
const protocolDir = join(ROOT, "protocol");

test("src/protocol.generated.ts is up to date with protocol/", () => {
    execFileSync(process.execPath, [generator, "--check"], { stdio: "pipe" });
});

test("the generator follows opcodes and errors appended to the lists", () => {
    const dir = mkdtempSync(join(tmpdir(), "fpx-tsgen-"));
    try {
        copyFileSync(join(protocolDir, "fpx_errors.h"), join(dir, "fpx_errors.h"));
        copyFileSync(join(protocolDir, "fpx_constants.h"), join(dir, "fpx_constants.h"));
        const header = readFileSync(join(protocolDir, "fpx_protocol.h"), "utf8");
        const last = Math.max(...Object.values(Opcode));
        const grown = header.replace(/(#define FPX_OPCODES\(X\)[^\n]*\n(?:[^\n]*\\\n)*[^\n]*)\n/,
            `$1 \\\n    X (CHUNK_BEGIN, ${last + 1}, chunk_begin, WRITE, NONE, FPX_OPF_GROWS|FPX_OPF_OWNS, "a, b (c)") \\\n` +
            `    X (CHUNK_END, ${last + 2}, chunk_end, READ, NONE, 0, "d")\n`);
        assert.notEqual(grown, header);
        writeFileSync(join(dir, "fpx_protocol.h"), grown);
        const out = execFileSync(process.execPath, [generator, "--stdout", dir], { encoding: "utf8" });
        assert.match(out, new RegExp(`CHUNK_BEGIN: ${last + 1},`));
        assert.match(out, new RegExp(`${last + 2}: "chunk_end",`));
        assert.match(out, /SEARCH: 11,/);
        //  A list the generator cannot read is an error, not a shorter list.
        writeFileSync(join(dir, "fpx_protocol.h"), grown.replace('X (CHUNK_END', 'X (chunk end'));
        assert.throws(() => execFileSync(process.execPath, [generator, "--stdout", dir], { stdio: "pipe" }));
    } finally {
        rmSync(dir, { recursive: true, force: true });
    }
});

test("constants match the protocol definition", () => {
    assert.equal(FPX_MAGIC, Buffer.from("FPXP").readUInt32LE(0));
    assert.equal(FPX_PROTOCOL_VERSION, 1);
    assert.equal(FPX_REPLY_HEADER_SIZE, 24);
    assert.equal(FPX_REQUEST_HEADER_SIZE, 88);
    assert.equal(Opcode.PING, 1);
    assert.equal(OPCODE_NAMES[Opcode.RANGE_SEARCH], "range_search");
    assert.equal(Status.FPX_EAUTH, -3);
    assert.equal(statusName(-12345), "FPX_E?");
});

//  The C library's own names and messages (fpx_error_name, fpx_strerror),
//  read through ctypes, equal the generated ones.
const libso = process.env.FAISS_PROXY_LIB || join(ROOT, "build", "lib", "libfaissproxy.so");
test("status names and messages equal libfaissproxy's", () => {
    assert.ok(existsSync(libso), `${libso} missing (make all)`);
    const codes = Object.keys(STATUS_NAMES).map(Number);
    const script = `
import ctypes, json, sys
lib = ctypes.CDLL(sys.argv[1])
lib.fpx_error_name.restype = lib.fpx_strerror.restype = ctypes.c_char_p
print(json.dumps({c: [lib.fpx_error_name(c).decode(), lib.fpx_strerror(c).decode()] for c in json.loads(sys.argv[2])}))`;
    const out = JSON.parse(execFileSync("/usr/bin/python3", ["-c", script, libso, JSON.stringify(codes)],
        { encoding: "utf8" }));
    for (const code of codes) {
        if (code !== 0)
            assert.equal(out[code][0], STATUS_NAMES[code], `name of ${code}`);
        assert.equal(out[code][1], STATUS_MESSAGES[code], `message of ${code}`);
    }
});
