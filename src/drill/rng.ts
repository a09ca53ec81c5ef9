/**
 * mulberry32 over a 32-bit state: small, fast, and the same numbers everywhere, so a drawn run (the drill
 * matrix's scenarios, a randomized test) replays from its seed. `index` draws an independent stream.
 */
export function rng(seed: number, index = 0): () => number {
  let a = (Math.imul(seed >>> 0, 0x9e3779b1) ^ Math.imul(index + 1, 0x85ebca6b)) >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
