// Rempart's public API for embedding: build a gateway from a validated config, load or validate a
// config, run a drill. The `rempart` command (src/cli.ts) is built on these.
export { createGateway, type Gateway, type GatewayOptions } from './app/gateway.ts';
export { loadConfigFile, parseConfig, validateConfig, ConfigError, type ConfigProblem } from './config/load.ts';
export type { Config } from './config/schema.ts';
export { ERRORS, RempartError, type ErrorCode } from './core/errors.ts';
export { runDrill } from './drill/engine.ts';
