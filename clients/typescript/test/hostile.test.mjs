//  hostile.test.mjs — the client against a peer that speaks the protocol
//  badly: a ZeroMQ ROUTER in this process that checks each request's
//  frames byte by byte and answers with crafted replies. A malformed reply
//  must be a FaissProxyError (FPX_EPROTO), never a crash or an allocation
//  sized by the peer; an unreadable one is dropped (the request times out).

import assert from "node:assert/strict";
import { decode, encode } from "@msgpack/msgpack";
import { after, before, test } from "node:test";
import * as zmq from "zeromq";
import {
    FaissProxyClient, FaissProxyError, FPX_MAGIC, FPX_PROTOCOL_VERSION, FPX_REPLY_HEADER_SIZE,
    FPX_REQUEST_HEADER_SIZE, Opcode, Status,
} from "../dist/index.js";
import { floatFrame, int64Frame } from "../dist/wire.js";

let router;
let client;
const API_KEY = "hostile-test-key";

before(async () => {
    router = new zmq.Router({ linger: 0 });
    await router.bind("tcp://127.0.0.1:*");
    client = new FaissProxyClient({ endpoint: router.lastEndpoint, apiKey: API_KEY, timeoutMs: 2000 });
});

after(() => {
    client.close();
    router.close();
});

function replyHeader(request, { status = 0, magic = FPX_MAGIC, version = FPX_PROTOCOL_VERSION,
                                opcode = request.opcode, id = request.id, size = FPX_REPLY_HEADER_SIZE } = {}) {
    const h = Buffer.alloc(Math.max(size, FPX_REPLY_HEADER_SIZE));
    h.writeUInt32LE(magic, 0);
    h.writeUInt16LE(version, 4);
    h.writeUInt16LE(opcode, 6);
    h.writeInt32LE(status, 12);
    h.writeBigUInt64LE(id, 16);
    return h.subarray(0, size);
}

/** Receives the next request, checks its header, answers with make(request). */
async function serveOne(make) {
    const [identity, header, params, ...arrays] = await router.receive();
    assert.equal(header.length, FPX_REQUEST_HEADER_SIZE);
    assert.equal(header.readUInt32LE(0), FPX_MAGIC);
    assert.equal(header.readUInt16LE(4), FPX_PROTOCOL_VERSION);
    assert.equal(header.readUInt32LE(8), 0, "flags");
    assert.equal(header.readInt32LE(12), 0, "status");
    const key = header.subarray(24);
    assert.equal(key.subarray(0, API_KEY.length).toString(), API_KEY);
    assert.ok(key.subarray(API_KEY.length).every((b) => b === 0), "key NUL-padded");
    const request = {
        opcode: header.readUInt16LE(6), id: header.readBigUInt64LE(16),
        params: params.length ? decode(params) : {}, arrays,
    };
    const frames = make(request);
    if (frames)
        await router.send([identity, ...frames]);
    return request;
}

async function expectError(promise, status, pattern) {
    const error = await promise.catch((e) => e);
    assert.ok(error instanceof FaissProxyError, `expected a FaissProxyError, got ${error}`);
    assert.equal(error.status, status, error.message);
    if (pattern)
        assert.match(error.message, pattern);
    return error;
}

const q = new Float32Array([1, 2, 3, 4]);

test("a search request carries its parameters and the raw vectors", async () => {
    const [request] = await Promise.all([
        serveOne((r) => [replyHeader(r), encode({ nq: 1, k: 2 }),
            Buffer.from(new Float32Array([0.5, 1.5]).buffer), Buffer.from(new BigInt64Array([7n, 9n]).buffer)]),
        client.search("idx", q, 4, 2, { nprobe: 3 }).then((result) => {
            assert.deepEqual(Array.from(result.distances), [0.5, 1.5]);
            assert.deepEqual(Array.from(result.labels), [7n, 9n]);
        }),
    ]);
    assert.equal(request.opcode, Opcode.SEARCH);
    assert.deepEqual(request.params, { name: "idx", k: 2, d: 4, nprobe: 3 });
    assert.equal(request.arrays.length, 1);
    assert.deepEqual(Array.from(new Float32Array(new Uint8Array(request.arrays[0]).buffer)), [1, 2, 3, 4]);
});

test("an array frame of the wrong size is FPX_EPROTO", async () => {
    await Promise.all([
        serveOne((r) => [replyHeader(r), encode({ nq: 1, k: 2 }), Buffer.alloc(7), Buffer.alloc(16)]),
        expectError(client.search("idx", q, 4, 2), Status.FPX_EPROTO, /D frame/),
    ]);
});

test("a result frame declaring 2^32-1 elements is FPX_EPROTO", async () => {
    await Promise.all([
        serveOne((r) => [replyHeader(r), Buffer.from([0xdd, 0xff, 0xff, 0xff, 0xff, 0x01])]),
        expectError(client.list(), Status.FPX_EPROTO, /not msgpack/),
    ]);
    await Promise.all([
        serveOne((r) => [replyHeader(r), Buffer.from([0xdf, 0xff, 0xff, 0xff, 0xff])]),
        expectError(client.list(), Status.FPX_EPROTO),
    ]);
    await Promise.all([
        serveOne((r) => [replyHeader(r), Buffer.from([0xdb, 0xff, 0xff, 0xff, 0xf0, 0x41])]),
        expectError(client.ping(), Status.FPX_EPROTO),
    ]);
});

