// Review 2 (attack on c81cde6): `/admin/*` now also meets the bare `/admin`, but the load-time
// shadow check (src/config/load.ts checkShadowedRoutes) still thinks a prefix covers only paths
// that start with `/admin/`. A config that was valid and meaningful before, an exact `/admin`
// (say, the login form, class critical) after `/admin/*` (static assets, class public), is still
// accepted, and the exact route silently never matches: `/admin` walks past its class and limits.
// Either start-up refuses the config (as for any unreachable route) or `/admin` meets the exact route.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { validateConfig } from '../src/config/load.ts';
import { compileRuntime } from '../src/pipeline/runtime.ts';

test('review2: an exact /admin after /admin/* is refused or still reached', () => {
  const raw = {
    version: 1,
    listeners: [{ address: '127.0.0.1:0' }],
    upstreams: [{ name: 'origin', url: 'http://127.0.0.1:9' }],
    routes: [
      { name: 'assets', path: '/admin/*', upstream: 'origin', class: 'public' },
      { name: 'login', path: '/admin', upstream: 'origin', class: 'critical' },
      { name: 'default', path: '/*', upstream: 'origin', class: 'public' },
    ],
  };
  let config;
  try {
    config = validateConfig(raw, '(test)');
  } catch {
    return; // refused at start-up: fine
  }
  const { runtime } = compileRuntime(config);
  for (const p of ['/admin', '/ADMIN'])
    assert.equal(runtime.matchRoute('GET', 'x', p)?.name, 'login', `${p} met the exact route`);
});
