/**
 * One authenticated connection to one peer: socket, frame decoder, outbox (lanes) and inbox
 * (reassembly). The link knows nothing about membership; the mesh decides what a close means.
 */
import type { Socket } from 'node:net';
import { FrameError, HandshakeError } from '../errors.js';
import type { HandshakeChannel, HandshakeResult } from './handshake.js';
import { FrameDecoder, FrameType, encodeFrame } from './framing.js';
import { Inbox, Outbox, type OutboxOptions } from './lanes.js';
import type { InboundMessage } from './message.js';

export interface LinkOptions {
  maxFrameBytes: number;
  maxMessageBytes: number;
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

export class Link {
  readonly remote: string;
  readonly outbox: Outbox;
  handshake?: HandshakeResult;
  private readonly decoder: FrameDecoder;
  private readonly inbox: Inbox;
  private events?: LinkEvents;
  private handshakeWaiter?: { resolve: (f: { type: number; body: Buffer }) => void; reject: (e: Error) => void };
  private handshakeQueue: { type: number; body: Buffer }[] = [];
  private flushScheduled = false;
  private waitingDrain = false;
  private closed = false;
  private closeCause?: LinkCloseCause;

  constructor(
    readonly socket: Socket,
    readonly direction: 'inbound' | 'outbound',
    private readonly opts: LinkOptions,
  ) {
    this.remote = `${socket.remoteAddress}:${socket.remotePort}`;
    this.decoder = new FrameDecoder(opts.maxFrameBytes);
    this.inbox = new Inbox({ maxMessageBytes: opts.maxMessageBytes });
    this.outbox = new Outbox({ ...opts.outbox, onDrain: (lane: number) => this.events?.onDrain(lane) });
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
    };
  }

  private closedError(): HandshakeError {
    const cause = this.closeCause;
    const detail = cause?.kind === 'protocol-error' ? cause.error.message : cause?.kind === 'socket-closed' && cause.error ? cause.error.message : 'connection closed';
    return new HandshakeError('protocol', `connection closed during the handshake (${detail})`);
  }

  /** Switches from the handshake to the data phase. */
  activate(result: HandshakeResult, events: LinkEvents): void {
    this.handshake = result;
    this.events = events;
    // Data frames that raced in right behind the last handshake frame.
    const early = this.handshakeQueue;
    this.handshakeQueue = [];
    for (const f of early) this.onFrame(f.type, f.body);
    if (this.closed && this.closeCause) events.onClose(this.closeCause);
  }

  /** Queues one message. Returns false when the lane is over its high-water mark. */
  send(lane: number, flags: number, corrId: number, topic: string, payload: Uint8Array): boolean {
    // The peer would close the link on an oversized message; refuse it here, at the call site.
    // (Every node of a cluster is expected to share maxMessageBytes.)
    if (payload.length + 262 > this.opts.maxMessageBytes) {
      throw new FrameError(
        'FOUNDATION_MESSAGE_TOO_LARGE',
        `message of ${payload.length} bytes on topic "${topic}" exceeds maxMessageBytes (${this.opts.maxMessageBytes}); split it or raise maxMessageBytes on every node`,
      );
    }
    const below = this.outbox.enqueue(lane, flags, corrId, topic, payload);
    this.scheduleFlush();
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

  private flush(): void {
    if (this.waitingDrain || this.closed) return;
    for (;;) {
      const buf = this.outbox.pull(WRITE_BUDGET);
      if (!buf) return;
      if (!this.socket.write(buf)) {
        // Leave the rest in the lanes, so a control message queued meanwhile still
        // overtakes bulk data: only what the socket already holds is ahead of it.
        this.waitingDrain = true;
        return;
      }
    }
  }

  /** Writes everything queued now, ignoring back-pressure (used before a graceful close). */
  flushNow(): void {
    for (;;) {
      const buf = this.outbox.pull(WRITE_BUDGET);
      if (!buf) return;
      this.socket.write(buf);
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
            if (this.handshakeQueue.length > 8) throw new FrameError('FOUNDATION_FRAME_INVALID', 'too many frames before the handshake finished');
            this.handshakeQueue.push(f);
          }
          continue;
        }
        this.onFrame(f.type, f.body);
      }
    } catch (error) {
      this.terminate({ kind: 'protocol-error', error: error as Error });
    }
  }

  private onFrame(type: number, body: Buffer): void {
    const events = this.events as LinkEvents;
    if (type === FrameType.DATA) {
      const msg = this.inbox.push(body);
      if (msg) events.onMessage(msg);
    } else if (type === FrameType.LEAVE) {
      events.onLeave();
    } else {
      throw new FrameError('FOUNDATION_FRAME_INVALID', `unexpected frame type ${type} after the handshake`);
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
    this.closed = true;
    this.closeCause = cause;
    if (cause.kind === 'protocol-error' || cause.kind === 'socket-closed') this.socket.destroy();
    if (this.handshakeWaiter) {
      const w = this.handshakeWaiter;
      this.handshakeWaiter = undefined;
      w.reject(this.closedError());
    }
    this.events?.onClose(cause);
  }
}
