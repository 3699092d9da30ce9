//  index.ts — the public surface of the faissproxy TypeScript client.

export {
    FaissProxyClient, DEFAULT_ENDPOINT, DEFAULT_TIMEOUT_MS,
    type ClientOptions, type IndexDescription, type PingResult, type RangeSearchResult,
    type SearchOptions, type SearchResult,
} from "./client.js";
export { FaissProxyError, statusMessage, statusName } from "./errors.js";
export type { Params, ParamValue, Reply, ReplyHeader } from "./wire.js";
export * from "./protocol.generated.js";
