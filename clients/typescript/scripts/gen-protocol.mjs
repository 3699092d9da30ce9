#!/usr/bin/env node
//  gen-protocol.mjs — writes src/protocol.generated.ts from the one
//  definition of the wire format: protocol/fpx_protocol.h (FPX_OPCODES,
//  magic, version, header sizes), protocol/fpx_constants.h (limits,
//  metrics) and protocol/fpx_errors.h (FPX_ERRORS). Nothing in the TypeScript client retypes these numbers.
//
//  Usage: node scripts/gen-protocol.mjs            write the file
//         node scripts/gen-protocol.mjs --check    exit 1 if it is stale
//         node scripts/gen-protocol.mjs --stdout [PROTOCOL_DIR]
//                                          print what it would write (from
//                                          PROTOCOL_DIR's headers if given)
//
//  It reads object-like #defines whose value is an integer expression
//  (numbers, earlier FPX_ names, + - * / << and parentheses) and the two
//  X-macro lists, whatever their length. It must not guess: a list that
//  does not parse, or a required constant that is missing, is an error.

import { readFileSync, writeFileSync } from "node:fs";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const packageDir = join(here, "..");
const root = join(packageDir, "..", "..");
const protocolDir = process.argv[2] === "--stdout" && process.argv[3]
    ? process.argv[3] : join(root, "protocol");
const protocolH = join(protocolDir, "fpx_protocol.h");
const errorsH = join(protocolDir, "fpx_errors.h");
const constantsH = join(protocolDir, "fpx_constants.h");
const outPath = join(packageDir, "src", "protocol.generated.ts");

const REQUIRED = [
    "FPX_MAGIC", "FPX_PROTOCOL_VERSION", "FPX_REPLY_HEADER_SIZE", "FPX_API_KEY_MAX",
    "FPX_REQUEST_HEADER_SIZE", "FPX_PARAMS_MAX", "FPX_MAX_FRAMES", "FPX_NAME_MAX",
    "FPX_DIM_MAX", "FPX_K_MAX", "FPX_ERROR_TEXT_MAX", "FPX_METRIC_INNER_PRODUCT",
    "FPX_METRIC_L2",
];

function fail(message) {
    console.error(`gen-protocol: ${message}`);
    process.exit(2);
}

//  Source without comments, continuation lines joined.
function preprocess(text) {
    return text
        .replace(/\/\*[\s\S]*?\*\//g, " ")
        .replace(/\/\/[^\n]*/g, "")
        .replace(/\\\r?\n/g, " ");
}

//  Evaluates an integer constant expression; returns undefined when the
//  text is not one (a function-like macro, a float, a string).
function evaluate(text, known) {
    const tokens = text.match(/0[xX][0-9a-fA-F]+[uUlL]*|\d+[uUlL]*|[A-Za-z_]\w*|<<|[-+*/()]|\S/g) || [];
    let pos = 0;
    const peek = () => tokens[pos];
    function primary() {
        const token = tokens[pos++];
        if (token === undefined)
            throw new Error("end of expression");
        if (token === "(") {
            const value = shift();
            if (tokens[pos++] !== ")")
                throw new Error("missing )");
            return value;
        }
        if (token === "-")
            return -primary();
        if (/^(0[xX][0-9a-fA-F]+|\d+)[uUlL]*$/.test(token))
            return BigInt(token.replace(/[uUlL]+$/, ""));
        if (/^[A-Za-z_]\w*$/.test(token) && known.has(token))
            return known.get(token);
        throw new Error(`unexpected ${token}`);
    }
    function multiplicative() {
        let value = primary();
        while (peek() === "*" || peek() === "/") {
            const op = tokens[pos++];
            const right = primary();
            if (op === "/" && right === 0n)
                throw new Error("division by zero");
            value = op === "*" ? value * right : value / right;
        }
        return value;
    }
    function additive() {
        let value = multiplicative();
        while (peek() === "+" || peek() === "-") {
            const op = tokens[pos++];
            const right = multiplicative();
            value = op === "+" ? value + right : value - right;
        }
        return value;
    }
    function shift() {
        let value = additive();
        while (peek() === "<<") {
            pos++;
            value <<= additive();
        }
        return value;
    }
    try {
        if (tokens.length === 0)
            return undefined;
        const value = shift();
        return pos === tokens.length ? value : undefined;
    } catch {
        return undefined;
    }
}

function defines(source, known) {
    const out = [];
    for (const match of source.matchAll(/^[ \t]*#[ \t]*define[ \t]+(FPX_\w+)(?![\w(])[ \t]*(.*)$/gm)) {
        const [, name, body] = match;
        const value = evaluate(body.trim(), known);
        if (value === undefined)
            continue;
        if (value > BigInt(Number.MAX_SAFE_INTEGER) || value < -BigInt(Number.MAX_SAFE_INTEGER))
            fail(`${name} does not fit a JavaScript number`);
        known.set(name, value);
        out.push(name);
    }
    return out;
}

//  The entries of #define LIST(X) X (NAME, code, "text") … (FPX_ERRORS)
//  or X (NAME, code, wire_name, role, lock, flags, "summary") …
//  (FPX_OPCODES; text is the wire name).
const ENTRY = {
    FPX_ERRORS: /X\s*\(\s*([A-Z][A-Z0-9_]*)\s*,\s*(-?\d+)\s*,\s*"((?:[^"\\]|\\.)*)"\s*\)/y,
    FPX_OPCODES: new RegExp(String.raw`X\s*\(\s*([A-Z][A-Z0-9_]*)\s*,\s*(\d+)\s*,\s*([a-z][a-z0-9_]*)\s*,` +
        String.raw`\s*(READ|WRITE|ADMIN)\s*,\s*(NONE|READ|WRITE|SERVER)\s*,\s*(0|FPX_OPF_[A-Z]+(?:\s*\|\s*FPX_OPF_[A-Z]+)*)\s*,` +
        String.raw`\s*"((?:[^"\\]|\\.)*)"\s*\)`, "y"),
};

