//  wire.ts — encodes requests and decodes replies of the faissproxy
//  protocol (docs/PROTOCOL.md). Every number of the format comes from
//  protocol.generated.ts. Decoding distrusts its input: every length is
//  checked against the bytes present before anything is allocated, and a
//  malformed reply is a FaissProxyError (FPX_EPROTO), never a crash.
//  This file must not know about sockets.

import { Decoder, encode } from "@msgpack/msgpack";
import { endianness } from "node:os";
import { FaissProxyError, malformed } from "./errors.js";
import {
    FPX_API_KEY_MAX, FPX_MAGIC, FPX_MAX_FRAMES, FPX_PROTOCOL_VERSION, FPX_REPLY_HEADER_SIZE,
    FPX_REQUEST_HEADER_SIZE, Status,
} from "./protocol.generated.js";

//  Arrays travel as raw little-endian bytes and are viewed in place.
if (endianness() !== "LE")
    throw new Error("faissproxy: the client needs a little-endian host");

export interface ReplyHeader {
    version: number;
    opcode: number;
    status: number;
    requestId: bigint;
}

/** The API key as the header carries it: at most FPX_API_KEY_MAX bytes. */
export function encodeApiKey(apiKey: string): Buffer {
    const key = Buffer.from(apiKey, "utf8");
    if (key.length > FPX_API_KEY_MAX)
        throw new FaissProxyError(Status.FPX_EINVAL, `API key longer than ${FPX_API_KEY_MAX} bytes`);
    if (key.includes(0))
        throw new FaissProxyError(Status.FPX_EINVAL, "API key contains a NUL byte");
    return key;
}

export function encodeRequestHeader(opcode: number, requestId: bigint, apiKey: Buffer): Buffer {
    const header = Buffer.alloc(FPX_REQUEST_HEADER_SIZE);      // zeroed: flags, status, key padding
    header.writeUInt32LE(FPX_MAGIC, 0);
    header.writeUInt16LE(FPX_PROTOCOL_VERSION, 4);
    header.writeUInt16LE(opcode, 6);
    header.writeBigUInt64LE(requestId, 16);
    apiKey.copy(header, FPX_REPLY_HEADER_SIZE);
    return header;
}

/** Decodes a reply header, or returns null when the frame is not one. */
export function decodeReplyHeader(frame: Buffer): ReplyHeader | null {
    if (frame.length !== FPX_REPLY_HEADER_SIZE || frame.readUInt32LE(0) !== FPX_MAGIC
    ||  frame.readUInt32LE(8) !== 0)
        return null;
    return {
        version: frame.readUInt16LE(4),
        opcode: frame.readUInt16LE(6),
        status: frame.readInt32LE(12),
        requestId: frame.readBigUInt64LE(16),
    };
}

export type ParamValue = string | number | boolean | null;
export type Params = Record<string, ParamValue | undefined>;

/** The parameters frame: a msgpack map; undefined values are left out. */
export function encodeParams(params: Params): Uint8Array {
    const map: Record<string, ParamValue> = {};
    for (const [key, value] of Object.entries(params))
        if (value !== undefined)
            map[key] = value;
    return Object.keys(map).length === 0 ? new Uint8Array(0) : encode(map);
}

/** A reply's result map. An element takes at least one byte, so no
    declared length beyond the frame's size is ever honoured. */
export function decodeResult(frame: Buffer, opcode: string): Record<string, unknown> {
    if (frame.length === 0)
        return {};
    const limit = frame.length;
    const decoder = new Decoder({
        maxStrLength: limit, maxBinLength: limit, maxArrayLength: limit,
        maxMapLength: limit, maxExtLength: limit,
    });
    let value: unknown;
    try {
        value = decoder.decode(frame);
    } catch (error) {
        throw malformed(`result frame is not msgpack (${(error as Error).message})`, opcode);
    }
    if (value === null || typeof value !== "object" || Array.isArray(value) || value instanceof Uint8Array)
        throw malformed("result frame is not a map", opcode);
    return value as Record<string, unknown>;
}

export interface Reply {
    header: ReplyHeader;
    result: Record<string, unknown>;
    arrays: Buffer[];
}

