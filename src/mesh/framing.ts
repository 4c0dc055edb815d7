/**
 * Link-level framing: `[u32 BE length][u8 type][body...]`, where `length` counts the type byte
 * plus the body. Everything on a mesh link, handshake included, travels in these frames.
 */
import { ErrorCodes, FrameError } from '../errors.js';

/** Frame types. Any other value on the wire is a protocol error. */
export const FrameType = {
  /** Handshake step; msgpack body. */
  HELLO: 1,
  /** A fragment of a message (see message.ts); body is `[u8 lane][u8 fin][chunk]`. */
  DATA: 2,
  /** The sender is leaving gracefully; msgpack body. */
  LEAVE: 3,
  /** The handshake was refused; msgpack body carrying the reason. */
  REJECT: 4,
  /**
   * Flow control (protocol version 2): body `[u32 BE bytes]`, the wire bytes (frame header
   * included) of non-control DATA frames the sender of the ACK has consumed since its previous
   * ACK. Returns credit to the peer's send window. See `Outbox.ack`.
   */
  ACK: 5,
} as const;
/** One of the `FrameType` values. */
export type FrameType = (typeof FrameType)[keyof typeof FrameType];

/** Bytes in front of a frame body: the u32 length and the type byte. */
export const FRAME_HEADER_BYTES = 5;

const MIN_TYPE = FrameType.HELLO;
const MAX_TYPE = FrameType.ACK;

/** Bytes of an ACK frame body. */
export const ACK_BODY_BYTES = 4;

/** A decoded frame. */
export interface Frame {
  /** The frame type. */
  type: FrameType;
  /**
   * The frame body (without length and type). Often a view into the received chunk: do not
   * write to it. Empty when `parts` is set.
   */
  body: Buffer;
  /**
   * Only from a decoder created with `dataParts: true`, for a large DATA frame that straddles
   * received chunks: the body as views into those chunks, in order (not copied; `body` is then
   * empty). Lets the Inbox copy a fragment once, into the reassembled message.
   */
  parts?: Buffer[];
}

/** Options of a `FrameDecoder`. */
export interface FrameDecoderOptions {
  /**
   * Return DATA frames of at least `PARTS_MIN_BYTES` that straddle received chunks as `parts`
   * (views) instead of copying them into one buffer. Default false.
   */
  dataParts?: boolean;
  /**
   * Largest declared length (type byte + body) accepted until `lift()`: the limit while the peer
   * has not authenticated, so a stranger cannot make the link buffer a `maxFrameBytes` frame.
   * Default `maxFrameBytes` (no such phase).
   */
  initialLimit?: number;
}

/** Smallest straddling DATA frame body returned as `parts` (smaller ones are gathered: cheap). */
export const PARTS_MIN_BYTES = 4096;

/**
 * A peer trickling a frame a few bytes per read would otherwise cost a Buffer object (~200 bytes
 * of heap) per read: past this many pending chunks, while they hold at most
 * `COALESCE_MAX_BYTES`, they are copied into one. Larger pending data comes in large reads.
 */
const COALESCE_CHUNKS = 16;
/** See `COALESCE_CHUNKS`. */
const COALESCE_MAX_BYTES = 64 * 1024;

/** Whether `type` is a known frame type. */
export function isFrameType(type: number): type is FrameType {
  return type >= MIN_TYPE && type <= MAX_TYPE && (type | 0) === type;
}

/**
 * Writes a frame header at `offset` for a body of `bodyBytes` bytes (not counting the type
 * byte); returns the offset where the body goes. Lets callers build many frames into one buffer.
 */
export function writeFrameHeader(target: Uint8Array, offset: number, type: FrameType, bodyBytes: number): number {
  const length = bodyBytes + 1;
  target[offset] = length >>> 24;
  target[offset + 1] = (length >>> 16) & 0xff;
  target[offset + 2] = (length >>> 8) & 0xff;
  target[offset + 3] = length & 0xff;
  target[offset + 4] = type;
  return offset + FRAME_HEADER_BYTES;
}

/**
 * Builds one complete frame. For many small frames, prefer writing into one buffer with
 * `writeFrameHeader`. Takes any number so frame types read off the wire can be passed back;
 * an unknown type throws `FrameError(FOUNDATION_FRAME_INVALID)`.
 */
export function encodeFrame(type: number, body: Uint8Array): Buffer {
  if (!isFrameType(type)) throw new FrameError(ErrorCodes.FRAME_INVALID, `Unknown frame type ${String(type)}`);
  const out = Buffer.allocUnsafe(FRAME_HEADER_BYTES + body.length);
  writeFrameHeader(out, 0, type, body.length);
  out.set(body, FRAME_HEADER_BYTES);
  return out;
}

