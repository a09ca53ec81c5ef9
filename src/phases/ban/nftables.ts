// Optional mirror of enforced bans into nftables sets with timeouts, so the kernel drops a banned
// address's packets before they reach Rempart at all. Never on the request path: changes are queued
// and applied by a batched, asynchronous `nft -f -` a moment later. Without the `nft` binary or the
// rights (CAP_NET_ADMIN), it logs once and stops trying; the ban table works the same without it.
//
//   table inet rempart {
//     set banned_v4 { type ipv4_addr; flags interval, timeout; }   ← elements `203.0.113.7 timeout 60s`
//     set banned_v6 { type ipv6_addr; flags interval, timeout; }
//     chain input { type filter hook input priority -10; ip saddr @banned_v4 tcp dport { 80, 443 } drop; … }
//   }
import { spawn } from 'node:child_process';
import type { Logger } from '../../core/log.ts';
import type { BanTarget } from './target.ts';

export interface NftSettings {
  readonly family: 'inet' | 'ip' | 'ip6';
  readonly table: string;
  readonly set: string;
  readonly dropRule: boolean;
}

/** Runs one nft script; resolves with the exit code and stderr (code -1 and the error when nft cannot be spawned). */
export type NftRunner = (script: string) => Promise<{ code: number; stderr: string }>;

/** Queued changes at most; past it new ones are dropped (the ban table still enforces them). */
const MAX_QUEUED = 10000;
const FLUSH_DELAY_MS = 100;

function families(s: NftSettings): (4 | 6)[] {
  return s.family === 'ip' ? [4] : s.family === 'ip6' ? [6] : [4, 6];
}

function setName(s: NftSettings, family: 4 | 6): string {
  return `${s.set}_v${family}`;
}

/** The script that creates the table, its sets and (optionally) the drop chain. Safe to run again. */
export function setupScript(s: NftSettings, ports: readonly number[]): string {
  const lines = [`add table ${s.family} ${s.table}`];
  for (const f of families(s))
    lines.push(`add set ${s.family} ${s.table} ${setName(s, f)} { type ipv${f}_addr; flags interval, timeout; }`);
  if (s.dropRule) {
    lines.push(`add chain ${s.family} ${s.table} input { type filter hook input priority -10; policy accept; }`);
    lines.push(`flush chain ${s.family} ${s.table} input`);
    const dport = ports.length === 0 ? '' : ` tcp dport { ${[...new Set(ports)].join(', ')} }`;
    for (const f of families(s))
      lines.push(
        `add rule ${s.family} ${s.table} input ${f === 4 ? 'ip' : 'ip6'} saddr @${setName(s, f)}${dport} drop`,
      );
  }
  return `${lines.join('\n')}\n`;
}

function element(t: BanTarget): string {
  return t.kind === 'address' ? t.network : `${t.network}/${t.bits}`;
}

/** One `add element` line with its timeout (whole seconds, at least 1). */
export function addLine(s: NftSettings, t: BanTarget, ttlMs: number): string | null {
  if (!families(s).includes(t.family)) return null;
  return `add element ${s.family} ${s.table} ${setName(s, t.family)} { ${element(t)} timeout ${Math.max(1, Math.ceil(ttlMs / 1000))}s }`;
}

export function deleteLine(s: NftSettings, t: BanTarget): string | null {
  if (!families(s).includes(t.family)) return null;
  return `delete element ${s.family} ${s.table} ${setName(s, t.family)} { ${element(t)} }`;
}

export const spawnNft: NftRunner = (script) =>
  new Promise((resolve) => {
    let stderr = '';
    let child;
    try {
      child = spawn('nft', ['-f', '-'], { stdio: ['pipe', 'ignore', 'pipe'] });
    } catch (err) {
      resolve({ code: -1, stderr: String(err) });
      return;
    }
    child.stderr!.on('data', (c: Buffer) => {
      if (stderr.length < 4000) stderr += c.toString();
    });
    child.on('error', (err) => resolve({ code: -1, stderr: err.message }));
    child.on('close', (code) => resolve({ code: code ?? -1, stderr }));
    child.stdin!.on('error', () => {});
    child.stdin!.end(script);
  });

