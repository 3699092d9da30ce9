//  client.test.mjs — the TypeScript client against a real faissproxyd on
//  loopback, every result compared with FAISS run in-process on the same
//  data (helpers/reference.mjs).

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import {
    FaissProxyClient, FaissProxyError, FPX_PROTOCOL_VERSION, FPX_METRIC_INNER_PRODUCT, Status,
} from "../dist/index.js";
import { Server } from "./helpers/server.mjs";
import {
    assertSameRange, assertSameSearch, faissReference, ids, randomVectors,
} from "./helpers/reference.mjs";

const d = 16;
const xb = randomVectors(600, d, 1);
const xq = randomVectors(25, d, 2);
const xt = randomVectors(1200, d, 3);

/** Asserts that promise rejects with a FaissProxyError of that status. */
async function rejectsWith(promise, status) {
    await assert.rejects(promise, (error) => {
        assert.ok(error instanceof FaissProxyError, `not a FaissProxyError: ${error}`);
        assert.equal(error.status, status, error.message);
        assert.equal(error.code, Object.keys(Status).find((k) => Status[k] === status));
        return true;
    });
}

let server;
let client;

before(async () => {
    server = await new Server().start();
    client = server.client();
});

after(async () => {
    client?.close();
    const status = await server?.stop();
    const log = server?.log();
    server?.cleanup();
    assert.equal(status, 0, `faissproxyd exit status; log:\n${log}`);
});

test("ping answers with the protocol version", async () => {
    const pong = await client.ping();
    assert.equal(pong.protocolVersion, FPX_PROTOCOL_VERSION);
    assert.match(pong.faissVersion, /^\d+\.\d+\.\d+/);
    assert.equal(typeof pong.serverVersion, "string");
});

describe("Flat", () => {
    test("L2 add and search equal FAISS", async () => {
        const created = await client.create("flat_l2", d, "Flat");
        assert.equal(created.name, "flat_l2");
        assert.equal(created.d, d);
        assert.equal(created.ntotal, 0);
        assert.equal(created.className, "IndexFlat");
        assert.equal(await client.add("flat_l2", xb, d), 600);
        const result = await client.search("flat_l2", xq, d, 10);
        assert.equal(result.nq, 25);
        assert.equal(result.k, 10);
        const ref = faissReference({ d, factory: "Flat", adds: [{ x: "xb" }], search: { x: "xq", k: 10 } },
            { xb, xq });
        assertSameSearch(result, ref.search, "Flat L2");
    });

    test("inner product search equals FAISS", async () => {
        await client.create("flat_ip", d, "Flat", FPX_METRIC_INNER_PRODUCT);
        await client.add("flat_ip", xb, d);
        const result = await client.search("flat_ip", xq, d, 5);
        const ref = faissReference({ d, factory: "Flat", metric: 0, adds: [{ x: "xb" }],
            search: { x: "xq", k: 5 } }, { xb, xq });
        assertSameSearch(result, ref.search, "Flat IP");
        assert.equal((await client.describe("flat_ip")).metric, FPX_METRIC_INNER_PRODUCT);
    });

    test("range_search equals FAISS", async () => {
        const radius = 1.2;
        const result = await client.rangeSearch("flat_l2", xq, d, radius);
        assert.equal(result.nq, 25);
        assert.equal(result.lims.length, 26);
        const ref = faissReference({ d, factory: "Flat", adds: [{ x: "xb" }],
            range: { x: "xq", radius } }, { xb, xq });
        assert.ok(ref.range.labels.length > 25, "the radius finds something");
        assertSameRange(result, ref.range, radius, "Flat range");
    });

    test("k larger than ntotal pads with -1", async () => {
        await client.create("flat_small", d, "Flat");
        await client.add("flat_small", xb.subarray(0, 3 * d), d);
        const result = await client.search("flat_small", xq.subarray(0, d), d, 5);
        assert.deepEqual(Array.from(result.labels.subarray(3)), [-1n, -1n]);
    });
});