test("range_search results that disagree with their frames are FPX_EPROTO", async () => {
    const lims = (values) => Buffer.from(BigUint64Array.from(values).buffer);
    //  A huge total with empty frames: refused before anything is sized by it.
    await Promise.all([
        serveOne((r) => [replyHeader(r), encode({ nq: 1, total: 2 ** 40 }), lims([0n, 2n ** 40n]),
            Buffer.alloc(0), Buffer.alloc(0)]),
        expectError(client.rangeSearch("idx", q, 4, 1.0), Status.FPX_EPROTO),
    ]);
    await Promise.all([
        serveOne((r) => [replyHeader(r), encode({ nq: 2, total: 1 }), lims([0n, 2n, 1n]),
            Buffer.alloc(4), Buffer.alloc(8)]),
        expectError(client.rangeSearch("idx", new Float32Array(8), 4, 1.0), Status.FPX_EPROTO, /lims/),
    ]);
    await Promise.all([
        serveOne((r) => [replyHeader(r), encode({ nq: 1, total: 1 }), lims([0n, 1n]),
            Buffer.from(new Float32Array([0.25]).buffer), Buffer.from(new BigInt64Array([3n]).buffer)]),
        client.rangeSearch("idx", q, 4, 1.0).then((r) => {
            assert.deepEqual(Array.from(r.lims), [0n, 1n]);
            assert.deepEqual(Array.from(r.labels), [3n]);
        }),
    ]);
});

test("result fields of the wrong type are FPX_EPROTO", async () => {
    await Promise.all([
        serveOne((r) => [replyHeader(r), encode({ names: ["a", 3] })]),
        expectError(client.list(), Status.FPX_EPROTO, /names/),
    ]);
    await Promise.all([
        serveOne((r) => [replyHeader(r), encode({ ntotal: -5 })]),
        expectError(client.add("idx", q, 4), Status.FPX_EPROTO, /ntotal/),
    ]);
    await Promise.all([
        serveOne((r) => [replyHeader(r), encode({ name: "x", d: "4" })]),
        expectError(client.describe("x"), Status.FPX_EPROTO),
    ]);
});

test("error replies keep their status, known or not", async () => {
    await Promise.all([
        serveOne((r) => [replyHeader(r, { status: Status.FPX_EQUOTA }), encode({ error: "too many" })]),
        expectError(client.create("x", 4, "Flat"), Status.FPX_EQUOTA, /too many/),
    ]);
    const error = await Promise.all([
        serveOne((r) => [replyHeader(r, { status: -99 }), Buffer.alloc(0)]),
        expectError(client.drop("x"), -99),
    ]).then(([, e]) => e);
    assert.equal(error.code, "FPX_E?");
});

test("a reply of another version or opcode is refused", async () => {
    await Promise.all([
        serveOne((r) => [replyHeader(r, { version: 2 }), Buffer.alloc(0)]),
        expectError(client.ping(), Status.FPX_EVERSION),
    ]);
    await Promise.all([
        serveOne((r) => [replyHeader(r, { opcode: Opcode.DROP }), Buffer.alloc(0)]),
        expectError(client.ping(), Status.FPX_EPROTO, /opcode/),
    ]);
});

test("an unreadable reply is dropped and the request times out", async () => {
    client.timeoutMs = 300;
    try {
        await Promise.all([
            serveOne((r) => [replyHeader(r, { magic: 0x12345678 }), Buffer.alloc(0)]),
            expectError(client.ping(), Status.FPX_ETIMEDOUT),
        ]);
        await Promise.all([
            serveOne((r) => [replyHeader(r, { size: 23 }), Buffer.alloc(0)]),
            expectError(client.ping(), Status.FPX_ETIMEDOUT),
        ]);
        //  A reply to an id nobody waits for, then the right one.
        await Promise.all([
            serveOne((r) => [replyHeader(r, { id: r.id + 1000n }), encode({})]),
            expectError(client.drop("x"), Status.FPX_ETIMEDOUT),
        ]);
    } finally {
        client.timeoutMs = 2000;
    }
});

test("misaligned array frames are copied, aligned ones viewed in place", () => {
    const raw = Buffer.alloc(1 + 16);
    raw.writeFloatLE(2.5, 1);
    raw.writeFloatLE(-1, 5);
    const misaligned = raw.subarray(1, 9);
    assert.notEqual(misaligned.byteOffset % 4, 0);
    assert.deepEqual(Array.from(floatFrame(misaligned, 2, "D", "search")), [2.5, -1]);
    const ids = Buffer.alloc(17);
    ids.writeBigInt64LE(-1n, 1);
    ids.writeBigInt64LE(42n, 9);
    assert.deepEqual(Array.from(int64Frame(ids.subarray(1), 2, "I", "search")), [-1n, 42n]);
    const aligned = Buffer.from(new Float32Array([1, 2]).buffer);
    assert.equal(floatFrame(aligned, 2, "D", "search").buffer, aligned.buffer);
    assert.throws(() => floatFrame(aligned, 3, "D", "search"), (e) => e.status === Status.FPX_EPROTO);
});