export class NftMirror {
  readonly settings: NftSettings;
  readonly #ports: readonly number[];
  readonly #log: Logger | null;
  readonly #run: NftRunner;
  #adds: string[] = [];
  #deletes: string[] = [];
  #timer: NodeJS.Timeout | null = null;
  #busy = false;
  #setUp = false;
  /** Set once nft proved missing or not allowed: nothing more is tried. */
  broken = false;
  #droppedLogged = false;
  /** Resolves when the queue is empty (tests). */
  #idle: (() => void)[] = [];

  constructor(settings: NftSettings, ports: readonly number[], log: Logger | null, run: NftRunner = spawnNft) {
    this.settings = settings;
    this.#ports = ports;
    this.#log = log;
    this.#run = run;
  }

  add(t: BanTarget, ttlMs: number, replace: boolean): void {
    if (replace) this.#queue(this.#deletes, deleteLine(this.settings, t));
    this.#queue(this.#adds, addLine(this.settings, t, ttlMs));
  }

  remove(t: BanTarget): void {
    this.#queue(this.#deletes, deleteLine(this.settings, t));
  }

  /** Resolves once everything queued so far was applied (or given up on). */
  settled(): Promise<void> {
    if (!this.#busy && this.#timer === null) return Promise.resolve();
    return new Promise((r) => this.#idle.push(r));
  }

  #queue(list: string[], line: string | null): void {
    if (line === null || this.broken) return;
    if (this.#adds.length + this.#deletes.length >= MAX_QUEUED) {
      if (!this.#droppedLogged)
        this.#log?.warn(
          { queued: MAX_QUEUED },
          'nftables mirror: queue full, changes dropped (the ban table still enforces them)',
        );
      this.#droppedLogged = true;
      return;
    }
    list.push(line);
    if (this.#timer === null && !this.#busy) {
      this.#timer = setTimeout(() => void this.#flush(), FLUSH_DELAY_MS);
      this.#timer.unref();
    }
  }

  async #flush(): Promise<void> {
    this.#timer = null;
    this.#busy = true;
    try {
      while (!this.broken && (this.#adds.length > 0 || this.#deletes.length > 0)) {
        if (!this.#setUp) {
          if (!(await this.#apply(setupScript(this.settings, this.#ports), true))) break;
          this.#setUp = true;
        }
        const deletes = this.#deletes;
        const adds = this.#adds;
        this.#deletes = [];
        this.#adds = [];
        // A delete of an element already gone (expired in the kernel) fails, and nft fails a whole
        // batch with it: deletes go one per run, errors ignored; adds go in one batch.
        for (const d of deletes) await this.#run(`${d}\n`);
        if (adds.length > 0) await this.#apply(`${adds.join('\n')}\n`, false);
      }
    } finally {
      this.#busy = false;
      this.#droppedLogged = false;
      for (const r of this.#idle.splice(0)) r();
    }
  }

  /** Run a script; on a missing binary or missing rights, log once and give up for good. */
  async #apply(script: string, setup: boolean): Promise<boolean> {
    const { code, stderr } = await this.#run(script);
    if (code === 0) return true;
    const fatal = code === -1 || /Operation not permitted|Permission denied|ENOENT|not found/i.test(stderr);
    if (fatal) {
      this.broken = true;
      this.#adds = [];
      this.#deletes = [];
      this.#log?.warn(
        { err: stderr.trim().slice(0, 300) },
        'nftables mirror disabled: nft is missing or lacks the rights (CAP_NET_ADMIN); bans are still enforced on accept',
      );
    } else this.#log?.warn({ err: stderr.trim().slice(0, 300), setup }, 'nftables mirror: nft refused a batch');
    return false;
  }
}
