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
} as const;
/** One of the `FrameType` values. */
export type FrameType = (typeof FrameType)[keyof typeof FrameType];

/** Bytes in front of a frame body: the u32 length and the type byte. */
export const FRAME_HEADER_BYTES = 5;

const MIN_TYPE = FrameType.HELLO;
const MAX_TYPE = FrameType.REJECT;

/** A decoded frame. */
export interface Frame {
  /** The frame type. */
  type: FrameType;
  /** The frame body (without length and type). Often a view into the received chunk: do not write to it. */
  body: Buffer;
}

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

const EMPTY = Buffer.alloc(0);

/**
 * Incremental frame parser for one link. `push` the chunks as they arrive, then call `next`
 * until it returns `undefined`. Frames wholly inside one chunk come out as views (no copy);
 * only a frame straddling chunks is copied, once, when it is complete.
 *
 * A bad header (declared length 0 or over `maxFrameBytes`, unknown type) throws
 * `FrameError(FOUNDATION_FRAME_INVALID)` as soon as its 5 bytes are in, without waiting for the
 * body; the decoder is then dead and keeps throwing, since the stream can no longer be trusted.
 */
export class FrameDecoder {
  /** Largest accepted declared length (type byte + body). */
  readonly maxFrameBytes: number;
  // Pending chunks from `head` on; consumed chunks before `head` are dropped in batches so that
  // a frame spread over many chunks does not cost an array shift per chunk.
  private chunks: Buffer[] = [];
  private head = 0;
  private offset = 0;
  private buffered = 0;
  private failure: FrameError | undefined;

  constructor(maxFrameBytes: number) {
    if (!Number.isInteger(maxFrameBytes) || maxFrameBytes < 1 || maxFrameBytes > 0xffffffff) {
      throw new RangeError(`maxFrameBytes must be an integer in 1..2^32-1, got ${String(maxFrameBytes)}`);
    }
    this.maxFrameBytes = maxFrameBytes;
  }

  /** Bytes received but not yet returned as frames. */
  get bufferedBytes(): number {
    return this.buffered;
  }

  /** Adds received bytes. The chunk is kept by reference: the caller must not reuse it. */
  push(chunk: Uint8Array): void {
    if (this.failure) throw this.failure;
    if (chunk.length === 0) return;
    const buf = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.length);
    this.chunks.push(buf);
    this.buffered += buf.length;
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
    if (length === 0 || length > this.maxFrameBytes) {
      return this.fail(`Frame declares ${length} bytes; allowed 1..${this.maxFrameBytes}`);
    }
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
    return { type: type as FrameType, body: this.gather(total) };
  }

  private fail(message: string): never {
    this.failure = new FrameError(ErrorCodes.FRAME_INVALID, message);
    this.chunks = [];
    this.head = 0;
    this.offset = 0;
    this.buffered = 0;
    throw this.failure;
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
