/**
 * Per-link outbox: queues, priority, fragmentation, bounds and the send window (the receiving
 * side, reassembly, is `inbox.ts`).
 *
 * Lanes: 0 control, 1 events, 2 telemetry, 3 bulk (`LANES` in types.ts). Control has strict
 * priority; the other three share the link by deficit round-robin with weights 4:2:1, so bulk
 * gets a share however busy events are. Messages are cut into fragments so that a big bulk
 * message holds a control message back by one fragment at most.
 *
 * Flow control: DATA frames of the non-control lanes count against a send window
 * (`windowBytes`) until the peer's `Inbox` has consumed them and said so with an ACK frame. So the
 * socket buffers (which Node cannot shrink, and which Linux autotunes to several MB) never hold
 * more than a window of bulk data ahead of a control frame. Control frames (and ACKs) bypass it.
 */
import { ConfigError, LaneOverflowError } from '../errors.js';
import { FRAME_HEADER_BYTES, FrameType } from './framing.js';
import {
  DATA_HEADER_BYTES,
  DEFAULT_FRAGMENT_BYTES,
  FIN_FIRST,
  FIN_LAST,
  FIN_MORE,
  FIRST_FRAGMENT_EXTRA_BYTES,
  GatherPayload,
  invalidFrame,
  LANE_COUNT,
  MESSAGE_HEADER_BYTES,
  topicBytes,
  writeMessageHeader,
} from './message.js';
import { LANES, type LaneName } from './types.js';

/** Lane numbers. */
export const Lane = {
  /** Membership, heartbeats, replies that unblock callers: never waits behind other lanes. */
  CONTROL: 0,
  /** Application messages and requests. */
  EVENTS: 1,
  /** Metrics and similar data that can be dropped when the peer is slow. */
  TELEMETRY: 2,
  /** Large transfers; gets the smallest share but is never starved. */
  BULK: 3,
} as const;

/** What a lane does when its queue would pass `hardLimit`. */
export type OverflowPolicy = 'backpressure' | 'drop-oldest';

/** Bounds of one lane's queue. */
export interface LaneOptions {
  /** Queued bytes at or above which `enqueue` returns `false` (like `stream.write`); the message is still queued. */
  highWaterMark: number;
  /** Queued bytes the lane never exceeds: past it, `backpressure` lanes throw `LaneOverflowError` and `drop-oldest` lanes drop. */
  hardLimit: number;
  /** `backpressure`: refuse with an error over `hardLimit`. `drop-oldest`: drop the oldest messages not yet started to make room. */
  overflow: OverflowPolicy;
}

const MiB = 1024 * 1024;

/** Lane bounds used when not configured. */
export const DEFAULT_LANE_OPTIONS: Readonly<Record<LaneName, Readonly<LaneOptions>>> = Object.freeze({
  control: Object.freeze({ highWaterMark: 4 * MiB, hardLimit: 64 * MiB, overflow: 'backpressure' as const }),
  events: Object.freeze({ highWaterMark: 4 * MiB, hardLimit: 64 * MiB, overflow: 'backpressure' as const }),
  telemetry: Object.freeze({ highWaterMark: 1 * MiB, hardLimit: 1 * MiB, overflow: 'drop-oldest' as const }),
  bulk: Object.freeze({ highWaterMark: 16 * MiB, hardLimit: 256 * MiB, overflow: 'backpressure' as const }),
});

/** Deficit round-robin weights of events, telemetry and bulk (control is outside the round). */
export const LANE_WEIGHTS: readonly number[] = [0, 4, 2, 1];

/** Options of an `Outbox`. */
export interface OutboxOptions {
  /** Per-lane bounds, by lane name; missing fields take `DEFAULT_LANE_OPTIONS`. */
  lanes?: Partial<Record<LaneName, Partial<LaneOptions>>>;
  /** Largest chunk of a message body per DATA frame (default 65536). Also the unit of the DRR quantum. */
  fragmentBytes?: number;
  /**
   * `priority` (default): control first, then DRR over the other lanes. `fifo`: one queue in
   * enqueue order, no priority; only there to measure what priority buys in benchmarks.
   */
  mode?: 'priority' | 'fifo';
  /** Called, after `pull` has built its buffer, for each lane that returned `false` and is now under its high-water mark. */
  onDrain?: (lane: number) => void;
  /**
   * Send window (default `DEFAULT_WINDOW_BYTES`): wire bytes of non-control DATA frames that may
   * be pulled and not yet acknowledged by the peer (`ack`). While it is full, `pull` returns
   * control frames only. A frame is always allowed when nothing is in flight, so a window
   * smaller than a frame still makes progress. `Infinity` disables the window (the peer still acks).
   * The receiving side acks every `windowBytes / 2` consumed (and at the end of each burst of
   * socket reads): keep it the same on every node.
   */
  windowBytes?: number;
}

