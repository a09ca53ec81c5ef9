// PROXY protocol v1 (text) and v2 (binary) header parsing, as specified by HAProxy's
// proxy-protocol.txt. Only the source address is kept: it becomes the client address.

const V2_SIGNATURE = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]);
const V1_MAX_BYTES = 107;

export type ProxyHeaderResult =
  /** Need more bytes. */
  | { kind: 'partial' }
  | { kind: 'invalid'; why: string }
  /** `address` is null for LOCAL / UNKNOWN (health checks from the balancer itself): keep the peer's. */
  | { kind: 'ok'; address: string | null; headerBytes: number };

const PARTIAL = { kind: 'partial' } as const;

export function parseProxyHeader(buf: Buffer): ProxyHeaderResult {
  if (buf.length === 0) return PARTIAL;
  if (buf[0] === 0x0d) return parseV2(buf);
  if (buf[0] === 0x50) return parseV1(buf);
  return { kind: 'invalid', why: 'no PROXY protocol signature' };
}

function parseV1(buf: Buffer): ProxyHeaderResult {
  const prefix = 'PROXY ';
  for (let i = 0; i < Math.min(prefix.length, buf.length); i++)
    if (buf[i] !== prefix.charCodeAt(i)) return { kind: 'invalid', why: 'bad v1 signature' };
  const end = buf.indexOf('\r\n');
  if (end === -1) return buf.length >= V1_MAX_BYTES ? { kind: 'invalid', why: 'v1 header too long' } : PARTIAL;
  if (end + 2 > V1_MAX_BYTES) return { kind: 'invalid', why: 'v1 header too long' };
  const parts = buf.toString('latin1', 6, end).split(' ');
  if (parts[0] === 'UNKNOWN') return { kind: 'ok', address: null, headerBytes: end + 2 };
  if (parts.length !== 5 || (parts[0] !== 'TCP4' && parts[0] !== 'TCP6'))
    return { kind: 'invalid', why: 'malformed v1 header' };
  const [proto, src, dst, sport, dport] = parts as [string, string, string, string, string];
  const family = proto === 'TCP4' ? 4 : 6;
  if (!isAddress(src, family) || !isAddress(dst, family) || !isPort(sport) || !isPort(dport))
    return { kind: 'invalid', why: 'malformed v1 addresses' };
  return { kind: 'ok', address: src, headerBytes: end + 2 };
}

function parseV2(buf: Buffer): ProxyHeaderResult {
  const n = Math.min(buf.length, 12);
  for (let i = 0; i < n; i++) if (buf[i] !== V2_SIGNATURE[i]) return { kind: 'invalid', why: 'bad v2 signature' };
  if (buf.length < 16) return PARTIAL;
  const verCmd = buf[12]!;
  if (verCmd >> 4 !== 2) return { kind: 'invalid', why: 'unsupported v2 version' };
  const len = buf.readUInt16BE(14);
  if (len > 2048) return { kind: 'invalid', why: 'v2 header too long' };
  const total = 16 + len;
  if (buf.length < total) return PARTIAL;
  const cmd = verCmd & 0x0f;
  if (cmd === 0x0) return { kind: 'ok', address: null, headerBytes: total }; // LOCAL
  if (cmd !== 0x1) return { kind: 'invalid', why: 'unsupported v2 command' };
  const family = buf[13]! >> 4;
  if (family === 0x1) {
    if (len < 12) return { kind: 'invalid', why: 'short v2 IPv4 block' };
    return { kind: 'ok', address: `${buf[16]}.${buf[17]}.${buf[18]}.${buf[19]}`, headerBytes: total };
  }
  if (family === 0x2) {
    if (len < 36) return { kind: 'invalid', why: 'short v2 IPv6 block' };
    const groups: string[] = [];
    for (let i = 0; i < 8; i++) groups.push(buf.readUInt16BE(16 + i * 2).toString(16));
    return { kind: 'ok', address: compressIPv6(groups), headerBytes: total };
  }
  return { kind: 'ok', address: null, headerBytes: total }; // AF_UNSPEC / unix: keep the peer's
}

function isPort(s: string): boolean {
  return /^[0-9]{1,5}$/.test(s) && Number(s) <= 65535;
}

function isAddress(s: string, family: 4 | 6): boolean {
  if (family === 4)
    return /^(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])(\.(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])){3}$/.test(
      s,
    );
  return /^[0-9a-fA-F:.]{2,45}$/.test(s) && s.includes(':');
}

function compressIPv6(groups: string[]): string {
  // Longest run of zero groups becomes '::' (RFC 5952).
  let bestStart = -1;
  let bestLen = 0;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== '0') {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === '0') j++;
    if (j - i > bestLen && j - i > 1) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  if (bestStart === -1) return groups.join(':');
  return `${groups.slice(0, bestStart).join(':')}::${groups.slice(bestStart + bestLen).join(':')}`;
}