/** Splits a reply into header, result and array frames. Returns null for a
    message whose header cannot be read (it cannot be matched to a request). */
export function decodeReplyFrames(frames: Buffer[]): { header: ReplyHeader; frames: Buffer[] } | null {
    if (frames.length === 0)
        return null;
    const header = decodeReplyHeader(frames[0]);
    return header ? { header, frames } : null;
}

/** Checks a matched reply and turns an error reply into a FaissProxyError. */
export function checkReply(header: ReplyHeader, frames: Buffer[], opcode: number, name: string): Reply {
    if (header.version !== FPX_PROTOCOL_VERSION)
        throw new FaissProxyError(Status.FPX_EVERSION,
            `server replied with protocol version ${header.version}, client speaks ${FPX_PROTOCOL_VERSION}`, name);
    if (header.opcode !== opcode)
        throw malformed(`reply opcode ${header.opcode} for request opcode ${opcode}`, name);
    if (header.status > 0)
        throw malformed(`positive status ${header.status}`, name);
    if (frames.length < 2 || frames.length > FPX_MAX_FRAMES)
        throw malformed(`${frames.length} frames`, name);
    const result = decodeResult(frames[1], name);
    if (header.status < 0) {
        const text = typeof result.error === "string" ? result.error : undefined;
        throw new FaissProxyError(header.status, text, name);
    }
    return { header, result, arrays: frames.slice(2) };
}

/* ---- result fields ---------------------------------------------------- */

export function resultInt(result: Record<string, unknown>, key: string, opcode: string): number {
    const value = result[key];
    if (typeof value !== "number" || !Number.isSafeInteger(value))
        throw malformed(`"${key}" is not an integer`, opcode);
    return value;
}

export function resultCount(result: Record<string, unknown>, key: string, opcode: string): number {
    const value = resultInt(result, key, opcode);
    if (value < 0)
        throw malformed(`"${key}" is negative`, opcode);
    return value;
}

export function resultNumber(result: Record<string, unknown>, key: string, opcode: string): number {
    const value = result[key];
    if (typeof value !== "number")
        throw malformed(`"${key}" is not a number`, opcode);
    return value;
}

export function resultString(result: Record<string, unknown>, key: string, opcode: string): string {
    const value = result[key];
    if (typeof value !== "string")
        throw malformed(`"${key}" is not a string`, opcode);
    return value;
}

export function resultBool(result: Record<string, unknown>, key: string, opcode: string): boolean {
    const value = result[key];
    if (typeof value !== "boolean")
        throw malformed(`"${key}" is not a bool`, opcode);
    return value;
}

/* ---- array frames ----------------------------------------------------- */

//  A typed view of a frame of exactly `count` elements; copied only when
//  ZeroMQ delivered it at an address not aligned for the element type.
function view<T>(frame: Buffer, count: number, size: number, what: string, opcode: string,
                 make: (buffer: ArrayBufferLike, offset: number, length: number) => T): T {
    if (frame.length !== count * size)
        throw malformed(`${what} frame holds ${frame.length} bytes, expected ${count * size}`, opcode);
    if (frame.byteOffset % size === 0)
        return make(frame.buffer, frame.byteOffset, count);
    const copy = new ArrayBuffer(frame.length);
    new Uint8Array(copy).set(frame);
    return make(copy, 0, count);
}

export function floatFrame(frame: Buffer, count: number, what: string, opcode: string): Float32Array {
    return view(frame, count, 4, what, opcode, (b, o, n) => new Float32Array(b, o, n));
}

export function int64Frame(frame: Buffer, count: number, what: string, opcode: string): BigInt64Array {
    return view(frame, count, 8, what, opcode, (b, o, n) => new BigInt64Array(b, o, n));
}

export function uint64Frame(frame: Buffer, count: number, what: string, opcode: string): BigUint64Array {
    return view(frame, count, 8, what, opcode, (b, o, n) => new BigUint64Array(b, o, n));
}

/** The bytes of a typed array, without a copy. */
export function bytesOf(array: ArrayBufferView): Buffer {
    return Buffer.from(array.buffer, array.byteOffset, array.byteLength);
}