/**
 * Default send window. About 1 ms of loopback bulk traffic: the most bulk data a control frame
 * can find ahead of it in the socket buffers of both ends, and still enough for full speed.
 */
export const DEFAULT_WINDOW_BYTES = 512 * 1024;

/** Payload slices at least this long are handed to the socket as views instead of being copied. */
export const ZERO_COPY_MIN_BYTES = 8192;

/** Counters of one lane. `messagesQueued`/`bytesQueued` are current levels; the others only grow. */
export interface LaneCounters {
  /** Messages in the queue now (a message being sent in fragments counts until its last fragment). */
  messagesQueued: number;
  /** Message body bytes in the queue not yet pulled. */
  bytesQueued: number;
  /** Messages whose last fragment has been pulled. */
  messagesSent: number;
  /** Wire bytes pulled for this lane, frame headers included. */
  bytesSent: number;
  /** Messages dropped by a `drop-oldest` lane (including a new message too big to ever fit). */
  dropped: number;
}

/** Numbers per acknowledgement checkpoint: cumulative bytes, then messages and bytes sent of lanes 1..3. */
const CHECKPOINT_STRIDE = 7;
/** Frame header + DATA header in front of each chunk. */
const DATA_FRAME_OVERHEAD = FRAME_HEADER_BYTES + DATA_HEADER_BYTES;
const EMPTY = Buffer.alloc(0);
/** Payloads shorter than this are copied with a byte loop: cheaper than TypedArray#set's fixed cost. */
const SMALL_COPY = 48;

/**
 * One lane's queue: a growable ring of parallel arrays, so that queueing a message allocates
 * nothing in the steady state (no per-message entry object).
 */
class LaneQueue {
  mask = 15;
  flags = new Uint8Array(16);
  corr = new Uint32Array(16);
  seq = new Float64Array(16);
  topic: Buffer[] = new Array<Buffer>(16).fill(EMPTY);
  /** Bytes sent between the topic and the payload: the `head` of a `GatherPayload`, else empty. */
  prefix: Uint8Array[] = new Array<Uint8Array>(16).fill(EMPTY);
  payload: Uint8Array[] = new Array<Uint8Array>(16).fill(EMPTY);
  head = 0;
  count = 0;
  /** Body bytes of the head message already pulled (> 0 while it is being sent in fragments). */
  sent = 0;
  /** Planning cursor used inside one `pull`: messages (from head) and bytes of the next one already planned. */
  pIdx = 0;
  pOff = 0;

  bodyLength(slot: number): number {
    return MESSAGE_HEADER_BYTES + (this.topic[slot] as Buffer).length + (this.prefix[slot] as Uint8Array).length + (this.payload[slot] as Uint8Array).length;
  }

  /** Bytes of the serialized body before the payload: header, topic, prefix. */
  headLength(slot: number): number {
    return MESSAGE_HEADER_BYTES + (this.topic[slot] as Buffer).length + (this.prefix[slot] as Uint8Array).length;
  }

  push(flags: number, corrId: number, topic: Buffer, prefix: Uint8Array, payload: Uint8Array, seq: number): void {
    if (this.count > this.mask) this.grow();
    const slot = (this.head + this.count) & this.mask;
    this.flags[slot] = flags;
    this.corr[slot] = corrId;
    this.seq[slot] = seq;
    this.topic[slot] = topic;
    this.prefix[slot] = prefix;
    this.payload[slot] = payload;
    this.count++;
  }

  /** Removes the head message (sent or dropped). */
  shift(): void {
    const slot = this.head;
    this.topic[slot] = EMPTY;
    this.prefix[slot] = EMPTY;
    this.payload[slot] = EMPTY;
    this.head = (slot + 1) & this.mask;
    this.count--;
    this.sent = 0;
  }

  /** Removes the message right behind the head, keeping the head (which is partly sent). */
  removeSecond(): void {
    const h = this.head;
    const s = (h + 1) & this.mask;
    this.flags[s] = this.flags[h] as number;
    this.corr[s] = this.corr[h] as number;
    this.seq[s] = this.seq[h] as number;
    this.topic[s] = this.topic[h] as Buffer;
    this.prefix[s] = this.prefix[h] as Uint8Array;
    this.payload[s] = this.payload[h] as Uint8Array;
    this.topic[h] = EMPTY;
    this.prefix[h] = EMPTY;
    this.payload[h] = EMPTY;
    this.head = s;
    this.count--;
  }

  clear(): void {
    this.topic.fill(EMPTY);
    this.prefix.fill(EMPTY);
    this.payload.fill(EMPTY);
    this.head = 0;
    this.count = 0;
    this.sent = 0;
  }

