// Replies stalled on their client keep their upstream connection paused (the admission slot went
// back). Clients that never read could pin a whole pool that way and leave real users waiting for a
// connection until the slow-read cut: at most half of an upstream's pool may be pinned; past it the
// pinned reply whose client took the fewest bytes since it was pinned (a client that never reads
// takes none; the oldest such first) is cut (RMP_ERR_EDGE_SLOW_READ), freeing its connection. A real
// user reading slowly but steadily keeps taking bytes and is not the one cut. Keyed by upstream name
// (configuration), each map bounded by that half; scanned only when it is full.
import type { RequestContext } from '../pipeline/context.ts';
import type { Metrics } from '../core/metrics.ts';

export class PinnedReplies {
  readonly #metrics: Metrics;
  /** Per upstream, per pinned reply: the bytes it had handed to its client when pinned. */
  readonly #byUpstream = new Map<string, Map<RequestContext, number>>();

  constructor(metrics: Metrics) {
    this.#metrics = metrics;
  }

  /** The reply waits on its client: it holds a paused upstream connection from now on. */
  pin(ctx: RequestContext): void {
    const u = ctx.upstream;
    if (u === null || ctx.finished || ctx.pinned) return;
    let map = this.#byUpstream.get(u.name);
    if (map === undefined) this.#byUpstream.set(u.name, (map = new Map()));
    ctx.pinned = true;
    map.set(ctx, ctx.responseBytes);
    const max = Math.max(1, Math.floor(u.config.connections / 2));
    while (map.size > max) {
      const victim = this.#leastReading(map);
      if (victim === null || map.size <= max) break;
      map.delete(victim);
      victim.pinned = false;
      this.#metrics.refusals.inc({ reason: 'RMP_ERR_EDGE_SLOW_READ' });
      victim.req.socket?.destroy();
    }
  }

  /** The reply no longer holds an upstream connection (read whole from the origin, or done). */
  unpin(ctx: RequestContext): void {
    ctx.pinned = false;
    if (ctx.upstream !== null) this.#byUpstream.get(ctx.upstream.name)?.delete(ctx);
  }

  /** Drop the entries that hold nothing any more; of the rest, the reply whose client took the fewest bytes. */
  #leastReading(map: Map<RequestContext, number>): RequestContext | null {
    let victim: RequestContext | null = null;
    let least = Infinity;
    for (const [other, bytesWhenPinned] of map) {
      // Drained since, or done: no longer holding a paused upstream connection.
      if (other.finished || !other.res.writableNeedDrain) {
        map.delete(other);
        other.pinned = false;
        continue;
      }
      const taken = other.responseBytes - bytesWhenPinned;
      if (taken < least) {
        least = taken;
        victim = other;
      }
    }
    return victim;
  }
}