function xmacro(source, list) {
    const match = source.match(new RegExp(`#[ \\t]*define[ \\t]+${list}\\(X\\)([^\\n]*)`));
    if (!match)
        fail(`${list}(X) not found`);
    const body = match[1].trim();
    const entry = ENTRY[list];
    const entries = [];
    let pos = 0;
    while (pos < body.length) {
        while (pos < body.length && /\s/.test(body[pos]))
            pos++;
        if (pos >= body.length)
            break;
        entry.lastIndex = pos;
        const m = entry.exec(body);
        if (!m)
            fail(`${list}: cannot parse entry at "${body.slice(pos, pos + 40)}"`);
        entries.push(list === "FPX_OPCODES"
            ? { name: m[1], code: Number(m[2]), text: m[3], role: m[4].toLowerCase(),
                lock: m[5].toLowerCase(), summary: JSON.parse(`"${m[7]}"`) }
            : { name: m[1], code: Number(m[2]), text: JSON.parse(`"${m[3]}"`) });
        pos = entry.lastIndex;
    }
    if (entries.length === 0)
        fail(`${list} is empty`);
    for (const key of ["name", "code", "text"]) {
        const seen = new Set(entries.map((e) => e[key]));
        if (seen.size !== entries.length)
            fail(`${list}: duplicate ${key}`);
    }
    return entries;
}

function generate() {
    const errorsSource = preprocess(readFileSync(errorsH, "utf8"));
    const constantsSource = preprocess(readFileSync(constantsH, "utf8"));
    const protocolSource = preprocess(readFileSync(protocolH, "utf8"));
    const known = new Map();
    const names = [...defines(errorsSource, known), ...defines(constantsSource, known),
                   ...defines(protocolSource, known)];
    for (const name of REQUIRED)
        if (!known.has(name))
            fail(`${name} not found in protocol/`);
    const opcodes = xmacro(protocolSource, "FPX_OPCODES");
    const errors = xmacro(errorsSource, "FPX_ERRORS");
    if (errors.some((e) => e.code >= 0))
        fail("FPX_ERRORS: codes must be negative");
    const rel = (p) => relative(protocolDir, p).replace(/^/, "protocol/");
    const lines = [
        `//  Generated by clients/typescript/scripts/gen-protocol.mjs from`,
        `//  ${rel(protocolH)}, ${rel(constantsH)} and ${rel(errorsH)}. Do not edit:`,
        `//  run \`npm run generate\` (the build does) after changing those files.`,
        ``,
    ];
    for (const name of names) {
        const value = known.get(name);
        const text = name === "FPX_MAGIC" ? `0x${value.toString(16)}` : value.toString();
        lines.push(`export const ${name} = ${text};`);
    }
    lines.push(``, `/** Opcodes: FPX_OPCODES of protocol/fpx_protocol.h. */`, `export const Opcode = {`);
    for (const op of opcodes)
        lines.push(`    ${op.name}: ${op.code},`);
    lines.push(`} as const;`, `export type OpcodeName = keyof typeof Opcode;`,
        `export type OpcodeCode = (typeof Opcode)[OpcodeName];`, ``,
        `/** Wire name of each opcode ("search"). */`,
        `export const OPCODE_NAMES: Readonly<Record<number, string>> = {`);
    for (const op of opcodes)
        lines.push(`    ${op.code}: ${JSON.stringify(op.text)},`);
    lines.push(`};`, ``, `/** Status codes: FPX_ERRORS of protocol/fpx_errors.h (0 is success). */`,
        `export const Status = {`, `    FPX_OK: 0,`);
    for (const e of errors)
        lines.push(`    FPX_${e.name}: ${e.code},`);
    lines.push(`} as const;`, `export type StatusName = keyof typeof Status;`, ``,
        `/** Symbolic name of each status code. */`,
        `export const STATUS_NAMES: Readonly<Record<number, StatusName>> = {`, `    0: "FPX_OK",`);
    for (const e of errors)
        lines.push(`    "${e.code}": "FPX_${e.name}",`);
    lines.push(`};`, ``, `/** Readable message of each status code, as fpx_strerror(). */`,
        `export const STATUS_MESSAGES: Readonly<Record<number, string>> = {`, `    0: "success",`);
    for (const e of errors)
        lines.push(`    "${e.code}": ${JSON.stringify(e.text)},`);
    lines.push(`};`, ``);
    return lines.join("\n");
}

const text = generate();
const mode = process.argv[2];
if (mode === "--stdout") {
    process.stdout.write(text);
} else if (mode === "--check") {
    let current = "";
    try {
        current = readFileSync(outPath, "utf8");
    } catch {
        // missing counts as stale
    }
    if (current !== text) {
        console.error(`gen-protocol: ${relative(root, outPath)} is stale; run npm run generate`);
        process.exit(1);
    }
} else if (mode === undefined) {
    let current = null;
    try {
        current = readFileSync(outPath, "utf8");
    } catch {
        // written below
    }
    if (current !== text)
        writeFileSync(outPath, text);
} else {
    fail(`unknown option ${mode}`);
}