describe("IVF", () => {
    test("train, add_with_ids and search with nprobe equal FAISS", async () => {
        const factory = "IVF16,Flat";
        const created = await client.create("ivf", d, factory);
        assert.equal(created.isTrained, false);
        await rejectsWith(client.add("ivf", xb, d), Status.FPX_EFAISS);
        assert.equal(await client.train("ivf", xt, d), true);
        assert.equal((await client.describe("ivf")).isTrained, true);
        const labels = ids(Array.from({ length: 600 }, (_, i) => 1000 + 3 * i));
        assert.equal(await client.addWithIds("ivf", xb, d, labels), 600);
        const result = await client.search("ivf", xq, d, 8, { nprobe: 4 });
        const ref = faissReference({ d, factory, train: "xt", adds: [{ x: "xb", ids: "ids" }],
            nprobe: 4, search: { x: "xq", k: 8 } }, { xt, xb, xq, ids: labels });
        assertSameSearch(result, ref.search, "IVF nprobe=4");
        assert.ok(result.labels.every((l) => l >= 1000n && (l - 1000n) % 3n === 0n));
        //  nprobe travels with the request only: the index keeps its own.
        const narrow = await client.search("ivf", xq, d, 8);
        const refNarrow = faissReference({ d, factory, train: "xt", adds: [{ x: "xb", ids: "ids" }],
            search: { x: "xq", k: 8 } }, { xt, xb, xq, ids: labels });
        assertSameSearch(narrow, refNarrow.search, "IVF default nprobe");
    });

    test("remove_ids by range equals FAISS", async () => {
        const labels = ids(Array.from({ length: 600 }, (_, i) => 1000 + 3 * i));
        const removed = await client.removeIds("ivf", { lo: 1000, hi: 1300 });
        assert.equal(removed, 100);
        assert.equal((await client.describe("ivf")).ntotal, 500);
        const result = await client.search("ivf", xq, d, 8, { nprobe: 16 });
        const ref = faissReference({ d, factory: "IVF16,Flat", train: "xt",
            adds: [{ x: "xb", ids: "ids" }], remove_range: [1000, 1300], nprobe: 16,
            search: { x: "xq", k: 8 } }, { xt, xb, xq, ids: labels });
        assert.equal(ref.ntotal, 500);
        assertSameSearch(result, ref.search, "IVF after remove");
    });
});

describe("IDMap", () => {
    test("add_with_ids, remove_ids and range_search equal FAISS", async () => {
        const factory = "IDMap,Flat";
        await client.create("idmap", d, factory);
        const labels = ids(Array.from({ length: 600 }, (_, i) => 7 * i + 5));
        assert.equal(await client.addWithIds("idmap", xb, d, labels), 600);
        const gone = ids([5, 12, 19, 26, 4000, 12345]);    // four present, two not
        assert.equal(await client.removeIds("idmap", gone), 4);
        const result = await client.search("idmap", xq, d, 10);
        const radius = 1.0;
        const range = await client.rangeSearch("idmap", xq, d, radius);
        const ref = faissReference({ d, factory, adds: [{ x: "xb", ids: "ids" }], remove: "gone",
            search: { x: "xq", k: 10 }, range: { x: "xq", radius } }, { xb, xq, ids: labels, gone });
        assert.equal(ref.ntotal, 596);
        assertSameSearch(result, ref.search, "IDMap search");
        assertSameRange(range, ref.range, radius, "IDMap range");
        assert.ok(!result.labels.some((l) => gone.includes(l)));
    });
});

