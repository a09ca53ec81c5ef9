// Rempart's version, from package.json: src/core/ in the repository, dist/src/core/ in the package,
// so it is two or three directories up. Read once at load (start-up, not the request path).
import { readFileSync } from 'node:fs';

function readVersion(): string {
  for (const up of ['../../package.json', '../../../package.json']) {
    try {
      const pkg = JSON.parse(readFileSync(new URL(up, import.meta.url), 'utf8')) as { name?: string; version?: string };
      if (pkg.name === 'rempart' && typeof pkg.version === 'string') return pkg.version;
    } catch {
      // not this one
    }
  }
  return 'unknown';
}

export const VERSION = readVersion();
