//  client.ts — FaissProxyClient: one ZeroMQ DEALER connection to a
//  faissproxyd, many requests in flight on it, each matched to its reply by
//  request id. Methods check their arguments, send one request and parse
//  its reply through wire.ts; failures reject with a FaissProxyError.

import * as zmq from "zeromq";
import { FaissProxyError, invalid, malformed } from "./errors.js";
import {
    FPX_DIM_MAX, FPX_K_MAX, FPX_METRIC_L2, OPCODE_NAMES, Opcode, Status,
} from "./protocol.generated.js";
import {
    bytesOf, checkReply, decodeReplyFrames, encodeApiKey, encodeParams, encodeRequestHeader,
    floatFrame, int64Frame, resultBool, resultCount, resultInt, resultNumber, resultString,
    uint64Frame, type Params, type Reply,
} from "./wire.js";

export const DEFAULT_ENDPOINT = "tcp://127.0.0.1:5555";
export const DEFAULT_TIMEOUT_MS = 30000;

//  ZMTP heartbeats, as libfaissproxy: a dead server is noticed in 15 s.
const HEARTBEAT_IVL_MS = 5000;
const HEARTBEAT_TIMEOUT_MS = 15000;

export interface ClientOptions {
    /** Server endpoint; default $FAISS_PROXY_SERVER, else tcp://127.0.0.1:5555. */
    endpoint?: string;
    /** API key (at most 64 bytes); default $FAISS_PROXY_API_KEY, else "". */
    apiKey?: string;
    /** The server's CURVE public key (40 Z85 characters) when it runs with
        --curve-secret-file; default $FAISS_PROXY_SERVER_KEY; "" for none. */
    serverKey?: string;
    /** This client's CURVE key pair (40 Z85 characters each), for servers
        that admit only listed client keys (--curve-clients-file); default a
        fresh key pair per client. */
    clientKeyPair?: { publicKey: string; secretKey: string };
    /** Milliseconds to wait for each reply; default $FAISS_PROXY_TIMEOUT_MS,
        else 30000. */
    timeoutMs?: number;
}

export interface PingResult {
    serverVersion: string;
    protocolVersion: number;
    faissVersion: string;
}

export interface IndexDescription {
    name: string;
    d: number;
    ntotal: number;
    isTrained: boolean;
    /** 0 inner product, 1 L2 (FAISS's numbering). */
    metric: number;
    factory: string;
    anonymous: boolean;
    /** FAISS class name ("" for a damaged index). */
    className: string;
    /** Serialized size; only when describe() was asked for it. */
    memoryBytes?: number;
    /** Why a damaged index failed its checks at server start. */
    damaged?: string;
    /** False while evicted under the server's --memory-budget-mb (loaded
     *  back on its next use) or damaged; absent from older servers. */
    loaded?: boolean;
    /** True while a remove_ids rebuilds the HNSW graph in the background
     *  (ntotal and searches already exclude the removed vectors). */
    rebuildPending?: boolean;
}

export interface SearchOptions {
    /** IVF nprobe for this request only. */
    nprobe?: number;
    /** HNSW efSearch for this request only. */
    efSearch?: number;
}

export interface SearchResult {
    nq: number;
    k: number;
    /** nq·k distances, row-major. */
    distances: Float32Array;
    /** nq·k labels, row-major; -1 for an empty slot. */
    labels: BigInt64Array;
}

export interface RangeSearchResult {
    nq: number;
    /** nq+1 offsets: query i's results are [lims[i], lims[i+1]). */
    lims: BigUint64Array;
    distances: Float32Array;
    labels: BigInt64Array;
}

interface Pending {
    opcode: number;
    resolve: (reply: Reply) => void;
    reject: (error: FaissProxyError) => void;
    timer: NodeJS.Timeout;
}