/** Builds an ACK frame returning `bytes` (1..2^32-1) of send window to the peer. */
export function encodeAck(bytes: number): Buffer {
  if (!Number.isInteger(bytes) || bytes < 1 || bytes > 0xffffffff) throw new RangeError(`ACK bytes must be in 1..2^32-1, got ${String(bytes)}`);
  const out = Buffer.allocUnsafe(FRAME_HEADER_BYTES + ACK_BODY_BYTES);
  writeFrameHeader(out, 0, FrameType.ACK, ACK_BODY_BYTES);
  out.writeUInt32BE(bytes, FRAME_HEADER_BYTES);
  return out;
}

/**
 * Reads the body of a received ACK frame. A body that is not exactly 4 bytes, or that acks 0
 * bytes (never sent), throws `FrameError(FOUNDATION_FRAME_INVALID)`.
 */
export function decodeAck(body: Buffer): number {
  if (body.length !== ACK_BODY_BYTES) throw new FrameError(ErrorCodes.FRAME_INVALID, `ACK frame body of ${body.length} bytes; expected ${ACK_BODY_BYTES}`);
  const bytes = body.readUInt32BE(0);
  if (bytes === 0) throw new FrameError(ErrorCodes.FRAME_INVALID, 'ACK frame acknowledges 0 bytes');
  return bytes;
}

const EMPTY = Buffer.alloc(0);

/**
 * Incremental frame parser for one link. `push` the chunks as they arrive, then call `next`
 * until it returns `undefined`. Frames wholly inside one chunk come out as views (no copy);
 * only a frame straddling chunks is copied, once, when it is complete (or, with `dataParts`, a
 * large DATA frame comes out as a list of views).
 *
 * A bad header (declared length 0 or over the current limit, unknown type) throws
 * `FrameError(FOUNDATION_FRAME_INVALID)` from the `push` that completes it, before the chunk is
 * kept and without waiting for the body; the decoder is then dead, holds nothing, and keeps
 * throwing, since the stream can no longer be trusted. The limit is `initialLimit` until `lift()`
 * (the handshake phase), then `maxFrameBytes`.
 */
export class FrameDecoder {
  /** Largest accepted declared length (type byte + body) once lifted. */
  readonly maxFrameBytes: number;
  private limit: number;
  // Pending chunks from `head` on; consumed chunks before `head` are dropped in batches so that
  // a frame spread over many chunks does not cost an array shift per chunk.
  private chunks: Buffer[] = [];
  private head = 0;
  private offset = 0;
  private buffered = 0;
  private failure: FrameError | undefined;
  private readonly dataParts: boolean;

  constructor(maxFrameBytes: number, options: FrameDecoderOptions = {}) {
    if (!Number.isInteger(maxFrameBytes) || maxFrameBytes < 1 || maxFrameBytes > 0xffffffff) {
      throw new RangeError(`maxFrameBytes must be an integer in 1..2^32-1, got ${String(maxFrameBytes)}`);
    }
    this.maxFrameBytes = maxFrameBytes;
    const initial = options.initialLimit ?? maxFrameBytes;
    if (!Number.isInteger(initial) || initial < 1 || initial > maxFrameBytes) {
      throw new RangeError(`initialLimit must be an integer in 1..maxFrameBytes (${maxFrameBytes}), got ${String(initial)}`);
    }
    this.limit = initial;
    this.dataParts = options.dataParts === true;
  }

  /** Bytes received but not yet returned as frames. */
  get bufferedBytes(): number {
    return this.buffered;
  }

  /** Received chunks still referenced (bounded for a trickling peer: see `COALESCE_CHUNKS`). */
  get chunksHeld(): number {
    return this.chunks.length - this.head;
  }

  /** Largest declared length accepted now: `initialLimit` until `lift()`, then `maxFrameBytes`. */
  get frameLimit(): number {
    return this.limit;
  }

  /** Accepts frames up to `maxFrameBytes` from now on (the peer has authenticated). */
  lift(): void {
    this.limit = this.maxFrameBytes;
  }

  /**
   * Drops everything buffered (the link closed): nothing received stays referenced by a decoder
   * that something still holds. Later calls throw `FrameError`.
   */
  discard(): void {
    if (!this.failure) this.failure = new FrameError(ErrorCodes.FRAME_INVALID, 'the frame decoder was discarded');
    this.release();
  }

