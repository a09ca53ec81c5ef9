import { test } from 'node:test';
import assert from 'node:assert/strict';

test('the package entry point exports the gateway, the config loader, the error table and the drill', async () => {
  const api = await import('rempart');
  for (const name of ['createGateway', 'loadConfigFile', 'parseConfig', 'validateConfig', 'ConfigError', 'ERRORS', 'RempartError', 'runDrill']) assert.ok(name in api, name);
});
