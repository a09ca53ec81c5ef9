// The postal demo (examples/postal) on free loopback ports with an admin token: what the cockpit's
// browser test and scripts/screenshot-dashboard.ts look at. One process, nothing fixed.
import { loadConfigFile } from '../src/config/load.ts';
import { createGateway, type Gateway } from '../src/app/gateway.ts';
import { TEST_ENGINE } from './helpers.ts';
import { startPostalOrigin, startSmsApprovals, type RunningOrigin } from '../examples/postal/origin.ts';

export const COCKPIT_TOKEN = 'cockpit-test-token-0123456789';

export interface CockpitDemo {
  gateway: Gateway;
  url: string;
  adminUrl: string;
  postal: RunningOrigin;
  close(): Promise<void>;
}

export async function startCockpitDemo(
  patch: (config: Awaited<ReturnType<typeof loadConfigFile>>) => void = () => {},
): Promise<CockpitDemo> {
  // The environment token: an operator token named `env` (hashed at start, never logged).
  process.env.REMPART_ADMIN_TOKEN = COCKPIT_TOKEN;
  // The loaded config is frozen: patch a copy.
  const config = structuredClone(
    await loadConfigFile(new URL('../examples/postal/rempart.yaml', import.meta.url).pathname),
  );
  const postal = await startPostalOrigin({ port: 0, workers: 8, serviceTimeMs: 10, queueLength: 64 });
  const sms = await startSmsApprovals({ port: 0 });
  config.listeners = [{ ...config.listeners[0]!, address: '127.0.0.1:0' }];
  config.admin = { ...config.admin, address: '127.0.0.1:0' };
  config.upstreams = config.upstreams.map((u) => ({ ...u, url: u.name === 'postal' ? postal.url : sms.url }));
  config.logging = { level: 'warn', requests: false, format: 'json' };
  // RMP_ENGINE, as test/helpers.ts startGateway does.
  if (TEST_ENGINE !== undefined) config.server = { ...config.server, engine: TEST_ENGINE };
  patch(config);
  let gateway: Gateway;
  try {
    gateway = await createGateway(config);
    await gateway.start();
  } catch (err) {
    await Promise.all([postal.close(), sms.close()]);
    throw err;
  }
  const { listeners, admin } = gateway.addresses();
  return {
    gateway,
    url: `http://127.0.0.1:${listeners[0]!.port}`,
    adminUrl: `http://127.0.0.1:${admin!.port}`,
    postal,
    async close() {
      await gateway.stop(1000);
      await Promise.all([postal.close(), sms.close()]);
    },
  };
}