  /**
   * Adds received bytes. The chunk is kept by reference: the caller must not reuse it. A chunk
   * that completes a bad header (over the current limit, say) throws here and is not kept.
   */
  push(chunk: Uint8Array): void {
    if (this.failure) throw this.failure;
    if (chunk.length === 0) return;
    const buf = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.length);
    const before = this.buffered;
    this.chunks.push(buf);
    this.buffered += buf.length;
    // The header of the pending frame just became complete: judge it now, not when asked for frames.
    if (before < FRAME_HEADER_BYTES && this.buffered >= FRAME_HEADER_BYTES) this.checkHeader();
    if (this.chunks.length - this.head > COALESCE_CHUNKS && this.buffered <= COALESCE_MAX_BYTES) this.coalesce();
  }

  /** Throws (and drops everything) if the header at the read position is bad. */
  private checkHeader(): void {
    const length = this.byteAt(0) * 0x1000000 + ((this.byteAt(1) << 16) | (this.byteAt(2) << 8) | this.byteAt(3));
    if (length === 0 || length > this.limit) this.fail(`Frame declares ${length} bytes; allowed 1..${this.limit}`);
    const type = this.byteAt(4);
    if (type < MIN_TYPE || type > MAX_TYPE) this.fail(`Unknown frame type ${type}`);
  }

  /** Copies the pending bytes into one buffer (see `COALESCE_CHUNKS`). */
  private coalesce(): void {
    const pending = this.chunks.slice(this.head);
    if (this.offset > 0) pending[0] = (pending[0] as Buffer).subarray(this.offset);
    this.chunks = [Buffer.concat(pending, this.buffered)];
    this.head = 0;
    this.offset = 0;
  }

  /** Returns the next complete frame, or `undefined` if more bytes are needed. */
  next(): Frame | undefined {
    if (this.buffered < FRAME_HEADER_BYTES) {
      if (this.failure) throw this.failure;
      return undefined;
    }
    const chunk = this.chunks[this.head] as Buffer;
    const o = this.offset;
    let length: number;
    let type: number;
    if (chunk.length - o >= FRAME_HEADER_BYTES) {
      length = (chunk[o] as number) * 0x1000000 + (((chunk[o + 1] as number) << 16) | ((chunk[o + 2] as number) << 8) | (chunk[o + 3] as number));
      type = chunk[o + 4] as number;
    } else {
      length = this.byteAt(0) * 0x1000000 + ((this.byteAt(1) << 16) | (this.byteAt(2) << 8) | this.byteAt(3));
      type = this.byteAt(4);
    }
    if (length === 0 || length > this.limit) return this.fail(`Frame declares ${length} bytes; allowed 1..${this.limit}`);
    if (type < MIN_TYPE || type > MAX_TYPE) return this.fail(`Unknown frame type ${type}`);
    const total = 4 + length;
    if (this.buffered < total) return undefined;
    this.buffered -= total;
    if (chunk.length - o >= total) {
      const body = chunk.subarray(o + FRAME_HEADER_BYTES, o + total);
      if (o + total === chunk.length) this.dropHead();
      else this.offset = o + total;
      return { type: type as FrameType, body };
    }
    if (this.dataParts && type === FrameType.DATA && total - FRAME_HEADER_BYTES >= PARTS_MIN_BYTES) {
      return { type: type as FrameType, body: EMPTY, parts: this.collect(total) };
    }
    return { type: type as FrameType, body: this.gather(total) };
  }

  private fail(message: string): never {
    this.failure = new FrameError(ErrorCodes.FRAME_INVALID, message);
    this.release();
    throw this.failure;
  }

  private release(): void {
    this.chunks = [];
    this.head = 0;
    this.offset = 0;
    this.buffered = 0;
  }

  /** Byte `i` past the read position, across chunks; only used for a header split over chunks. */
  private byteAt(i: number): number {
    let h = this.head;
    let pos = this.offset + i;
    for (;;) {
      const c = this.chunks[h] as Buffer;
      if (pos < c.length) return c[pos] as number;
      pos -= c.length;
      h++;
    }
  }

  private dropHead(): void {
    this.chunks[this.head] = EMPTY;
    this.head++;
    this.offset = 0;
    if (this.head === this.chunks.length) {
      this.chunks.length = 0;
      this.head = 0;
    } else if (this.head >= 64 && this.head * 2 >= this.chunks.length) {
      this.chunks.splice(0, this.head);
      this.head = 0;
    }
  }

  /** Consumes a frame that straddles chunks, returning its body as views into them. */
  private collect(total: number): Buffer[] {
    const parts: Buffer[] = [];
    let skip = FRAME_HEADER_BYTES;
    let need = total;
    while (need > 0) {
      const c = this.chunks[this.head] as Buffer;
      const o = this.offset;
      const take = Math.min(c.length - o, need);
      const from = o + Math.min(skip, take);
      const to = o + take;
      if (to > from) parts.push(c.subarray(from, to));
      skip -= Math.min(skip, take);
      need -= take;
      if (o + take === c.length) this.dropHead();
      else this.offset = o + take;
    }
    return parts;
  }

  /** Copies a frame that straddles chunks into one new buffer and consumes it. */
  private gather(total: number): Buffer {
    const body = Buffer.allocUnsafe(total - FRAME_HEADER_BYTES);
    let skip = FRAME_HEADER_BYTES;
    let written = 0;
    let need = total;
    while (need > 0) {
      const c = this.chunks[this.head] as Buffer;
      const o = this.offset;
      const take = Math.min(c.length - o, need);
      const from = o + Math.min(skip, take);
      const to = o + take;
      if (to > from) {
        c.copy(body, written, from, to);
        written += to - from;
      }
      skip -= Math.min(skip, take);
      need -= take;
      if (o + take === c.length) this.dropHead();
      else this.offset = o + take;
    }
    return body;
  }
}
