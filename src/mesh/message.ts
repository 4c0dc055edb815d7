/**
 * Messages carried in DATA frames.
 *
 * DATA frame body: `[u8 lane][u8 fin][chunk...]`. A message's serialized body is cut into
 * chunks of at most `fragmentBytes`. A message that fits in one chunk is sent with fin=1 (`FIN_LAST`).
 * A longer one starts with fin=2 (`FIN_FIRST`), whose frame body is
 * `[u8 lane][u8 2][u32 BE total body bytes][chunk...]`, continues with fin=0 (`FIN_MORE`) and ends
 * with fin=1 (protocol version 3): the receiver knows the size from the first fragment, so it
 * allocates the message once and copies each fragment into it as it arrives (never the whole
 * message in one step). A lane carries one message at a time, so the receiver appends chunks per
 * lane until fin=1, while fragments of different lanes interleave freely.
 *
 * Serialized message body: `[u8 flags][u32 BE corrId][u8 topicLength][topic utf8][payload]`.
 */
import { ErrorCodes, FrameError, SerializationError } from '../errors.js';
import { LANES } from './types.js';

/** Bits of a message's `flags` byte. */
export const MessageFlags = {
  /** The payload is raw bytes given by the caller, not msgpack. */
  RAW: 1,
  /** The sender waits for a reply carrying the same `corrId`. */
  REQUEST: 2,
  /** This is the reply to the request with the same `corrId`. */
  REPLY: 4,
  /** The reply carries an encoded error instead of a result. */
  ERROR: 8,
} as const;

/** Bytes of the message header before the topic: flags, corrId, topic length. */
export const MESSAGE_HEADER_BYTES = 6;
/** Bytes of the DATA frame body before the chunk: lane and fin. */
export const DATA_HEADER_BYTES = 2;
/** Longest topic, in UTF-8 bytes. */
export const MAX_TOPIC_BYTES = 255;
/** `fin` byte of a middle fragment. */
export const FIN_MORE = 0;
/** `fin` byte of the last fragment, or of a message sent whole in one. */
export const FIN_LAST = 1;
/** `fin` byte of the first fragment of a message sent in several: the u32 total body length follows. */
export const FIN_FIRST = 2;
/** Bytes of the total-length field after the DATA header of a `FIN_FIRST` fragment. */
export const FIRST_FRAGMENT_EXTRA_BYTES = 4;
/** Default largest chunk of a message body per DATA frame. */
export const DEFAULT_FRAGMENT_BYTES = 65536;
/** Number of lanes on a link. */
export const LANE_COUNT = LANES.length;

/** A message as the sender hands it over. */
export interface OutboundMessage {
  /** Lane number, 0..3 (control, events, telemetry, bulk). */
  lane: number;
  /** `MessageFlags` bits. */
  flags: number;
  /** Correlation id linking a request to its reply; 0 when unused. Unsigned 32-bit. */
  corrId: number;
  /** Topic the receiver dispatches on; at most 255 UTF-8 bytes. */
  topic: string;
  /** msgpack-encoded value, or raw bytes when `flags` has RAW. */
  payload: Uint8Array;
}

/**
 * Raw bytes given as a small `head` and a `body` sent back to back: a gather write. The receiver
 * gets them as one raw payload (`head` then `body`, contiguous, as if the sender had
 * concatenated them), but the sender never copies `body`: the lanes cut it into fragments where
 * it lies (large slices go to the socket as views). For a layer that puts its own header in
 * front of a large payload (pubsub's frame) without a whole-payload copy per send.
 * The caller must not modify either array after handing it to the mesh.
 */
export class GatherPayload {
  /** `head.length + body.length`. */
  readonly length: number;
  constructor(
    readonly head: Uint8Array,
    readonly body: Uint8Array,
  ) {
    this.length = head.length + body.length;
  }

  /** The bytes as one new buffer: a copy, for cold paths (a message to this node itself). */
  concat(): Buffer {
    const out = Buffer.allocUnsafe(this.length);
    out.set(this.head, 0);
    out.set(this.body, this.head.length);
    return out;
  }
}