  private grow(): void {
    const cap = (this.mask + 1) * 2;
    const flags = new Uint8Array(cap);
    const corr = new Uint32Array(cap);
    const seq = new Float64Array(cap);
    const topic = new Array<Buffer>(cap).fill(EMPTY);
    const prefix = new Array<Uint8Array>(cap).fill(EMPTY);
    const payload = new Array<Uint8Array>(cap).fill(EMPTY);
    for (let i = 0; i < this.count; i++) {
      const s = (this.head + i) & this.mask;
      flags[i] = this.flags[s] as number;
      corr[i] = this.corr[s] as number;
      seq[i] = this.seq[s] as number;
      topic[i] = this.topic[s] as Buffer;
      prefix[i] = this.prefix[s] as Uint8Array;
      payload[i] = this.payload[s] as Uint8Array;
    }
    this.flags = flags;
    this.corr = corr;
    this.seq = seq;
    this.topic = topic;
    this.prefix = prefix;
    this.payload = payload;
    this.head = 0;
    this.mask = cap - 1;
  }
}

function laneOptions(name: LaneName, given: Partial<LaneOptions> | undefined): LaneOptions {
  const merged = { ...DEFAULT_LANE_OPTIONS[name], ...given };
  const key = `lanes.${name}`;
  for (const field of ['highWaterMark', 'hardLimit'] as const) {
    const v = merged[field];
    // A zero mark would report back-pressure forever and never drain.
    if (typeof v !== 'number' || !(v >= 1)) throw new ConfigError(`${key}.${field}`, `must be a positive number of bytes, got ${String(v)}`);
  }
  if (merged.hardLimit < merged.highWaterMark) {
    throw new ConfigError(`${key}.hardLimit`, `must be >= highWaterMark (${merged.highWaterMark}), got ${merged.hardLimit}`);
  }
  if (merged.overflow !== 'backpressure' && merged.overflow !== 'drop-oldest') {
    throw new ConfigError(`${key}.overflow`, `must be "backpressure" or "drop-oldest", got ${String(merged.overflow)}`);
  }
  return merged;
}

/**
 * The sending side of a link. `enqueue` messages; the link calls `pull` whenever the socket
 * can take more and writes the returned buffer as is.
 */
export class Outbox {
  /** Largest chunk of a message body per DATA frame. */
  readonly fragmentBytes: number;
  /** Scheduling mode. */
  readonly mode: 'priority' | 'fifo';
  /** Send window for the non-control lanes, in wire bytes (see `OutboxOptions.windowBytes`). */
  readonly windowBytes: number;
  private readonly laneCounters: readonly LaneCounters[];

  private readonly queues: LaneQueue[];
  private readonly hwm: number[];
  private readonly hard: number[];
  private readonly dropOldest: boolean[];
  private readonly quantum: number[];
  private readonly deficit: number[] = [0, 0, 0, 0];
  private readonly needDrain: boolean[] = [false, false, false, false];
  private readonly onDrain: ((lane: number) => void) | undefined;
  private readonly fifo: boolean;
  /** DRR position (1..3) and whether the lane there has had its quantum for this visit. */
  private rr = 1;
  private rrVisited = false;
  private seq = 0;
  private pending = 0;
  private planLane = new Uint8Array(256);
  private planLen = new Int32Array(256);
  /** Bytes of the output buffer of the last `plan`: frame headers and the payload bytes copied (not passed as views). */
  private planCopyBytes = 0;
  /** Wire bytes of non-control DATA frames pulled and not yet acknowledged. */
  private inFlight = 0;
  /**
   * What was acknowledged, by write batch: after each pull that wrote non-control frames, a
   * checkpoint (cumulative non-control wire bytes written, then `messagesSent` and `bytesSent` of
   * lanes 1..3) goes into a ring; an ACK retires the checkpoints it covers, the last of which
   * becomes `ackedBase`. Costs nothing per message (one checkpoint per pull of up to 64 KiB), and
   * is read only when a link closes or is replaced (`unacknowledged`).
   */
  private checkpoints = new Float64Array(64 * CHECKPOINT_STRIDE);
  private cpHead = 0;
  private cpCount = 0;
  private readonly ackedBase = new Float64Array(CHECKPOINT_STRIDE);
  /** Cumulative non-control wire bytes written, and acknowledged. */
  private writtenTotal = 0;
  private ackedTotal = 0;
  /** Segments built by the current `emit`, and where the next copied segment starts in its buffer. */
  private segs: Buffer[] = [];
  private segStart = 0;
  private readonly headerScratch = Buffer.allocUnsafe(MESSAGE_HEADER_BYTES + 255);

