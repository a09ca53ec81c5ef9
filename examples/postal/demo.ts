// `npm start`: the reference postal service with Rempart in front, on loopback, printing the URLs
// to open. Everything runs in this one process; Ctrl-C stops it.
import { loadConfigFile } from '../../src/config/load.ts';
import { createGateway } from '../../src/server/gateway.ts';
import { guardUnhandledRejections } from '../../src/server/process-guard.ts';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { startPostalOrigin, startSmsApprovals } from './origin.ts';

// fileURLToPath: a path with a space is percent-encoded in the URL. The package build copies the
// config beside the compiled demo (dist/examples/postal/).
const configFile = fileURLToPath(new URL('./rempart.yaml', import.meta.url));
/** How to run `rempart` from here: the checkout's bin, or the installed package's command. */
const rempartCommand = existsSync(new URL('../../src/cli.ts', import.meta.url)) ? 'node bin/rempart.js' : 'npx rempart';

async function main(): Promise<void> {
  const config = await loadConfigFile(configFile);
  // The dashboard and the admin API need a token: without REMPART_ADMIN_TOKEN, the demo makes one for
  // this run and shows it below (a demo on loopback; a deployment uses `rempart token create`).
  let demoToken = '';
  if (process.env.REMPART_ADMIN_TOKEN === undefined || process.env.REMPART_ADMIN_TOKEN === '') {
    demoToken = `demo-${randomBytes(18).toString('base64url')}`;
    process.env.REMPART_ADMIN_TOKEN = demoToken;
  }
  const postal = await startPostalOrigin({ port: 3000, workers: 8, serviceTimeMs: 20, queueLength: 64 });
  const sms = await startSmsApprovals({ port: 3001 });
  const gateway = await createGateway(config);
  guardUnhandledRejections(gateway.log);
  await gateway.start();
  const front = `http://${config.listeners[0]!.address}`;
  process.stdout.write(
    [
      '',
      'Rempart demo: the reference postal service behind Rempart.',
      `  site (through Rempart)   ${front}/`,
      `  parcel tracking          ${front}/track/LP123456789FR`,
      `  login (user alice)       curl -i -X POST ${front}/login -d 'user=alice&password=alice-pass'`,
      `  payment approval         curl -i -X POST ${front}/payments/approve -H 'content-type: application/json' -d '{"paymentId":"p-1"}'`,
      `  metrics                  http://${config.admin.address}/metrics`,
      `  dashboard                http://${config.admin.address}/dashboard   token: ${demoToken !== '' ? `${demoToken} (this run only)` : 'REMPART_ADMIN_TOKEN'}`,
      `  rehearse an attack       ${rempartCommand} drill botnet-5x --target ${front} --origin ${postal.url} --metrics http://${config.admin.address}/metrics`,
      `  origin (unprotected)     ${postal.url}/   sms approvals ${sms.url}`,
      `  config                   ${configFile}`,
      `  failover rehearsal       kill -USR2 ${process.pid}   (postal origin down; again to bring it back)`,
      '  Ctrl-C to stop.',
      '',
    ].join('\n') + '\n',
  );
  // Failover rehearsal: `kill -USR2 <pid>` takes the postal origin down (its connections dropped,
  // new ones closed, as if its process died) and the next one brings it back. Payment approvals
  // fall over to the SMS service, tracking is answered stale, the rest gets the status page.
  let postalDown = false;
  process.on('SIGUSR2', () => {
    postalDown = !postalDown;
    postal.setDown(postalDown);
    process.stdout.write(`${JSON.stringify({ time: new Date().toISOString(), demo: postalDown ? 'postal origin down (SIGUSR2)' : 'postal origin back (SIGUSR2)' })}\n`);
  });
  const stop = async () => {
    await gateway.stop(2000);
    await Promise.all([postal.close(), sms.close()]);
    process.exit(0);
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
}

main().catch((err: unknown) => {
  process.stderr.write(`demo: ${(err as Error).message}\n`);
  process.exit(1);
});