/** A complete message as reassembled by the receiver. */
export interface InboundMessage {
  /** Lane it arrived on. */
  lane: number;
  /** `MessageFlags` bits. */
  flags: number;
  /** Correlation id (unsigned 32-bit). */
  corrId: number;
  /** Topic. */
  topic: string;
  /** Payload bytes; usually a view into the received frame: do not write to it. */
  payload: Buffer;
  /**
   * Present when the message's body is pooled memory (a large message, see body-pool.ts): hands
   * it back for a later message. Only whoever knows that nothing references the payload any
   * more may call it; never calling it is safe.
   */
  release: (() => void) | undefined;
}

const EMPTY = Buffer.alloc(0);
const TOPIC_CACHE_LIMIT = 1024;
const topicCache = new Map<string, Buffer>();

/**
 * UTF-8 bytes of a topic, cached because the same few topics repeat on every message.
 * Throws `SerializationError` at the caller if the topic is over 255 bytes.
 */
export function topicBytes(topic: string): Buffer {
  let buf = topicCache.get(topic);
  if (buf !== undefined) return buf;
  if (typeof topic !== 'string') throw new SerializationError('topic', `a topic must be a string, got ${typeof topic}`);
  buf = topic.length === 0 ? EMPTY : Buffer.from(topic, 'utf8');
  if (buf.length > MAX_TOPIC_BYTES) {
    throw new SerializationError('topic', `topic "${topic.slice(0, 40)}..." is ${buf.length} bytes in UTF-8; the limit is ${MAX_TOPIC_BYTES}`);
  }
  // Clearing wholesale keeps the cache bounded without LRU bookkeeping on the hot path; a
  // workload with more than a thousand live topics just pays the encoding again.
  if (topicCache.size >= TOPIC_CACHE_LIMIT) topicCache.clear();
  topicCache.set(topic, buf);
  return buf;
}

/** Length of a serialized message body. */
export function messageBodyLength(topic: Uint8Array, payloadLength: number): number {
  return MESSAGE_HEADER_BYTES + topic.length + payloadLength;
}

/** Writes flags, corrId, topic length and topic at `offset`; returns the offset where the payload goes. */
export function writeMessageHeader(target: Uint8Array, offset: number, flags: number, corrId: number, topic: Uint8Array): number {
  target[offset] = flags;
  target[offset + 1] = corrId >>> 24;
  target[offset + 2] = (corrId >>> 16) & 0xff;
  target[offset + 3] = (corrId >>> 8) & 0xff;
  target[offset + 4] = corrId & 0xff;
  const n = topic.length;
  target[offset + 5] = n;
  let p = offset + MESSAGE_HEADER_BYTES;
  // Topics are short: a byte loop beats the fixed cost of TypedArray#set.
  for (let i = 0; i < n; i++) target[p++] = topic[i] as number;
  return p;
}

/** Serializes a whole message body into a new buffer (convenient; the Outbox writes frames directly instead). */
export function encodeMessageBody(flags: number, corrId: number, topic: string, payload: Uint8Array): Buffer {
  checkHeaderFields(flags, corrId);
  const t = topicBytes(topic);
  const out = Buffer.allocUnsafe(messageBodyLength(t, payload.length));
  const p = writeMessageHeader(out, 0, flags, corrId, t);
  out.set(payload, p);
  return out;
}

/** Throws `RangeError` unless flags is a byte and corrId an unsigned 32-bit integer. */
export function checkHeaderFields(flags: number, corrId: number): void {
  if ((flags & 0xff) !== flags) throw new RangeError(`message flags must be 0..255, got ${String(flags)}`);
  if (corrId >>> 0 !== corrId) throw new RangeError(`corrId must be an unsigned 32-bit integer, got ${String(corrId)}`);
}

// Receive-side topic cache. Decoding a short UTF-8 string costs more than everything else in
// parsing a small message, and topics repeat, so decoded strings are kept in a direct-mapped
// table keyed by a hash of the bytes (and checked byte for byte: a collision just decodes).
const TOPIC_SLOTS = 512;
const slotBytes: (Buffer | undefined)[] = new Array<Buffer | undefined>(TOPIC_SLOTS).fill(undefined);
const slotStrings: string[] = new Array<string>(TOPIC_SLOTS).fill('');