  constructor(options: OutboxOptions = {}) {
    const fragmentBytes = options.fragmentBytes ?? DEFAULT_FRAGMENT_BYTES;
    if (!Number.isInteger(fragmentBytes) || fragmentBytes < 1 || fragmentBytes > 0x7fffffff) {
      throw new ConfigError('fragmentBytes', `must be a positive integer, got ${String(fragmentBytes)}`);
    }
    const mode = options.mode ?? 'priority';
    if (mode !== 'priority' && mode !== 'fifo') throw new ConfigError('mode', `must be "priority" or "fifo", got ${String(mode)}`);
    const windowBytes = options.windowBytes ?? DEFAULT_WINDOW_BYTES;
    if (windowBytes !== Number.POSITIVE_INFINITY && (!Number.isInteger(windowBytes) || windowBytes < 1)) {
      throw new ConfigError('windowBytes', `must be a positive integer or Infinity, got ${String(windowBytes)}`);
    }
    this.windowBytes = windowBytes;
    this.fragmentBytes = fragmentBytes;
    this.mode = mode;
    this.fifo = mode === 'fifo';
    this.onDrain = options.onDrain;
    const resolved = LANES.map((name) => laneOptions(name, options.lanes?.[name]));
    this.hwm = resolved.map((o) => o.highWaterMark);
    this.hard = resolved.map((o) => o.hardLimit);
    this.dropOldest = resolved.map((o) => o.overflow === 'drop-oldest');
    this.quantum = LANE_WEIGHTS.map((w) => w * fragmentBytes);
    this.queues = LANES.map(() => new LaneQueue());
    this.laneCounters = LANES.map(() => ({ messagesQueued: 0, bytesQueued: 0, messagesSent: 0, bytesSent: 0, dropped: 0 }));
  }

  /**
   * Per-lane counters, indexed by lane number: the live plain objects, updated in place (read
   * them, copy them if a snapshot is needed, never write to them).
   */
  counters(): readonly LaneCounters[] {
    return this.laneCounters;
  }

  /** Message body bytes queued on `lane` and not yet pulled. */
  queuedBytes(lane: number): number {
    return (this.laneCounters[lane] as LaneCounters).bytesQueued;
  }

  /** Whether `lane` is at or over its high-water mark, i.e. `enqueue` on it would return `false`. */
  isOverHighWaterMark(lane: number): boolean {
    return (this.laneCounters[lane] as LaneCounters).bytesQueued >= (this.hwm[lane] as number);
  }

  /** Messages queued on all lanes (partly sent ones included). */
  get pendingMessages(): number {
    return this.pending;
  }

  /** Wire bytes of non-control DATA frames pulled and not yet acknowledged by the peer. */
  get inFlightBytes(): number {
    return this.inFlight;
  }

  /**
   * The peer consumed `bytes` more wire bytes of non-control DATA frames (an ACK frame):
   * returns them to the send window. Pull again afterwards: frames may have become sendable.
   * @throws FrameError FOUNDATION_FRAME_INVALID if `bytes` is not positive or is more than is in
   *   flight (the peer is broken or lying; close the link).
   */
  ack(bytes: number): void {
    if (!Number.isInteger(bytes) || bytes < 1) invalidFrame(`ACK of ${String(bytes)} bytes`);
    if (bytes > this.inFlight) invalidFrame(`ACK of ${bytes} bytes, but only ${this.inFlight} are unacknowledged`);
    this.inFlight -= bytes;
    this.ackedTotal += bytes;
    const cps = this.checkpoints;
    const cap = cps.length / CHECKPOINT_STRIDE;
    while (this.cpCount > 0) {
      const at = this.cpHead * CHECKPOINT_STRIDE;
      if ((cps[at] as number) > this.ackedTotal) break;
      this.ackedBase.set(cps.subarray(at, at + CHECKPOINT_STRIDE));
      this.cpHead = (this.cpHead + 1) % cap;
      this.cpCount--;
    }
  }

  /** After a pull that wrote non-control frames: remembers where the lanes' counters stood. */
  private checkpoint(): void {
    let cap = this.checkpoints.length / CHECKPOINT_STRIDE;
    if (this.cpCount === cap) {
      const grown = new Float64Array(this.checkpoints.length * 2);
      for (let i = 0; i < this.cpCount; i++) {
        const from = ((this.cpHead + i) % cap) * CHECKPOINT_STRIDE;
        grown.set(this.checkpoints.subarray(from, from + CHECKPOINT_STRIDE), i * CHECKPOINT_STRIDE);
      }
      this.checkpoints = grown;
      this.cpHead = 0;
      cap *= 2;
    }
    const at = ((this.cpHead + this.cpCount) % cap) * CHECKPOINT_STRIDE;
    const cps = this.checkpoints;
    cps[at] = this.writtenTotal;
    for (let lane = 1; lane < LANE_COUNT; lane++) {
      const c = this.laneCounters[lane] as LaneCounters;
      cps[at + 2 * lane - 1] = c.messagesSent;
      cps[at + 2 * lane] = c.bytesSent;
    }
    this.cpCount++;
  }

