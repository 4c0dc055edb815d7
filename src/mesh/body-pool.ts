/**
 * Reused memory for the bodies of large messages the inbox reassembles.
 *
 * Why: every buffer Node allocates lives outside V8's heap, and V8 starts a full mark-compact
 * whenever that external memory has grown 64 MB past what it was after the previous one. A node
 * receiving 64 MiB messages back to back therefore ran a full GC for nearly every message (every
 * ~100 ms at 300 MB/s), and each one stalled its event loop, control messages included, for up
 * to ~20 ms (docs/guides/tuning.md, "Large payloads"). Reusing the body of a message whose
 * receiver is done with it allocates nothing, so nothing triggers those collections.
 *
 * Who says "done": only the layer the message is for knows when nothing references its payload
 * any more. A message whose body came from here carries `release` (`InboundMessage.release`,
 * `MessageContext.release`); calling it hands the body back. A body never released is simply
 * collected by the GC, as before, so forgetting to release costs an allocation, never
 * correctness; releasing too early would let a later message overwrite a payload still in use,
 * so `release` works once and only the holder of the payload may call it (pubsub does, for
 * subscriptions that borrow their payloads).
 */
const MiB = 1024 * 1024;

/** Smallest body taken from the pool: below it, allocation is cheap and V8's trigger is far. */
export const BODY_POOL_MIN_BYTES = 1 * MiB;
/** A pooled buffer lent for a body at most this many times smaller than it (no 64 MiB for 1 MiB). */
const MAX_WASTE_FACTOR = 2;
/** Pooled buffers unused this long are dropped (the memory goes back when the GC next runs). */
export const BODY_POOL_IDLE_MS = 10_000;

/** A body lent by the pool: the bytes, and how to hand them back. */
export interface PooledBody {
  /** Exactly the bytes asked for (a view of a buffer that may be larger). */
  readonly body: Buffer;
  /** Hands the memory back for a later message. Works once; later calls do nothing. */
  readonly release: () => void;
}

interface Idle {
  buffer: Buffer;
  since: number;
}

/** Options of a `BodyPool`. */
export interface BodyPoolOptions {
  /** Most bytes kept for reuse at once (buffers released beyond it are left to the GC). */
  maxPooledBytes: number;
  /** Clock (ms); tests drive it. Default `performance.now`. */
  now?: () => number;
}

export class BodyPool {
  private readonly idle: Idle[] = [];
  private pooled = 0;
  private trimTimer: NodeJS.Timeout | undefined;
  private readonly maxPooledBytes: number;
  private readonly now: () => number;
  /** Bodies lent from reused memory, and bodies allocated because none fitted (for tests and metrics). */
  readonly stats = { reused: 0, allocated: 0 };

  constructor(options: BodyPoolOptions) {
    this.maxPooledBytes = options.maxPooledBytes;
    this.now = options.now ?? (() => performance.now());
  }

  /** Bytes held for reuse now. */
  get pooledBytes(): number {
    return this.pooled;
  }

  /**
   * A body of `size` bytes (not zeroed: the inbox overwrites all of it), from reused memory when
   * a pooled buffer fits, or newly allocated. `undefined` below `BODY_POOL_MIN_BYTES`: the
   * caller allocates as usual.
   */
  take(size: number): PooledBody | undefined {
    if (size < BODY_POOL_MIN_BYTES) return undefined;
    let best = -1;
    for (let i = 0; i < this.idle.length; i++) {
      const cap = (this.idle[i] as Idle).buffer.length;
      if (cap >= size && cap <= size * MAX_WASTE_FACTOR && (best < 0 || cap < (this.idle[best] as Idle).buffer.length)) best = i;
    }
    let buffer: Buffer;
    if (best >= 0) {
      buffer = (this.idle[best] as Idle).buffer;
      this.idle.splice(best, 1);
      this.pooled -= buffer.length;
      this.stats.reused++;
    } else {
      // Rounded up to whole MiB so that messages of nearly the same size (a topic or header a few
      // bytes longer) reuse each other's buffers.
      buffer = Buffer.allocUnsafeSlow(Math.ceil(size / MiB) * MiB);
      this.stats.allocated++;
    }
    let lent = true;
    return {
      body: buffer.subarray(0, size),
      release: () => {
        if (!lent) return;
        lent = false;
        this.giveBack(buffer);
      },
    };
  }

  /** Drops every pooled buffer (the mesh is stopping). */
  clear(): void {
    this.idle.length = 0;
    this.pooled = 0;
    if (this.trimTimer !== undefined) clearTimeout(this.trimTimer);
    this.trimTimer = undefined;
  }

  private giveBack(buffer: Buffer): void {
    if (this.pooled + buffer.length > this.maxPooledBytes) return;
    this.idle.push({ buffer, since: this.now() });
    this.pooled += buffer.length;
    // One timer while anything is pooled, and none otherwise: an idle node does not wake up for it.
    if (this.trimTimer === undefined) this.armTrim(BODY_POOL_IDLE_MS);
  }

  private armTrim(ms: number): void {
    this.trimTimer = setTimeout(() => this.trim(), ms);
    this.trimTimer.unref();
  }

  /** Drops buffers idle for `BODY_POOL_IDLE_MS`; re-arms while some remain. */
  trim(): void {
    this.trimTimer = undefined;
    const cutoff = this.now() - BODY_POOL_IDLE_MS;
    let oldestKept = Number.POSITIVE_INFINITY;
    for (let i = this.idle.length - 1; i >= 0; i--) {
      const entry = this.idle[i] as Idle;
      if (entry.since <= cutoff) {
        this.idle.splice(i, 1);
        this.pooled -= entry.buffer.length;
      } else if (entry.since < oldestKept) oldestKept = entry.since;
    }
    if (this.idle.length > 0) this.armTrim(Math.max(1, oldestKept + BODY_POOL_IDLE_MS - this.now()));
  }
}
