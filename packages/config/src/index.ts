export {
  boolean,
  ConfigError,
  defaultServerBaseUrl,
  directory,
  type Env,
  hostList,
  httpUrl,
  integer,
  list,
  listenConfigError,
  oneOf,
  optional,
  originList,
  parseUrl,
  required,
  text,
} from './env.ts';
export { createLogger, errorFields, LOG_LEVELS, type LogFields, type Logger, type LogLevel } from './logger.ts';