  /**
   * Per lane, what was written and not acknowledged by the peer: messages whose last fragment was
   * written, and wire bytes written, since the last write batch the peer acknowledged whole. An
   * upper bound, exact to within one batch (at most 64 KiB of frames) when an ACK falls inside
   * one. Control frames are not acknowledged by the protocol, so lane 0 is always zero.
   */
  unacknowledged(): Array<{ messages: number; bytes: number }> {
    const out = LANES.map(() => ({ messages: 0, bytes: 0 }));
    const base = this.ackedBase;
    for (let lane = 1; lane < LANE_COUNT; lane++) {
      const c = this.laneCounters[lane] as LaneCounters;
      out[lane] = { messages: c.messagesSent - (base[2 * lane - 1] as number), bytes: c.bytesSent - (base[2 * lane] as number) };
    }
    return out;
  }

  /**
   * Moves every queued message, per lane and in order, to the end of `target`'s queues: the
   * link it belonged to was replaced by the one `target` serves. A message partly written to the
   * old link moves whole (its fragments there will never complete: the peer's inbox for that
   * link is gone). Drop-oldest lanes may drop the oldest on `target` if they pass its hard
   * limit; backpressure lanes move whatever they hold, even past it (refusing would lose it).
   * Returns what moved, per lane.
   */
  moveQueuedTo(target: Outbox): Array<{ messages: number; bytes: number }> {
    const out = LANES.map(() => ({ messages: 0, bytes: 0 }));
    for (let lane = 0; lane < LANE_COUNT; lane++) {
      const q = this.queues[lane] as LaneQueue;
      const tq = target.queues[lane] as LaneQueue;
      const c = this.laneCounters[lane] as LaneCounters;
      const tc = target.laneCounters[lane] as LaneCounters;
      const moved = out[lane] as { messages: number; bytes: number };
      while (q.count > 0) {
        const slot = q.head;
        const size = q.bodyLength(slot);
        if (target.dropOldest[lane] && tc.bytesQueued + size > (target.hard[lane] as number)) target.makeRoom(tq, tc, size, target.hard[lane] as number);
        tq.push(
          q.flags[slot] as number,
          q.corr[slot] as number,
          q.topic[slot] as Buffer,
          q.prefix[slot] as Uint8Array,
          q.payload[slot] as Uint8Array,
          target.seq++,
        );
        target.pending++;
        tc.messagesQueued++;
        tc.bytesQueued += size;
        moved.messages++;
        moved.bytes += size;
        q.shift();
      }
      c.messagesQueued = 0;
      c.bytesQueued = 0;
      this.needDrain[lane] = false;
      if (tc.bytesQueued >= (target.hwm[lane] as number)) target.needDrain[lane] = true;
    }
    this.pending = 0;
    return out;
  }

  /**
   * Queues a message. Returns `false` when the lane is at or over its high-water mark after
   * queueing (the message is queued all the same; wait for `onDrain(lane)` before sending
   * more), or when a `drop-oldest` lane had to drop the message itself.
   * Takes ownership of `payload`: it is kept by reference, and large payloads are handed to the
   * socket as views (see `pullSegments`), so it must not be modified after the call. A
   * `GatherPayload` is sent as its head then its body, the body never copied into one buffer
   * with the head.
   * @throws LaneOverflowError on a `backpressure` lane that would pass its hard limit (not queued).
   * @throws SerializationError if the topic is over 255 UTF-8 bytes.
   */
  enqueue(lane: number, flags: number, corrId: number, topic: string, data: Uint8Array | GatherPayload): boolean {
    const q = this.queues[lane];
    if (q === undefined) throw new RangeError(`lane must be 0..${LANE_COUNT - 1}, got ${String(lane)}`);
    if ((flags & 0xff) !== flags) throw new RangeError(`message flags must be 0..255, got ${String(flags)}`);
    if (corrId >>> 0 !== corrId) throw new RangeError(`corrId must be an unsigned 32-bit integer, got ${String(corrId)}`);
    const t = topicBytes(topic);
    let prefix: Uint8Array = EMPTY;
    let payload: Uint8Array;
    if (data instanceof GatherPayload) {
      prefix = data.head;
      payload = data.body;
    } else {
      payload = data;
    }
    const size = MESSAGE_HEADER_BYTES + t.length + prefix.length + payload.length;
    const c = this.laneCounters[lane] as LaneCounters;
    const hard = this.hard[lane] as number;
    if (c.bytesQueued + size > hard) {
      if (!this.dropOldest[lane]) throw new LaneOverflowError(LANES[lane] as string, c.bytesQueued + size, hard);
      if (!this.makeRoom(q, c, size, hard)) {
        c.dropped++;
        this.needDrain[lane] = true;
        return false;
      }
    }
    q.push(flags, corrId, t, prefix, payload, this.seq++);
    this.pending++;
    c.messagesQueued++;
    c.bytesQueued += size;
    if (c.bytesQueued >= (this.hwm[lane] as number)) {
      this.needDrain[lane] = true;
      return false;
    }
    return true;
  }

