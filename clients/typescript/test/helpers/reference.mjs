//  reference.mjs — test data and FAISS in-process results to compare with.
//  Vectors come from a seeded generator; FAISS runs in Debian's
//  /usr/bin/python3 (python3-faiss) on the very same bytes.

import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import assert from "node:assert/strict";

const here = dirname(fileURLToPath(import.meta.url));
const PYTHON = process.env.FPX_PYTHON || "/usr/bin/python3";

/** n·d floats in [0, 1) from seed (mulberry32): the same on every run. */
export function randomVectors(n, d, seed) {
    let state = seed >>> 0;
    const x = new Float32Array(n * d);
    for (let i = 0; i < x.length; i++) {
        state = (state + 0x6d2b79f5) >>> 0;
        let t = state;
        t = Math.imul(t ^ (t >>> 15), t | 1);
        t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
        x[i] = ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    }
    return x;
}

export function ids(values) {
    return BigInt64Array.from(values, (v) => BigInt(v));
}

function bytes(array) {
    return Buffer.from(array.buffer, array.byteOffset, array.byteLength);
}

function readTyped(path, Type) {
    const buffer = readFileSync(path);
    const copy = new ArrayBuffer(buffer.length);
    new Uint8Array(copy).set(buffer);
    return new Type(copy);
}

/**
 * Runs a job in FAISS. `files` maps names used in the job to typed arrays.
 * Returns { ntotal, search: {distances, labels}, range: {lims, distances, labels} }.
 */
export function faissReference(job, files) {
    const dir = mkdtempSync(join(tmpdir(), "fpx-tsref-"));
    try {
        for (const [name, array] of Object.entries(files))
            writeFileSync(join(dir, name), bytes(array));
        writeFileSync(join(dir, "job.json"), JSON.stringify({ ...job, dir }));
        const stdout = execFileSync(PYTHON, [join(here, "faiss_ref.py"), join(dir, "job.json")],
            { encoding: "utf8", env: { ...process.env, OMP_NUM_THREADS: "1" } });
        const out = JSON.parse(stdout.trim().split("\n").pop());
        if (job.search)
            out.search = {
                distances: readTyped(join(dir, "D.bin"), Float32Array),
                labels: readTyped(join(dir, "I.bin"), BigInt64Array),
            };
        if (job.range)
            out.range = {
                lims: readTyped(join(dir, "lims.bin"), BigUint64Array),
                distances: readTyped(join(dir, "RD.bin"), Float32Array),
                labels: readTyped(join(dir, "RI.bin"), BigInt64Array),
            };
        return out;
    } finally {
        rmSync(dir, { recursive: true, force: true });
    }
}

export function assertClose(actual, expected, what, rel = 1e-5) {
    assert.equal(actual.length, expected.length, `${what}: length`);
    for (let i = 0; i < actual.length; i++) {
        const tolerance = rel * Math.max(1, Math.abs(expected[i]));
        assert.ok(Math.abs(actual[i] - expected[i]) <= tolerance,
            `${what}[${i}]: ${actual[i]} vs FAISS ${expected[i]}`);
    }
}

/** Search results equal FAISS's: labels exactly, distances within 1e-5 relative. */
export function assertSameSearch(result, reference, what) {
    assert.deepEqual(Array.from(result.labels), Array.from(reference.labels), `${what}: labels`);
    assertClose(result.distances, reference.distances, `${what}: distances`);
}

/** Range results equal FAISS's per query, as sets of (label, distance);
    results within 1e-4 of the radius may fall on either side of it. */
export function assertSameRange(result, reference, radius, what) {
    assert.equal(result.lims.length, reference.lims.length, `${what}: nq`);
    const edge = 1e-4 * Math.max(1, Math.abs(radius));
    const perQuery = (r, q) => {
        const out = new Map();
        for (let j = Number(r.lims[q]); j < Number(r.lims[q + 1]); j++)
            if (Math.abs(r.distances[j] - radius) > edge)
                out.set(r.labels[j], r.distances[j]);
        return out;
    };
    for (let q = 0; q + 1 < result.lims.length; q++) {
        const got = perQuery(result, q);
        const want = perQuery(reference, q);
        assert.deepEqual([...got.keys()].sort(), [...want.keys()].sort(), `${what}: query ${q} labels`);
        for (const [label, distance] of want)
            assertClose([got.get(label)], [distance], `${what}: query ${q} label ${label}`);
    }
}