/**
 * The UTF-8 string of `length` bytes at `start` in `buf`, from a small cache of recently decoded
 * strings (topics repeat: decoding costs more than everything else in parsing a small message).
 */
export function decodeTopic(buf: Buffer, start: number, length: number): string {
  let h = length;
  const end = start + length;
  for (let i = start; i < end; i++) h = Math.imul(h ^ (buf[i] as number), 0x01000193);
  const slot = (h ^ (h >>> 15)) & (TOPIC_SLOTS - 1);
  const cached = slotBytes[slot];
  if (cached !== undefined && cached.length === length) {
    let same = true;
    for (let i = 0; i < length; i++) {
      if (cached[i] !== buf[start + i]) {
        same = false;
        break;
      }
    }
    if (same) return slotStrings[slot] as string;
  }
  const topic = buf.toString('utf8', start, end);
  // Own copy: keeping a view would pin the whole received chunk in memory.
  slotBytes[slot] = Buffer.from(buf.subarray(start, end));
  slotStrings[slot] = topic;
  return topic;
}

/** Throws the `FOUNDATION_FRAME_INVALID` error of a malformed frame or message (the link closes on it). */
export function invalidFrame(message: string): never {
  throw new FrameError(ErrorCodes.FRAME_INVALID, message);
}

/**
 * Parses a serialized message body that starts at `start` in `buf` and runs to its end (the
 * offset lets a single-fragment DATA frame be parsed in place). The payload is a view into
 * `buf` (no copy). Throws `FrameError(FOUNDATION_FRAME_INVALID)` if the body is truncated.
 * `release` is the pooled body's (see `InboundMessage.release`).
 */
export function parseMessageBody(lane: number, buf: Buffer, start = 0, release?: () => void): InboundMessage {
  if (buf.length - start < MESSAGE_HEADER_BYTES) invalidFrame(`Message body of ${buf.length - start} bytes is shorter than its header`);
  const flags = buf[start] as number;
  const corrId = (buf[start + 1] as number) * 0x1000000 + (((buf[start + 2] as number) << 16) | ((buf[start + 3] as number) << 8) | (buf[start + 4] as number));
  const topicLength = buf[start + 5] as number;
  const topicStart = start + MESSAGE_HEADER_BYTES;
  const payloadStart = topicStart + topicLength;
  if (payloadStart > buf.length) invalidFrame(`Message topic of ${topicLength} bytes runs past the end of the body`);
  const topic = topicLength === 0 ? '' : decodeTopic(buf, topicStart, topicLength);
  return { lane, flags, corrId, topic, payload: buf.subarray(payloadStart), release };
}

/**
 * Cuts a serialized message body into DATA frame bodies, each chunk at most `fragmentBytes`:
 * `[lane][1][body]` when it fits in one, else `[lane][2][u32 total][chunk]`, `[lane][0][chunk]`...,
 * `[lane][1][chunk]`. A simple, copying helper for tests and cold paths; the Outbox writes
 * fragments straight into its output buffer.
 */
export function fragmentMessage(lane: number, body: Uint8Array, fragmentBytes = DEFAULT_FRAGMENT_BYTES): Buffer[] {
  if (!Number.isInteger(fragmentBytes) || fragmentBytes < 1) throw new RangeError('fragmentBytes must be a positive integer');
  const out: Buffer[] = [];
  let offset = 0;
  const several = body.length > fragmentBytes;
  do {
    const n = Math.min(fragmentBytes, body.length - offset);
    const first = several && offset === 0;
    const head = DATA_HEADER_BYTES + (first ? FIRST_FRAGMENT_EXTRA_BYTES : 0);
    const frag = Buffer.allocUnsafe(head + n);
    frag[0] = lane;
    frag[1] = first ? FIN_FIRST : offset + n === body.length ? FIN_LAST : FIN_MORE;
    if (first) frag.writeUInt32BE(body.length, DATA_HEADER_BYTES);
    frag.set(body.subarray(offset, offset + n), head);
    out.push(frag);
    offset += n;
  } while (offset < body.length);
  return out;
}