  /** Drops the oldest messages not yet started until `size` more bytes fit; false if they never can. */
  private makeRoom(q: LaneQueue, c: LaneCounters, size: number, hard: number): boolean {
    // A message already partly on the wire must finish, or the peer would reassemble garbage.
    const pinned = q.sent > 0 ? q.bodyLength(q.head) - q.sent : 0;
    if (pinned + size > hard) return false;
    while (c.bytesQueued + size > hard) {
      let bytes: number;
      if (q.sent > 0) {
        bytes = q.bodyLength((q.head + 1) & q.mask);
        q.removeSecond();
      } else {
        bytes = q.bodyLength(q.head);
        q.shift();
      }
      this.pending--;
      c.messagesQueued--;
      c.bytesQueued -= bytes;
      c.dropped++;
    }
    return true;
  }

  /**
   * Returns one buffer holding as many whole DATA frames as fit in `budgetBytes` (always at
   * least one frame if any is sendable), in scheduling order; `undefined` if nothing is sendable
   * (nothing queued, or only non-control frames while the send window is full). A copy of
   * `pullSegments`, for tests and cold paths.
   */
  pull(budgetBytes: number, ignoreWindow = false): Buffer | undefined {
    const segs = this.pullSegments(budgetBytes, ignoreWindow);
    if (segs === undefined) return undefined;
    return segs.length === 1 ? (segs[0] as Buffer) : Buffer.concat(segs);
  }

  /**
   * Like `pull`, but as a list of buffers to write in order (`socket.cork()`, `write` each,
   * `uncork()`): frame headers and small payloads are batched into one new buffer, while payload
   * slices of at least `ZERO_COPY_MIN_BYTES` are views into the payloads given to `enqueue`
   * (no copy). `ignoreWindow` sends past a full window (a graceful close flushing everything);
   * those frames still count as in flight.
   */
  pullSegments(budgetBytes: number, ignoreWindow = false): Buffer[] | undefined {
    if (this.pending === 0) return undefined;
    const n = this.plan(budgetBytes, ignoreWindow);
    if (n === 0) return undefined;
    return this.emit(n);
  }

  /** Drops everything queued (the link is gone). Cumulative counters are kept. */
  clear(): void {
    for (let lane = 0; lane < LANE_COUNT; lane++) {
      (this.queues[lane] as LaneQueue).clear();
      const c = this.laneCounters[lane] as LaneCounters;
      c.messagesQueued = 0;
      c.bytesQueued = 0;
      this.needDrain[lane] = false;
      this.deficit[lane] = 0;
    }
    this.pending = 0;
    this.inFlight = 0;
    // Nothing is in doubt any more: what was in flight was counted by whoever cleared.
    this.cpCount = 0;
    this.ackedTotal = this.writtenTotal;
    for (let lane = 1; lane < LANE_COUNT; lane++) {
      const c = this.laneCounters[lane] as LaneCounters;
      this.ackedBase[2 * lane - 1] = c.messagesSent;
      this.ackedBase[2 * lane] = c.bytesSent;
    }
  }

  // Phase 1: decide the frames (lane + chunk length) without touching the queues, so the total
  // size is known before the single allocation.
  private plan(budget: number, ignoreWindow: boolean): number {
    const queues = this.queues;
    const frag = this.fragmentBytes;
    for (let lane = 0; lane < LANE_COUNT; lane++) {
      const q = queues[lane] as LaneQueue;
      q.pIdx = 0;
      q.pOff = q.sent;
    }
    let n = 0;
    let total = 0;
    let copy = 0;
    const window = ignoreWindow ? Number.POSITIVE_INFINITY : this.windowBytes;
    let flight = this.inFlight;
    for (;;) {
      const lane = this.fifo ? this.pickFifo() : this.pickPriority();
      if (lane < 0) break;
      const q = queues[lane] as LaneQueue;
      const slot = (q.head + q.pIdx) & q.mask;
      const remaining = q.bodyLength(slot) - q.pOff;
      const chunk = Math.min(remaining, frag);
      // The first of several fragments also carries the message's total length.
      const frameBytes = DATA_FRAME_OVERHEAD + chunk + (chunk < remaining && q.pOff === 0 ? FIRST_FRAGMENT_EXTRA_BYTES : 0);
      if (n > 0 && total + frameBytes > budget) break;
      if (lane !== 0) {
        // Window full: stop. Control always comes first in priority mode, so none is left; in
        // fifo mode a control frame queued behind stays behind (one queue, as in that mode).
        if (flight > 0 && flight + frameBytes > window) break;
        flight += frameBytes;
        this.deficit[lane] = (this.deficit[lane] as number) - chunk;
      }
      const viewed = payloadSlice(q.headLength(slot), q.pOff, chunk);
      copy += viewed >= ZERO_COPY_MIN_BYTES ? frameBytes - viewed : frameBytes;
      if (chunk === remaining) {
        q.pIdx++;
        q.pOff = 0;
      } else {
        q.pOff += chunk;
      }
      if (n === this.planLane.length) this.growPlan();
      this.planLane[n] = lane;
      this.planLen[n] = chunk;
      n++;
      total += frameBytes;
    }
    this.planCopyBytes = copy;
    return n;
  }

