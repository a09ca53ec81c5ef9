// Compact log-linear latency histogram (HDR-like): fixed memory, ~3% relative error.
// Values are recorded in microseconds; percentiles are returned in milliseconds.

/** Sub-buckets per power of two: 32 keeps the bucket width under 1/32 of the value. */
const SUB_BITS = 5;
const SUB_COUNT = 1 << SUB_BITS;
/** Powers of two covered above the linear range: 2^(27+5) µs ≈ 71 min, far beyond any deadline. */
const MAX_EXP = 27;
export const HISTOGRAM_BUCKETS = SUB_COUNT * (MAX_EXP + 1);

function bucketOf(us: number): number {
  if (us < SUB_COUNT) return us < 0 ? 0 : us | 0;
  const v = us >= 2 ** 31 ? 2 ** 31 - 1 : us | 0;
  const exp = 31 - Math.clz32(v) - SUB_BITS; // >= 0 here
  if (exp > MAX_EXP - 1) return HISTOGRAM_BUCKETS - 1;
  const sub = (v >>> exp) - SUB_COUNT; // 0..SUB_COUNT-1
  return SUB_COUNT * (exp + 1) + sub;
}

/** Upper bound of a bucket, in microseconds (a conservative percentile). */
function upperOf(bucket: number): number {
  if (bucket < SUB_COUNT) return bucket + 1;
  const exp = Math.floor(bucket / SUB_COUNT) - 1;
  const sub = bucket % SUB_COUNT;
  return (SUB_COUNT + sub + 1) * 2 ** exp;
}

export class Histogram {
  counts: Uint32Array = new Uint32Array(HISTOGRAM_BUCKETS);
  total = 0;
  maxUs = 0;

  recordMs(ms: number): void {
    const us = ms * 1000;
    this.counts[bucketOf(us)]!++;
    this.total++;
    if (us > this.maxUs) this.maxUs = us;
  }

  merge(other: Histogram): void {
    const a = this.counts;
    const b = other.counts;
    for (let i = 0; i < a.length; i++) a[i]! += b[i]!;
    this.total += other.total;
    if (other.maxUs > this.maxUs) this.maxUs = other.maxUs;
  }

  /** Percentile in ms (q in 0..100); null when empty. */
  percentileMs(q: number): number | null {
    if (this.total === 0) return null;
    const rank = Math.max(1, Math.ceil((q / 100) * this.total));
    let seen = 0;
    const c = this.counts;
    for (let i = 0; i < c.length; i++) {
      seen += c[i]!;
      if (seen >= rank) return Math.round(Math.min(upperOf(i), this.maxUs)) / 1000;
    }
    return this.maxUs / 1000;
  }

  reset(): void {
    this.counts.fill(0);
    this.total = 0;
    this.maxUs = 0;
  }
}
