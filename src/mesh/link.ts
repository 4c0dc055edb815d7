/**
 * One authenticated connection to one peer: socket, frame decoder, outbox (lanes) and inbox
 * (reassembly). The link knows nothing about membership; the mesh decides what a close means.
 *
 * Flow control: the outbox keeps at most a window of non-control DATA frames unacknowledged;
 * this end returns ACK frames for what its inbox consumed, every half window and whenever a
 * burst of socket reads is over (a `setImmediate` after a read), so the peer never stalls.
 *
 * Receive-side priority: the fragments of a message sent in several (large ones) on a non-control
 * lane are not copied into their message while socket reads are handled, but queued, in order,
 * and copied `DEFERRED_FRAGMENTS_PER_TURN` at a time from `setImmediate`: a control frame that
 * arrives in the same burst of reads as a window of bulk fragments is dispatched at once, not
 * after their copies, and the event loop turns between two slices. Single-fragment messages of a
 * lane with nothing queued are handled at once, as before.
 */
import type { Socket } from 'node:net';
import { ErrorCodes, FrameError, HandshakeError } from '../errors.js';
import type { BodyPool } from './body-pool.js';
import { decodeAck, encodeAck, encodeFrame, type Frame, FrameDecoder, FrameType } from './framing.js';
import { HANDSHAKE_MAX_FRAME_BYTES, type HandshakeChannel, type HandshakeResult } from './handshake.js';
import { Inbox } from './inbox.js';
import { DEFAULT_WINDOW_BYTES, Outbox, type OutboxOptions } from './lanes.js';
import { FIN_FIRST, type GatherPayload, type InboundMessage, LANE_COUNT } from './message.js';

export interface LinkOptions {
  maxFrameBytes: number;
  maxMessageBytes: number;
  /** Where the inbox takes the bodies of large messages from (none: each is allocated). */
  bodyPool?: BodyPool;
  outbox: Partial<OutboxOptions>;
  handshakeTimeoutMs: number;
}

/** Why a link closed, from the link's point of view. */
export type LinkCloseCause =
  | { kind: 'socket-closed'; error?: Error }
  | { kind: 'protocol-error'; error: Error }
  | { kind: 'left' }
  | { kind: 'local'; reason: string };

export interface LinkEvents {
  onMessage(msg: InboundMessage): void;
  onLeave(): void;
  onDrain(lane: number): void;
  onClose(cause: LinkCloseCause): void;
}

/** Bytes the link hands the socket per write; small enough that control waits ~one fragment. */
const WRITE_BUDGET = 64 * 1024;
/** Bytes written per writev by a flush (several pulls corked together). */
const FLUSH_BYTES = 256 * 1024;
/** Largest ACK body. */
const MAX_ACK = 0xffffffff;
/**
 * Frames a link buffers while its own side of the handshake is still running: the peer may be up
 * already and sending what every layer sends a new member (one full map per replicated table,
 * digests, hellos): 64 frames, 256 KiB. Past either bound the link closes (a peer that floods
 * before being admitted). With at most 128 handshakes in flight that is 32 MiB at the very worst.
 */
const MAX_EARLY_FRAMES = 64;
const MAX_EARLY_BYTES = 256 * 1024;

/** Bytes of a frame's body, whole or in parts. */
function frameBytes(f: Frame): number {
  if (!f.parts) return f.body.length;
  let n = 0;
  for (const p of f.parts) n += p.length;
  return n;
}

/** Deferred fragments (of large messages) copied per turn of the event loop: 128 KiB. */
const DEFERRED_FRAGMENTS_PER_TURN = 2;

export class Link {
  readonly remote: string;
  readonly outbox: Outbox;
  handshake?: HandshakeResult;
  private readonly decoder: FrameDecoder;
  private readonly inbox: Inbox;
  private events?: LinkEvents;
  private handshakeWaiter?: { resolve: (f: { type: number; body: Buffer }) => void; reject: (e: Error) => void };
  private handshakeQueue: Frame[] = [];
  private handshakeQueuedBytes = 0;
  /**
   * Consumed bytes at which an ACK goes out at once: half the window. (A quarter measured no
   * better on loopback and costs twice the ACK writes; the sender never waits for it as long as
   * the window holds at least two frames.)
   */
  private readonly ackEvery: number;
  private ackScheduled = false;
  private flushScheduled = false;
  private flushSoonScheduled = false;
  private waitingDrain = false;
  private closed = false;
  private closeCause?: LinkCloseCause;
  /** Frames waiting to be handled after socket reads (see the class comment): DATA of large messages, and a LEAVE behind them. */
  private deferred: Frame[] = [];
  private deferredHead = 0;
  /** Deferred DATA frames per lane (a lane's next frames queue behind them). */
  private readonly deferredPerLane = new Array<number>(LANE_COUNT).fill(0);
  private drainScheduled = false;

