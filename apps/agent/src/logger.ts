// The JSON-lines logger every app shares.
export { createLogger, errorFields, type LogFields, type Logger } from '@mcp-auth-stack/config';
