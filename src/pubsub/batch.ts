/**
 * Publisher-side batching: the frames published in one turn of the event loop to the same
 * destination nodes on the same lane travel as one message per node (as NATS clients fill one
 * write buffer), so the per-message costs of the mesh (queueing, framing, dispatch on the
 * receiver) are paid once per batch, not once per publish.
 *
 * Layout: `[u8 0xB5]` then, per frame, `[u32 BE length][frame]` (frame.ts). A receiver tells a
 * batch from a frame by its first byte (a frame starts with its version, 1). A batch of one
 * frame is sent as that frame alone.
 *
 * Order: one batch is open at a time; a publish to other destinations or another lane closes it
 * first, so frames leave in publish order (FIFO per publisher per topic holds).
 */
import type { LaneName } from '../mesh/types.js';

/** First byte of a batch. */
export const BATCH_MARK = 0xb5;
/** Bytes of a batch's header, and of each frame's length prefix. */
const MARK_BYTES = 1;
const LENGTH_BYTES = 4;
/**
 * Largest batch; a frame that would pass it closes the batch. Also the slab size batches are cut
 * from. Under the mesh's 64 KiB fragment with room for the message header and topic, so a batch
 * travels as one fragment: parsed in place on the receiver, never reassembled.
 */
export const BATCH_MAX_BYTES = 64 * 1024 - 512;
/**
 * Bodies above this go alone (a gather write, never copied): copying them into a batch would cost
 * more than the message it saves.
 */
export const BATCH_BODY_LIMIT = 8 * 1024;

/** Sends a closed batch (or a lone frame) to `dest`; `frames` is how many publishes it holds. */
export type BatchSink = (dest: readonly string[], bytes: Buffer, frames: number, lane: LaneName) => void;

export class FrameBatcher {
  /** Slab the open batch is written into, from `start`; closed batches are views of earlier parts. */
  private slab = Buffer.allocUnsafe(BATCH_MAX_BYTES);
  private start = 0;
  private at = 0;
  private frames = 0;
  private dest: readonly string[] = [];
  private lane: LaneName = 'events';
  private flushQueued = false;
  private readonly flushLater = (): void => {
    this.flushQueued = false;
    this.flush();
  };

  constructor(private readonly sink: BatchSink) {}

  /** Whether a frame with this body is batched (else it is sent alone). */
  static fits(body: Uint8Array): boolean {
    return body.length <= BATCH_BODY_LIMIT;
  }

  /**
   * Adds one frame for `dest` on `lane` (the caller checked `fits`). May first send the open
   * batch (other destinations, other lane, or full). The batch goes out at the latest when the
   * current job ends (a microtask), before the link writes anything (it writes on `setImmediate`).
   */
  add(dest: readonly string[], lane: LaneName, head: Buffer, body: Uint8Array): void {
    const size = LENGTH_BYTES + head.length + body.length;
    if (this.frames > 0 && (lane !== this.lane || !sameNodes(dest, this.dest) || this.at + size > this.slab.length)) this.flush();
    if (this.frames === 0) {
      if (this.slab.length - this.start < MARK_BYTES + size) {
        this.slab = Buffer.allocUnsafe(BATCH_MAX_BYTES);
        this.start = 0;
      }
      this.slab[this.start] = BATCH_MARK;
      this.at = this.start + MARK_BYTES;
      this.dest = dest;
      this.lane = lane;
      if (!this.flushQueued) {
        this.flushQueued = true;
        queueMicrotask(this.flushLater);
      }
    }
    const slab = this.slab;
    let at = this.at;
    const n = head.length + body.length;
    slab[at] = n >>> 24;
    slab[at + 1] = (n >>> 16) & 0xff;
    slab[at + 2] = (n >>> 8) & 0xff;
    slab[at + 3] = n & 0xff;
    at += LENGTH_BYTES;
    // Heads and small bodies: a byte loop beats TypedArray#set's fixed cost.
    for (let i = 0; i < head.length; i++) slab[at + i] = head[i] as number;
    at += head.length;
    if (body.length < 64) for (let i = 0; i < body.length; i++) slab[at + i] = body[i] as number;
    else slab.set(body, at);
    this.at = at + body.length;
    this.frames++;
  }

  /** Sends the open batch now, if any. */
  flush(): void {
    const frames = this.frames;
    if (frames === 0) return;
    const bytes = frames === 1 ? this.slab.subarray(this.start + MARK_BYTES + LENGTH_BYTES, this.at) : this.slab.subarray(this.start, this.at);
    this.start = this.at;
    this.frames = 0;
    const dest = this.dest;
    this.dest = [];
    this.sink(dest, bytes, frames, this.lane);
  }
}

/**
 * Calls `frame(start, end)` for each frame of a batch, in order. Returns false if the batch is
 * malformed (a length running past the end): the frames before it were given.
 */
export function forEachBatchFrame(buf: Buffer, frame: (start: number, end: number) => void): boolean {
  let at = MARK_BYTES;
  while (at < buf.length) {
    if (at + LENGTH_BYTES > buf.length) return false;
    const n = (buf[at] as number) * 0x1000000 + (((buf[at + 1] as number) << 16) | ((buf[at + 2] as number) << 8) | (buf[at + 3] as number));
    at += LENGTH_BYTES;
    if (n === 0 || at + n > buf.length) return false;
    frame(at, at + n);
    at += n;
  }
  return true;
}

function sameNodes(a: readonly string[], b: readonly string[]): boolean {
  if (a === b) return true;
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}