const Z85_KEY = /^[0-9a-zA-Z.\-:+=^!/*?&<>()[\]{}@%$#]{40}$/;

function envTimeout(): number {
    const text = process.env.FAISS_PROXY_TIMEOUT_MS;
    if (text && /^-?\d+$/.test(text)) {
        const value = Number(text);
        if (Number.isSafeInteger(value))
            return value;
    }
    return DEFAULT_TIMEOUT_MS;
}

function checkName(name: string, opcode: string): void {
    if (typeof name !== "string" || name.length === 0)
        throw invalid("index name must be a non-empty string", opcode);
}

function checkInt(value: number, what: string, min: number, max: number, opcode: string): void {
    if (!Number.isSafeInteger(value) || value < min || value > max)
        throw invalid(`${what} must be an integer in [${min}, ${max}], not ${value}`, opcode);
}

//  Returns n for a Float32Array of n vectors of dimension d (n ≥ 1).
function rows(x: Float32Array, d: number, opcode: string): number {
    if (!(x instanceof Float32Array))
        throw invalid("vectors must be a Float32Array", opcode);
    checkInt(d, "d", 1, FPX_DIM_MAX, opcode);
    if (x.length === 0 || x.length % d !== 0)
        throw invalid(`${x.length} floats are not a whole number (≥ 1) of vectors of dimension ${d}`, opcode);
    return x.length / d;
}

function description(result: Record<string, unknown>, opcode: string): IndexDescription {
    const out: IndexDescription = {
        name: resultString(result, "name", opcode),
        d: resultCount(result, "d", opcode),
        ntotal: resultCount(result, "ntotal", opcode),
        isTrained: resultBool(result, "is_trained", opcode),
        metric: resultInt(result, "metric", opcode),
        factory: resultString(result, "factory", opcode),
        anonymous: resultBool(result, "anonymous", opcode),
        className: resultString(result, "class", opcode),
    };
    if (result.memory_bytes !== undefined)
        out.memoryBytes = resultCount(result, "memory_bytes", opcode);
    if (result.damaged !== undefined)
        out.damaged = resultString(result, "damaged", opcode);
    if (result.loaded !== undefined)
        out.loaded = resultBool(result, "loaded", opcode);
    if (result.rebuild_pending !== undefined)
        out.rebuildPending = resultBool(result, "rebuild_pending", opcode);
    return out;
}

/**
 * A connection to faissproxyd. Not connected until the first request (ZeroMQ
 * connects in the background and reconnects by itself). Requests may be
 * issued concurrently; each resolves with its own reply. A Float32Array or
 * BigInt64Array passed in is sent without a copy: do not change it until its
 * promise settles. close() when done: anonymous indexes go with the
 * connection.
 */
export class FaissProxyClient {
    readonly endpoint: string;
    timeoutMs: number;
    private readonly socket: zmq.Dealer;
    private readonly apiKey: Buffer;
    private readonly pending = new Map<bigint, Pending>();
    private nextId = 1n;
    private sending: Promise<void> = Promise.resolve();
    private closed = false;

    constructor(options: ClientOptions = {}) {
        this.endpoint = options.endpoint ?? process.env.FAISS_PROXY_SERVER ?? DEFAULT_ENDPOINT;
        this.apiKey = encodeApiKey(options.apiKey ?? process.env.FAISS_PROXY_API_KEY ?? "");
        this.timeoutMs = options.timeoutMs ?? envTimeout();
        const serverKey = options.serverKey ?? process.env.FAISS_PROXY_SERVER_KEY ?? "";
        const socketOptions: Partial<zmq.Dealer> = {
            linger: 0,
            immediate: true,
            heartbeatInterval: HEARTBEAT_IVL_MS,
            heartbeatTimeout: HEARTBEAT_TIMEOUT_MS,
        };
        if (serverKey !== "") {
            if (!Z85_KEY.test(serverKey))
                throw invalid("server key must be 40 Z85 characters");
            const pair = options.clientKeyPair ?? zmq.curveKeyPair();
            if (!Z85_KEY.test(pair.publicKey) || !Z85_KEY.test(pair.secretKey))
                throw invalid("client key pair must be two keys of 40 Z85 characters");
            socketOptions.curveServerKey = serverKey;
            socketOptions.curvePublicKey = pair.publicKey;
            socketOptions.curveSecretKey = pair.secretKey;
        }
        this.socket = new zmq.Dealer(socketOptions);
        try {
            this.socket.connect(this.endpoint);
        } catch (error) {
            this.socket.close();
            throw new FaissProxyError(Status.FPX_ECONNECT,
                `cannot connect to ${this.endpoint}: ${(error as Error).message}`);
        }
        void this.receiveLoop();
    }

    /** Closes the connection; requests still waiting fail with FPX_ECONNECT. */
    close(): void {
        if (this.closed)
            return;
        this.closed = true;
        this.socket.close();
        this.failAll(new FaissProxyError(Status.FPX_ECONNECT, "client closed"));
    }

    /* ---- operations --------------------------------------------------- */

    /** Answered by the server's broker: versions, no index touched. */
    async ping(): Promise<PingResult> {
        const { result } = await this.request(Opcode.PING, {});
        return {
            serverVersion: resultString(result, "server_version", "ping"),
            protocolVersion: resultInt(result, "protocol_version", "ping"),
            faissVersion: resultString(result, "faiss_version", "ping"),
        };
    }

    /** Creates an index from a FAISS factory string. `name` null: anonymous,
        owned by this connection (its handle is the description's name). */
    async create(name: string | null, d: number, factory: string,
                 metric: number = FPX_METRIC_L2): Promise<IndexDescription> {
        if (name !== null)
            checkName(name, "create");
        checkInt(d, "d", 1, FPX_DIM_MAX, "create");
        const { result } = await this.request(Opcode.CREATE,
            { name: name ?? undefined, d, factory, metric });
        return description(result, "create");
    }

    async open(name: string): Promise<IndexDescription> {
        checkName(name, "open");
        const { result } = await this.request(Opcode.OPEN, { name });
        return description(result, "open");
    }

    async drop(name: string): Promise<void> {
        checkName(name, "drop");
        await this.request(Opcode.DROP, { name });
    }

    /** The tenant's named indexes, sorted. */
    async list(): Promise<string[]> {
        const { result } = await this.request(Opcode.LIST, {});
        const names = result.names;
        if (!Array.isArray(names) || !names.every((n) => typeof n === "string"))
            throw malformed('"names" is not an array of strings', "list");
        return names as string[];
    }

    async describe(name: string, options: { memory?: boolean } = {}): Promise<IndexDescription> {
        checkName(name, "describe");
        const { result } = await this.request(Opcode.DESCRIBE, { name, memory: options.memory });
        return description(result, "describe");
    }

    /** Trains on n vectors of dimension d; returns is_trained. */
    async train(name: string, x: Float32Array, d: number): Promise<boolean> {
        checkName(name, "train");
        rows(x, d, "train");
        const { result } = await this.request(Opcode.TRAIN, { name, d }, [bytesOf(x)]);
        return resultBool(result, "is_trained", "train");
    }

    /** Adds n vectors of dimension d; returns the index's new ntotal. */
    async add(name: string, x: Float32Array, d: number): Promise<number> {
        checkName(name, "add");
        rows(x, d, "add");
        const { result } = await this.request(Opcode.ADD, { name, d }, [bytesOf(x)]);
        return resultCount(result, "ntotal", "add");
    }

    /** Adds n vectors with their n ids; returns the index's new ntotal. */
    async addWithIds(name: string, x: Float32Array, d: number, ids: BigInt64Array): Promise<number> {
        checkName(name, "add_with_ids");
        const n = rows(x, d, "add_with_ids");
        if (!(ids instanceof BigInt64Array) || ids.length !== n)
            throw invalid(`ids must be a BigInt64Array of ${n} ids`, "add_with_ids");
        const { result } = await this.request(Opcode.ADD_WITH_IDS, { name, d },
            [bytesOf(x), bytesOf(ids)]);
        return resultCount(result, "ntotal", "add_with_ids");
    }

    /** The k nearest neighbours of each of the nq query vectors. */
    async search(name: string, x: Float32Array, d: number, k: number,
                 options: SearchOptions = {}): Promise<SearchResult> {
        const op = "search";
        checkName(name, op);
        const nq = rows(x, d, op);
        checkInt(k, "k", 1, FPX_K_MAX, op);
        const { result, arrays } = await this.request(Opcode.SEARCH,
            { name, k, d, nprobe: options.nprobe, efSearch: options.efSearch }, [bytesOf(x)]);
        if (resultCount(result, "nq", op) !== nq || resultCount(result, "k", op) !== k)
            throw malformed("nq or k differ from the request's", op);
        if (arrays.length !== 2)
            throw malformed(`${arrays.length} array frames, expected 2`, op);
        return {
            nq, k,
            distances: floatFrame(arrays[0], nq * k, "D", op),
            labels: int64Frame(arrays[1], nq * k, "I", op),
        };
    }

    /** Every neighbour within radius of each query (L2: squared distance
        below radius; inner product: above it), as FAISS's range_search. */
    async rangeSearch(name: string, x: Float32Array, d: number, radius: number,
                      options: SearchOptions = {}): Promise<RangeSearchResult> {
        const op = "range_search";
        checkName(name, op);
        const nq = rows(x, d, op);
        if (typeof radius !== "number" || !Number.isFinite(radius))
            throw invalid("radius must be a finite number", op);
        const { result, arrays } = await this.request(Opcode.RANGE_SEARCH,
            { name, radius, d, nprobe: options.nprobe, efSearch: options.efSearch }, [bytesOf(x)]);
        if (resultCount(result, "nq", op) !== nq)
            throw malformed("nq differs from the request's", op);
        const total = resultCount(result, "total", op);
        if (arrays.length !== 3)
            throw malformed(`${arrays.length} array frames, expected 3`, op);
        //  Sizes first: total is bounded by the bytes of the frames present.
        if (arrays[1].length !== total * 4 || arrays[2].length !== total * 8)
            throw malformed(`D/I frames do not hold total=${total} results`, op);
        const lims = uint64Frame(arrays[0], nq + 1, "lims", op);
        if (lims[0] !== 0n || lims[nq] !== BigInt(total))
            throw malformed("lims do not span [0, total]", op);
        for (let i = 0; i < nq; i++)
            if (lims[i] > lims[i + 1])
                throw malformed("lims decrease", op);
        return {
            nq, lims,
            distances: floatFrame(arrays[1], total, "D", op),
            labels: int64Frame(arrays[2], total, "I", op),
        };
    }

    /** Removes the given ids, or those in [lo, hi); returns how many. */
    async removeIds(name: string, ids: BigInt64Array | { lo: number; hi: number }): Promise<number> {
        const op = "remove_ids";
        checkName(name, op);
        let reply: Reply;
        if (ids instanceof BigInt64Array) {
            if (ids.length === 0)
                throw invalid("no ids to remove", op);
            reply = await this.request(Opcode.REMOVE_IDS, { name }, [bytesOf(ids)]);
        } else {
            checkInt(ids.lo, "lo", Number.MIN_SAFE_INTEGER, Number.MAX_SAFE_INTEGER, op);
            checkInt(ids.hi, "hi", Number.MIN_SAFE_INTEGER, Number.MAX_SAFE_INTEGER, op);
            reply = await this.request(Opcode.REMOVE_IDS, { name, lo: ids.lo, hi: ids.hi });
        }
        return resultCount(reply.result, "removed", op);
    }

    /* ---- transport ---------------------------------------------------- */

    /** Sends one request and waits for its reply (any opcode; the typed
        methods above are built on it). Rejects with a FaissProxyError. */
    request(opcode: number, params: Params, arrays: Buffer[] = []): Promise<Reply> {
        const name = OPCODE_NAMES[opcode] ?? `opcode ${opcode}`;
        if (this.closed)
            return Promise.reject(new FaissProxyError(Status.FPX_ECONNECT, "client closed", name));
        const id = this.nextId;
        this.nextId = this.nextId === 0xffffffffffffffffn ? 1n : this.nextId + 1n;
        const frames = [encodeRequestHeader(opcode, id, this.apiKey), encodeParams(params), ...arrays];
        return new Promise<Reply>((resolve, reject) => {
            const timer = setTimeout(() => {
                this.pending.delete(id);
                reject(new FaissProxyError(Status.FPX_ETIMEDOUT,
                    `no reply from ${this.endpoint} within ${this.timeoutMs} ms`, name));
            }, this.timeoutMs);
            this.pending.set(id, { opcode, resolve, reject, timer });
            //  zeromq allows one send at a time: queue them. A send that
            //  cannot go out (no connection yet) waits up to the timeout.
            this.sending = this.sending.then(async () => {
                if (!this.pending.has(id) || this.closed)
                    return;
                try {
                    this.socket.sendTimeout = this.timeoutMs;
                    await this.socket.send(frames);
                } catch (error) {
                    //  EAGAIN: no connection completed (server down, or a
                    //  CURVE handshake refused) within the timeout.
                    const timedOut = (error as { code?: string }).code === "EAGAIN";
                    this.settle(id, null, timedOut
                        ? new FaissProxyError(Status.FPX_ETIMEDOUT,
                            `no connection to ${this.endpoint} within ${this.timeoutMs} ms`, name)
                        : new FaissProxyError(Status.FPX_ECONNECT,
                            `cannot send to ${this.endpoint}: ${(error as Error).message}`, name));
                }
            });
        });
    }

    private settle(id: bigint, reply: Reply | null, error: FaissProxyError | null): void {
        const entry = this.pending.get(id);
        if (!entry)
            return;
        this.pending.delete(id);
        clearTimeout(entry.timer);
        if (error)
            entry.reject(error);
        else
            entry.resolve(reply as Reply);
    }

    private failAll(error: FaissProxyError): void {
        for (const id of [...this.pending.keys()])
            this.settle(id, null, error);
    }

    //  Replies in any order; one whose header cannot be read, or whose id
    //  matches no waiting request (it timed out), is dropped.
    private async receiveLoop(): Promise<void> {
        while (!this.closed) {
            let frames: Buffer[];
            try {
                frames = await this.socket.receive();
            } catch (error) {
                if (!this.closed)
                    this.failAll(new FaissProxyError(Status.FPX_ECONNECT,
                        `receive failed: ${(error as Error).message}`));
                return;
            }
            const decoded = decodeReplyFrames(frames);
            if (!decoded)
                continue;
            const entry = this.pending.get(decoded.header.requestId);
            if (!entry)
                continue;
            const name = OPCODE_NAMES[entry.opcode] ?? `opcode ${entry.opcode}`;
            try {
                this.settle(decoded.header.requestId,
                    checkReply(decoded.header, decoded.frames, entry.opcode, name), null);
            } catch (error) {
                this.settle(decoded.header.requestId, null, error instanceof FaissProxyError
                    ? error : new FaissProxyError(Status.FPX_EPROTO, (error as Error).message, name));
            }
        }
    }
}
