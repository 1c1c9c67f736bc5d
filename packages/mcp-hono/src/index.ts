export {
  discardBody,
  parseBodyOnce,
  readBodyKeepingIt,
  readBodyOnce,
  readBodyWithin,
  readResponseWithin,
  rememberBody,
  requestWithBody,
} from './body.ts';
export { callToolDirectly, type DirectCallExchange, type DirectReply } from './direct-tool-call.ts';
export { lossyNumbers, lossyRequestNumbers } from './exact-json.ts';
export { DEFAULT_MAX_JSON_DEPTH, jsonTextTooDeep, jsonValueTooDeep } from './json-depth.ts';
export { MultiplexTransport } from './multiplex-transport.ts';
export { type OriginGuardOptions, originGuard } from './origin-guard.ts';
export { INVALID_PARAMS, INVALID_REQUEST, PARSE_ERROR, rpcError } from './rpc-error.ts';
export { createStatelessMcpEndpoint, type StatelessMcpOptions } from './stateless.ts';