  private growPlan(): void {
    const lane = new Uint8Array(this.planLane.length * 2);
    lane.set(this.planLane);
    const len = new Int32Array(this.planLen.length * 2);
    len.set(this.planLen);
    this.planLane = lane;
    this.planLen = len;
  }

  private pickPriority(): number {
    const queues = this.queues;
    const control = queues[0] as LaneQueue;
    if (control.pIdx < control.count) return 0;
    const q1 = queues[1] as LaneQueue;
    const q2 = queues[2] as LaneQueue;
    const q3 = queues[3] as LaneQueue;
    if (q1.pIdx >= q1.count && q2.pIdx >= q2.count && q3.pIdx >= q3.count) return -1;
    // Deficit round-robin. Quantum = weight × fragmentBytes ≥ any chunk, so a lane that gets
    // a fresh quantum can always send; a full turn over the three lanes always finds a frame.
    const frag = this.fragmentBytes;
    for (let guard = 0; guard < 8; guard++) {
      const lane = this.rr;
      const q = queues[lane] as LaneQueue;
      if (q.pIdx >= q.count) {
        // An idle lane must not bank credit for later bursts.
        this.deficit[lane] = 0;
        this.nextRr();
        continue;
      }
      if (!this.rrVisited) {
        this.deficit[lane] = (this.deficit[lane] as number) + (this.quantum[lane] as number);
        this.rrVisited = true;
      }
      const remaining = q.bodyLength((q.head + q.pIdx) & q.mask) - q.pOff;
      const cost = Math.min(remaining, frag);
      if (cost <= (this.deficit[lane] as number)) return lane;
      this.nextRr();
    }
    return -1;
  }

  private nextRr(): void {
    this.rr = this.rr === 3 ? 1 : this.rr + 1;
    this.rrVisited = false;
  }

  private pickFifo(): number {
    let best = -1;
    let bestSeq = Number.POSITIVE_INFINITY;
    for (let lane = 0; lane < LANE_COUNT; lane++) {
      const q = this.queues[lane] as LaneQueue;
      if (q.pIdx < q.count) {
        const s = q.seq[(q.head + q.pIdx) & q.mask] as number;
        if (s < bestSeq) {
          bestSeq = s;
          best = lane;
        }
      }
    }
    return best;
  }