  constructor(
    readonly socket: Socket,
    readonly direction: 'inbound' | 'outbound',
    private readonly opts: LinkOptions,
  ) {
    this.remote = `${socket.remoteAddress}:${socket.remotePort}`;
    // Until the peer proves the secret it may send only handshake-sized frames (see admission.ts).
    this.decoder = new FrameDecoder(opts.maxFrameBytes, { dataParts: true, initialLimit: Math.min(HANDSHAKE_MAX_FRAME_BYTES, opts.maxFrameBytes) });
    this.inbox = new Inbox({ maxMessageBytes: opts.maxMessageBytes, bodyPool: opts.bodyPool });
    this.outbox = new Outbox({ ...opts.outbox, onDrain: (lane: number) => this.events?.onDrain(lane) });
    const window = opts.outbox.windowBytes ?? DEFAULT_WINDOW_BYTES;
    this.ackEvery = Math.max(1, Math.min(Math.floor(window / 2), MAX_ACK));
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('drain', () => {
      this.waitingDrain = false;
      this.flush();
    });
    socket.on('error', (error) => this.terminate({ kind: 'socket-closed', error }));
    socket.on('close', () => this.terminate({ kind: 'socket-closed' }));
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** Frames of the handshake phase, before `activate`. */
  handshakeChannel(): HandshakeChannel {
    return {
      send: (type, body) => {
        if (!this.closed) this.socket.write(encodeFrame(type, body));
      },
      recv: () => {
        const queued = this.handshakeQueue.shift();
        if (queued) return Promise.resolve(queued);
        if (this.closed) return Promise.reject(this.closedError());
        return new Promise((resolve, reject) => {
          const timer = setTimeout(() => {
            this.handshakeWaiter = undefined;
            reject(new HandshakeError('timeout', `no handshake answer within ${this.opts.handshakeTimeoutMs} ms`));
          }, this.opts.handshakeTimeoutMs);
          this.handshakeWaiter = {
            resolve: (f) => {
              clearTimeout(timer);
              resolve(f);
            },
            reject: (e) => {
              clearTimeout(timer);
              reject(e);
            },
          };
        });
      },
      peerAuthenticated: () => this.decoder.lift(),
    };
  }

  private closedError(): HandshakeError {
    const cause = this.closeCause;
    const detail =
      cause?.kind === 'protocol-error' ? cause.error.message : cause?.kind === 'socket-closed' && cause.error ? cause.error.message : 'connection closed';
    return new HandshakeError('protocol', `connection closed during the handshake (${detail})`);
  }

  /** Switches from the handshake to the data phase. */
  activate(result: HandshakeResult, events: LinkEvents): void {
    this.handshake = result;
    this.events = events;
    this.decoder.lift();
    // Data frames that raced in right behind the last handshake frame.
    const early = this.handshakeQueue;
    this.handshakeQueue = [];
    try {
      for (const f of early) this.onFrame(f);
      this.ackSoon();
    } catch (error) {
      this.terminate({ kind: 'protocol-error', error: error as Error });
      return;
    }
    if (this.closed && this.closeCause) events.onClose(this.closeCause);
  }

  /**
   * Queues one message. Returns false when the lane is over its high-water mark. Takes
   * ownership of `payload`: large payloads are written to the socket as views, so the caller
   * must not modify it afterwards. A `GatherPayload` goes out as its head then its body, the
   * body never copied whole.
   */
  send(lane: number, flags: number, corrId: number, topic: string, payload: Uint8Array | GatherPayload): boolean {
    // The peer would close the link on an oversized message; refuse it here, at the call site.
    // (Every node of a cluster is expected to share maxMessageBytes.)
    if (payload.length + 262 > this.opts.maxMessageBytes) {
      throw new FrameError(
        ErrorCodes.MESSAGE_TOO_LARGE,
        `message of ${payload.length} bytes on topic "${topic}" exceeds maxMessageBytes (${this.opts.maxMessageBytes}); split it or raise maxMessageBytes on every node`,
      );
    }
    const below = this.outbox.enqueue(lane, flags, corrId, topic, payload);
    if (lane === 0) this.flushSoon();
    else this.scheduleFlush();
    return below;
  }

  sendLeave(body: Uint8Array): void {
    if (this.closed) return;
    this.flushNow();
    this.socket.write(encodeFrame(FrameType.LEAVE, body));
  }

  private scheduleFlush(): void {
    if (this.flushScheduled || this.waitingDrain || this.closed) return;
    this.flushScheduled = true;
    // setImmediate batches every send made in this turn of the loop (including the replies
    // to a whole socket read) into few large writes.
    setImmediate(() => {
      this.flushScheduled = false;
      this.flush();
    });
  }

  /**
   * Control messages do not wait for the end of the poll phase (which may still hold many
   * socket reads to process): they go out once the current callback is over, still batched
   * with whatever that callback sent.
   */
  private flushSoon(): void {
    if (this.flushSoonScheduled || this.waitingDrain || this.closed) return;
    this.flushSoonScheduled = true;
    queueMicrotask(() => {
      this.flushSoonScheduled = false;
      this.flush();
    });
  }

  private flush(): void {
    if (this.closed) return;
    if (this.waitingDrain) {
      // ACKs never wait (they may be what the peer waits on); a queued one rides along here.
      this.sendAck();
      return;
    }
    const socket = this.socket;
    for (;;) {
      // Stops when nothing is sendable: lanes empty, or the send window full (an ACK flushes again).
      let segs = this.outbox.pullSegments(WRITE_BUDGET);
      if (segs === undefined) {
        this.sendAck();
        return;
      }
      // Several pulls go out in one writev: fewer system calls for the same bytes.
      socket.cork();
      this.sendAck();
      let ok = true;
      let bytes = 0;
      do {
        for (const seg of segs) {
          ok = socket.write(seg);
          bytes += seg.length;
        }
        if (bytes >= FLUSH_BYTES) break;
        segs = this.outbox.pullSegments(WRITE_BUDGET);
      } while (segs !== undefined);
      socket.uncork();
      if (!ok && socket.writableLength > 0) {
        // The kernel did not take it all: leave the rest in the lanes, so a control message
        // queued meanwhile still overtakes bulk data (only what the socket holds is ahead of it).
        // A batch the kernel took whole reports false too (it passed the high-water mark while
        // corked) but holds nothing back: go on; its 'drain' just flushes again.
        this.waitingDrain = true;
        return;
      }
      if (segs === undefined) return;
    }
  }

  /** Writes one pull's segments; several are corked into one writev. */
  private write(segs: Buffer[]): boolean {
    if (segs.length === 1) return this.socket.write(segs[0] as Buffer);
    this.socket.cork();
    let ok = true;
    for (const seg of segs) ok = this.socket.write(seg);
    this.socket.uncork();
    return ok;
  }

  /** Writes everything queued now, ignoring back-pressure and the send window (used before a graceful close). */
  flushNow(): void {
    if (this.closed) return;
    for (;;) {
      const segs = this.outbox.pullSegments(WRITE_BUDGET, true);
      if (!segs) return;
      this.write(segs);
    }
  }

  private onData(chunk: Buffer): void {
    if (this.closed) return;
    try {
      this.decoder.push(chunk);
      for (let f = this.decoder.next(); f !== undefined; f = this.decoder.next()) {
        if (this.closed) return;
        if (!this.events) {
          // Handshake phase.
          if (this.handshakeWaiter) {
            const w = this.handshakeWaiter;
            this.handshakeWaiter = undefined;
            w.resolve(f);
          } else {
            // The peer may finish its side first and send at once what the layers send a new
            // member (a full map per replicated table): bounded in frames and bytes, not refused.
            this.handshakeQueuedBytes += frameBytes(f);
            if (this.handshakeQueue.length >= MAX_EARLY_FRAMES || this.handshakeQueuedBytes > MAX_EARLY_BYTES) {
              throw new FrameError(ErrorCodes.FRAME_INVALID, `more than ${MAX_EARLY_FRAMES} frames or ${MAX_EARLY_BYTES} bytes before the handshake finished`);
            }
            this.handshakeQueue.push(f);
          }
          continue;
        }
        this.onFrame(f);
      }
      if (this.events) this.ackSoon();
    } catch (error) {
      this.terminate({ kind: 'protocol-error', error: error as Error });
    }
  }

  private onFrame(f: Frame): void {
    const events = this.events as LinkEvents;
    const type = f.type;
    if (type === FrameType.DATA) {
      const lane = dataByte(f, 0);
      if (lane !== 0 && lane < LANE_COUNT && ((this.deferredPerLane[lane] as number) > 0 || dataByte(f, 1) === FIN_FIRST || this.inbox.receiving(lane))) {
        this.deferredPerLane[lane] = (this.deferredPerLane[lane] as number) + 1;
        this.defer(f);
        return;
      }
      this.handleData(f);
    } else if (type === FrameType.LEAVE && this.deferredHead < this.deferred.length) {
      // Messages received before the LEAVE are delivered before it.
      this.defer(f);
    } else if (type === FrameType.ACK) {
      // Throws FrameError (a protocol error, closing the link) on a bad body or an over-ack.
      this.outbox.ack(decodeAck(f.body));
      this.flush();
    } else if (type === FrameType.LEAVE) {
      events.onLeave();
    } else {
      throw new FrameError(ErrorCodes.FRAME_INVALID, `unexpected frame type ${type} after the handshake`);
    }
  }

  private handleData(f: Frame): void {
    const msg = f.parts === undefined ? this.inbox.push(f.body) : this.inbox.pushParts(f.parts);
    if (this.inbox.unackedBytes >= this.ackEvery) this.sendAck();
    if (msg) (this.events as LinkEvents).onMessage(msg);
  }

  private defer(f: Frame): void {
    this.deferred.push(f);
    if (!this.drainScheduled) {
      this.drainScheduled = true;
      setImmediate(this.drainDeferredSlice);
    }
  }

  /** Handles up to `DEFERRED_FRAGMENTS_PER_TURN` deferred frames, then yields to the event loop. */
  private readonly drainDeferredSlice = (): void => {
    this.drainScheduled = false;
    if (this.closed) return;
    try {
      this.drainDeferred(DEFERRED_FRAGMENTS_PER_TURN);
      this.ackSoon();
    } catch (error) {
      this.terminate({ kind: 'protocol-error', error: error as Error });
      return;
    }
    if (this.deferredHead < this.deferred.length && !this.drainScheduled) {
      this.drainScheduled = true;
      setImmediate(this.drainDeferredSlice);
    }
  };

  private drainDeferred(max: number): void {
    let n = 0;
    while (this.deferredHead < this.deferred.length && n < max && !this.closed) {
      const f = this.deferred[this.deferredHead] as Frame;
      this.deferred[this.deferredHead++] = EMPTY_FRAME;
      if (f.type === FrameType.LEAVE) {
        (this.events as LinkEvents).onLeave();
        continue;
      }
      const lane = dataByte(f, 0);
      this.deferredPerLane[lane] = (this.deferredPerLane[lane] as number) - 1;
      n++;
      this.handleData(f);
    }
    if (this.deferredHead === this.deferred.length) {
      this.deferred = [];
      this.deferredHead = 0;
    }
  }

  /** Acks what the inbox consumed once this burst of reads is over (the peer may be waiting on it). */
  private ackSoon(): void {
    if (this.ackScheduled || this.inbox.unackedBytes === 0) return;
    this.ackScheduled = true;
    setImmediate(() => {
      this.ackScheduled = false;
      // A flush scheduled in this same turn (replies, the next request) carries the ACK in its
      // write: no extra system call, and no extra wake-up for the peer.
      if (!this.flushScheduled) this.sendAck();
    });
  }

  /** Writes an ACK for everything the inbox consumed since the last one, if anything. */
  private sendAck(): void {
    if (this.closed || this.inbox.unackedBytes === 0) return;
    let n = this.inbox.takeUnacked();
    while (n > 0) {
      const part = Math.min(n, MAX_ACK);
      this.socket.write(encodeAck(part));
      n -= part;
    }
  }

  /** Closes the link. `graceful` flushes queued data first. */
  close(reason: string, graceful = false): void {
    if (this.closed) return;
    if (graceful) {
      this.flushNow();
      this.socket.end();
      // A peer that never finishes the close must not hold us up.
      setTimeout(() => this.socket.destroy(), 1000).unref();
    } else {
      this.socket.destroy();
    }
    this.terminate({ kind: 'local', reason });
  }

  private terminate(cause: LinkCloseCause): void {
    if (this.closed) return;
    if (cause.kind !== 'protocol-error' && this.deferredHead < this.deferred.length) {
      // Received whole before the close: delivered, as they were before fragments were deferred.
      try {
        this.drainDeferred(Number.POSITIVE_INFINITY);
      } catch {
        // A bad fragment among them: the rest is dropped with the link.
      }
      if (this.closed) return;
    }
    this.deferred = [];
    this.deferredHead = 0;
    this.closed = true;
    this.closeCause = cause;
    // A partial frame is of no use once closed: drop it. (Frames already queued behind the
    // handshake stay, for activate() to deliver; at most 9, and they go with the link.)
    this.decoder.discard();
    if (cause.kind === 'protocol-error' || cause.kind === 'socket-closed') this.socket.destroy();
    if (this.handshakeWaiter) {
      const w = this.handshakeWaiter;
      this.handshakeWaiter = undefined;
      w.reject(this.closedError());
    }
    this.events?.onClose(cause);
  }
}

const EMPTY_FRAME: Frame = { type: FrameType.DATA, body: Buffer.alloc(0) };

/** Byte `i` of a DATA frame's body, whether whole or in parts (0 past the end: never a valid lane). */
function dataByte(f: Frame, i: number): number {
  if (f.parts === undefined) return (f.body[i] as number | undefined) ?? 0;
  for (const p of f.parts) {
    if (i < p.length) return p[i] as number;
    i -= p.length;
  }
  return 0;
}
