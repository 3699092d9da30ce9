//  errors.ts — FaissProxyError: a faissproxy status code, its name and a
//  message. Every failure of the client, the server's and its own, is one.

import { STATUS_MESSAGES, STATUS_NAMES, Status, type StatusName } from "./protocol.generated.js";

/** Symbolic name of a status code ("FPX_EINVAL"), "FPX_E?" if unknown. */
export function statusName(status: number): string {
    return STATUS_NAMES[status] ?? "FPX_E?";
}

/** Readable message of a status code, as fpx_strerror(). */
export function statusMessage(status: number): string {
    return STATUS_MESSAGES[status] ?? "unknown error";
}

/**
 * A failed request. `status` is the negative FPX_E… code (the reply
 * header's status, or a client-side FPX_ETIMEDOUT, FPX_ECONNECT,
 * FPX_EPROTO for a malformed reply, FPX_EINVAL for bad arguments); `code`
 * is its name; `message` the server's error text or the code's message.
 */
export class FaissProxyError extends Error {
    readonly status: number;
    readonly code: StatusName | "FPX_E?";
    /** Wire name of the opcode of the request that failed ("search"), if any. */
    readonly opcode: string | undefined;

    constructor(status: number, message?: string, opcode?: string) {
        const code = statusName(status) as StatusName | "FPX_E?";
        const text = message && message.length > 0 ? message : statusMessage(status);
        super(opcode ? `${opcode}: ${text} (${code})` : `${text} (${code})`);
        this.name = "FaissProxyError";
        this.status = status;
        this.code = code;
        this.opcode = opcode;
    }
}

export function invalid(message: string, opcode?: string): FaissProxyError {
    return new FaissProxyError(Status.FPX_EINVAL, message, opcode);
}

export function malformed(message: string, opcode?: string): FaissProxyError {
    return new FaissProxyError(Status.FPX_EPROTO, `malformed reply: ${message}`, opcode);
}