  // Phase 2: one allocation, then each frame is written in place (large payload slices are
  // passed as views) and its message dequeued.
  private emit(n: number): Buffer[] {
    const out = Buffer.allocUnsafe(this.planCopyBytes);
    this.segs = [];
    this.segStart = 0;
    const queues = this.queues;
    const counters = this.laneCounters;
    let drainMask = 0;
    let written = 0;
    let p = 0;
    for (let i = 0; i < n; i++) {
      const lane = this.planLane[i] as number;
      const chunk = this.planLen[i] as number;
      const q = queues[lane] as LaneQueue;
      const slot = q.head;
      const topic = q.topic[slot] as Buffer;
      const prefix = q.prefix[slot] as Uint8Array;
      const payload = q.payload[slot] as Uint8Array;
      const bodyLength = MESSAGE_HEADER_BYTES + topic.length + prefix.length + payload.length;
      const fin = q.sent + chunk === bodyLength;
      const first = !fin && q.sent === 0;
      const wire = DATA_FRAME_OVERHEAD + chunk + (first ? FIRST_FRAGMENT_EXTRA_BYTES : 0);
      const frameLength = wire - 4;
      out[p] = frameLength >>> 24;
      out[p + 1] = (frameLength >>> 16) & 0xff;
      out[p + 2] = (frameLength >>> 8) & 0xff;
      out[p + 3] = frameLength & 0xff;
      out[p + 4] = FrameType.DATA;
      out[p + 5] = lane;
      out[p + 6] = fin ? FIN_LAST : first ? FIN_FIRST : FIN_MORE;
      p += DATA_FRAME_OVERHEAD;
      if (first) {
        out[p] = bodyLength >>> 24;
        out[p + 1] = (bodyLength >>> 16) & 0xff;
        out[p + 2] = (bodyLength >>> 8) & 0xff;
        out[p + 3] = bodyLength & 0xff;
        p += FIRST_FRAGMENT_EXTRA_BYTES;
      }
      if (fin && q.sent === 0) {
        p = writeMessageHeader(out, p, q.flags[slot] as number, q.corr[slot] as number, topic);
        const plen = prefix.length;
        if (plen > 0) {
          if (plen < SMALL_COPY) for (let j = 0; j < plen; j++) out[p + j] = prefix[j] as number;
          else out.set(prefix, p);
          p += plen;
        }
        const len = payload.length;
        if (len < SMALL_COPY) {
          for (let j = 0; j < len; j++) out[p + j] = payload[j] as number;
          p += len;
        } else if (len < ZERO_COPY_MIN_BYTES) {
          out.set(payload, p);
          p += len;
        } else {
          this.pushView(out, p, payload, 0, len);
        }
      } else {
        p = this.writeSlice(out, p, q, slot, q.sent, chunk);
      }
      const c = counters[lane] as LaneCounters;
      c.bytesQueued -= chunk;
      c.bytesSent += wire;
      if (lane !== 0) {
        this.inFlight += wire;
        written += wire;
      }
      if (fin) {
        q.shift();
        this.pending--;
        c.messagesQueued--;
        c.messagesSent++;
      } else {
        q.sent += chunk;
      }
      if (this.needDrain[lane] && c.bytesQueued < (this.hwm[lane] as number)) {
        this.needDrain[lane] = false;
        drainMask |= 1 << lane;
      }
    }
    if (written > 0) {
      this.writtenTotal += written;
      this.checkpoint();
    }
    const segs = this.segs;
    if (this.segStart === 0) segs.push(out);
    else if (this.segStart < p) segs.push(out.subarray(this.segStart, p));
    this.segs = EMPTY_SEGMENTS;
    // Callbacks run last: a drain handler that enqueues must not see a half-built pull.
    if (drainMask !== 0 && this.onDrain !== undefined) {
      for (let lane = 0; lane < LANE_COUNT; lane++) if (drainMask & (1 << lane)) this.onDrain(lane);
    }
    return segs;
  }

  /** Ends the copied segment at `p` and adds payload bytes [from, to) as a view. */
  private pushView(out: Buffer, p: number, payload: Uint8Array, from: number, to: number): void {
    if (p > this.segStart) this.segs.push(out.subarray(this.segStart, p));
    this.segs.push(Buffer.isBuffer(payload) ? payload.subarray(from, to) : Buffer.from(payload.buffer, payload.byteOffset + from, to - from));
    this.segStart = p;
  }

  /** Writes bytes [from, from+length) of the head message's serialized body (fragments only). */
  private writeSlice(out: Buffer, p: number, q: LaneQueue, slot: number, from: number, length: number): number {
    const topic = q.topic[slot] as Buffer;
    const prefix = q.prefix[slot] as Uint8Array;
    const payload = q.payload[slot] as Uint8Array;
    const headerLength = MESSAGE_HEADER_BYTES + topic.length;
    const end = from + length;
    if (from < headerLength) {
      const h = this.headerScratch;
      writeMessageHeader(h, 0, q.flags[slot] as number, q.corr[slot] as number, topic);
      const hEnd = Math.min(end, headerLength);
      h.copy(out, p, from, hEnd);
      p += hEnd - from;
      from = hEnd;
    }
    const prefixEnd = headerLength + prefix.length;
    if (from < end && from < prefixEnd) {
      const pEnd = Math.min(end, prefixEnd);
      out.set(prefix.subarray(from - headerLength, pEnd - headerLength), p);
      p += pEnd - from;
      from = pEnd;
    }
    if (from < end) {
      const a = from - prefixEnd;
      const b = end - prefixEnd;
      if (b - a >= ZERO_COPY_MIN_BYTES) {
        this.pushView(out, p, payload, a, b);
      } else {
        out.set(payload.subarray(a, b), p);
        p += b - a;
      }
    }
    return p;
  }
}

/** Bytes of the payload inside body bytes [from, from+chunk) of a message whose header (with topic) is `headerLength` long. */
function payloadSlice(headerLength: number, from: number, chunk: number): number {
  const start = from > headerLength ? from : headerLength;
  const end = from + chunk;
  return end > start ? end - start : 0;
}

const EMPTY_SEGMENTS: Buffer[] = [];
