import { test } from 'node:test';
import assert from 'node:assert/strict';

test('the package entry point exports the gateway, the config loader, the error table and the drill', async () => {
  // The entry point's source; test/package.test.ts imports the same names from the installed package.
  const api = await import('../src/index.ts');
  for (const name of [
    'createGateway',
    'loadConfigFile',
    'parseConfig',
    'validateConfig',
    'ConfigError',
    'ERRORS',
    'RempartError',
    'runDrill',
  ])
    assert.ok(name in api, name);
});