describe("lifecycle", () => {
    test("describe, list, open and drop", async () => {
        await client.create("life", 8, "Flat");
        await client.add("life", randomVectors(7, 8, 9), 8);
        const described = await client.describe("life", { memory: true });
        assert.equal(described.ntotal, 7);
        assert.equal(described.factory, "Flat");
        assert.equal(described.anonymous, false);
        assert.ok(described.memoryBytes > 7 * 8 * 4);
        assert.equal((await client.open("life")).ntotal, 7);
        const names = await client.list();
        assert.ok(names.includes("life"));
        assert.deepEqual(names, [...names].sort());
        await client.drop("life");
        assert.ok(!(await client.list()).includes("life"));
        await rejectsWith(client.describe("life"), Status.FPX_ENOTFOUND);
    });

    test("an anonymous index belongs to its connection", async () => {
        const anon = await client.create(null, 4, "Flat");
        assert.ok(anon.name.startsWith("@"));
        assert.equal(anon.anonymous, true);
        assert.equal(await client.add(anon.name, randomVectors(2, 4, 4), 4), 2);
        const other = server.client();
        try {
            await rejectsWith(other.describe(anon.name), Status.FPX_ENOTFOUND);
        } finally {
            other.close();
        }
        assert.ok(!(await client.list()).includes(anon.name));
    });

    test("requests in flight together each get their own reply", async () => {
        const queries = Array.from({ length: 40 }, (_, i) => xq.subarray((i % 25) * d, (i % 25 + 1) * d));
        const results = await Promise.all(queries.map((q) => client.search("flat_l2", q, d, 3)));
        const ref = faissReference({ d, factory: "Flat", adds: [{ x: "xb" }], search: { x: "xq", k: 3 } },
            { xb, xq });
        results.forEach((r, i) => {
            const row = i % 25;
            assertSameSearch(r, { labels: ref.search.labels.subarray(row * 3, row * 3 + 3),
                distances: ref.search.distances.subarray(row * 3, row * 3 + 3) }, `query ${i}`);
        });
    });
});

describe("errors", () => {
    test("a wrong API key is FPX_EAUTH", async () => {
        const bad = new FaissProxyClient({ endpoint: server.endpoint, apiKey: "not-the-key", timeoutMs: 20000 });
        try {
            await rejectsWith(bad.list(), Status.FPX_EAUTH);
        } finally {
            bad.close();
        }
    });

    test("an unknown index is FPX_ENOTFOUND", async () => {
        await rejectsWith(client.search("no_such_index", xq, d, 1), Status.FPX_ENOTFOUND);
        await rejectsWith(client.drop("no_such_index"), Status.FPX_ENOTFOUND);
    });

    test("server refusals keep their status and text", async () => {
        await rejectsWith(client.create("flat_l2", d, "Flat"), Status.FPX_EEXIST);
        await rejectsWith(client.create("bad name!", d, "Flat"), Status.FPX_EINVAL);
        //  8 floats are one vector of d=8 but the index has d=16.
        await rejectsWith(client.add("flat_l2", new Float32Array(16), 8), Status.FPX_EINVAL);
        await rejectsWith(client.add("flat_l2", new Float32Array(d).fill(NaN), d), Status.FPX_EINVAL);
        await rejectsWith(client.create("bad_factory", d, "NoSuchThing"), Status.FPX_EFAISS);
        const error = await client.open("nope").catch((e) => e);
        assert.match(error.message, /nope/);
        assert.equal(error.opcode, "open");
    });

    test("bad arguments are refused before sending", async () => {
        await rejectsWith(client.search("flat_l2", new Float32Array(15), d, 1), Status.FPX_EINVAL);
        await rejectsWith(client.search("flat_l2", xq, d, 0), Status.FPX_EINVAL);
        await rejectsWith(client.addWithIds("idmap", xb, d, ids([1, 2])), Status.FPX_EINVAL);
        assert.throws(() => new FaissProxyClient({ endpoint: server.endpoint, apiKey: "k".repeat(65) }),
            (e) => e instanceof FaissProxyError && e.status === Status.FPX_EINVAL);
        assert.throws(() => new FaissProxyClient({ endpoint: server.endpoint, apiKey: "k", serverKey: "short" }),
            (e) => e instanceof FaissProxyError && e.status === Status.FPX_EINVAL);
    });

    test("no server is FPX_ETIMEDOUT, a closed client FPX_ECONNECT", async () => {
        const { createServer } = await import("node:net");
        const port = await new Promise((resolve) => {
            const s = createServer().listen(0, "127.0.0.1", () => {
                const p = s.address().port;
                s.close(() => resolve(p));
            });
        });
        const nobody = new FaissProxyClient({ endpoint: `tcp://127.0.0.1:${port}`, apiKey: "k", timeoutMs: 200 });
        await rejectsWith(nobody.ping(), Status.FPX_ETIMEDOUT);
        nobody.close();
        await rejectsWith(nobody.ping(), Status.FPX_ECONNECT);
    });
});
