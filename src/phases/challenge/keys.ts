// The challenge's signing keys: a ring where the first key signs and every key verifies, so an
// operator rotates by putting a new key on top of the file and reloading (nobody is logged out),
// then removing the old one after clearanceTtlSec. Each key has a short id (kid) derived from it,
// carried in tokens so verification picks its key in one look-up. Keys are never logged.
import { createHash, randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { parseKey } from '../../core/signing-keys.ts';

export interface KeyRing {
  /** The kid of the key that signs. */
  readonly signingKid: string;
  /** Every key by kid (the signing one included). */
  readonly keys: ReadonlyMap<string, Buffer>;
  /** Where the keys came from: `env`, `file` or `random` (then the caller warns). */
  readonly source: 'env' | 'file' | 'random';
}

/** 8 base64url characters (48 bits) of a hash of the key: names the key without revealing it. */
export function keyId(key: Buffer): string {
  return createHash('sha256')
    .update('rempart-challenge-kid\0')
    .update(key)
    .digest()
    .subarray(0, 6)
    .toString('base64url');
}

export function keyRing(keys: readonly Buffer[], source: KeyRing['source']): KeyRing {
  if (keys.length === 0) throw new Error('challenge key ring is empty');
  const map = new Map<string, Buffer>();
  for (const k of keys) map.set(keyId(k), k);
  return { signingKid: keyId(keys[0]!), keys: map, source };
}

/** Keys from text: one per line or comma-separated, `#` comments; throws on a key shorter than 32 bytes. */
export function parseKeys(text: string, where: string): Buffer[] {
  const out: Buffer[] = [];
  let n = 0;
  for (const line of text.split('\n')) {
    n++;
    const t = line.replace(/#.*/, '').trim();
    if (t === '') continue;
    for (const part of t.split(',')) {
      if (part.trim() === '') continue;
      const key = parseKey(part);
      if (key === null) throw new Error(`${where}:${n}: a challenge key must hold at least 32 bytes, hex or base64`);
      out.push(key);
    }
  }
  return out;
}

/**
 * REMPART_CHALLENGE_KEY, else `keyFile`, else one random key for this process. Throws when a key is
 * given but unusable: a misconfigured key must stop start-up (and a reload keeps the old ring).
 */
export async function loadChallengeKeys(env: NodeJS.ProcessEnv, keyFile: string | undefined): Promise<KeyRing> {
  const fromEnv = env.REMPART_CHALLENGE_KEY;
  if (fromEnv !== undefined && fromEnv !== '') {
    const keys = parseKeys(fromEnv, 'REMPART_CHALLENGE_KEY');
    if (keys.length === 0) throw new Error('REMPART_CHALLENGE_KEY holds no key');
    return keyRing(keys, 'env');
  }
  if (keyFile !== undefined) {
    const keys = parseKeys(await readFile(keyFile, 'utf8'), keyFile);
    if (keys.length === 0) throw new Error(`defense.challenge.keyFile ${keyFile} holds no key`);
    return keyRing(keys, 'file');
  }
  return keyRing([randomBytes(32)], 'random');
}
