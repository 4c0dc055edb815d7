/**
 * Per-link inbox: the receiving side of the lanes (`lanes.ts` is the sending side). Turns DATA
 * frame bodies back into messages, one fragment at a time, and counts what it consumed for the
 * link's ACK frames.
 */
import { ConfigError, ErrorCodes, FrameError } from '../errors.js';
import type { BodyPool } from './body-pool.js';
import { FRAME_HEADER_BYTES } from './framing.js';
import {
  DATA_HEADER_BYTES,
  FIN_FIRST,
  FIN_LAST,
  FIN_MORE,
  FIRST_FRAGMENT_EXTRA_BYTES,
  type InboundMessage,
  invalidFrame,
  LANE_COUNT,
  MESSAGE_HEADER_BYTES,
  parseMessageBody,
} from './message.js';
import { LANES } from './types.js';

const MiB = 1024 * 1024;

/** Options of an `Inbox`. */
export interface InboxOptions {
  /** Largest reassembled message body accepted, in bytes (default 64 MiB). */
  maxMessageBytes?: number;
  /**
   * Where bodies of large messages come from (shared by a node's links). Without it every body
   * is newly allocated.
   */
  bodyPool?: BodyPool;
}

/** Default `maxMessageBytes`. */
export const DEFAULT_MAX_MESSAGE_BYTES = 64 * MiB;

/**
 * The receiving side of a link: turns DATA frame bodies back into messages. A single-fragment
 * message is parsed in place (no copy). A message sent in several fragments declares its total
 * size in its first fragment (`FIN_FIRST`): the inbox allocates its body once, there, and copies
 * each fragment into it as the fragment arrives, so reassembly never copies more than one
 * fragment in one synchronous step (a 64 MiB message does not stall the event loop at its last
 * fragment), and the received socket chunks are not held until the end. It also counts the wire
 * bytes of non-control DATA frames consumed, for the link to return as ACK frames
 * (`takeUnacked`). After it throws, the link must be closed: the stream is out of sync.
 *
 * Memory: a peer that declares a message and stops sending pins its body (at most
 * `maxMessageBytes`) per lane until the link closes; peers are authenticated before any DATA frame.
 */
export class Inbox {
  /** Largest reassembled message body accepted. */
  readonly maxMessageBytes: number;
  /** Per lane: the body of the message being reassembled (undefined: none), its size, and the bytes filled. */
  private readonly bodies: Array<Buffer | undefined> = LANES.map(() => undefined);
  private readonly totals: number[] = LANES.map(() => 0);
  private readonly filled: number[] = LANES.map(() => 0);
  /** Per lane: how to hand the body back, when it came from the pool. */
  private readonly releases: Array<(() => void) | undefined> = LANES.map(() => undefined);
  private readonly bodyPool: BodyPool | undefined;
  private unacked = 0;
  private longestCopy = 0;

  constructor(options: InboxOptions = {}) {
    const max = options.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES;
    if (!Number.isInteger(max) || max < MESSAGE_HEADER_BYTES) {
      throw new ConfigError('maxMessageBytes', `must be an integer >= ${MESSAGE_HEADER_BYTES}, got ${String(max)}`);
    }
    this.maxMessageBytes = max;
    this.bodyPool = options.bodyPool;
  }

  /** Bytes received so far of partly received messages, all lanes. */
  get pendingBytes(): number {
    let sum = 0;
    for (const b of this.filled) sum += b;
    return sum;
  }

  /** Bytes allocated for partly received messages (their declared sizes), all lanes. */
  get reservedBytes(): number {
    let sum = 0;
    for (let lane = 0; lane < LANE_COUNT; lane++) if (this.bodies[lane] !== undefined) sum += this.totals[lane] as number;
    return sum;
  }

  /** Whether a message sent in several fragments is partly received on `lane`. */
  receiving(lane: number): boolean {
    return this.bodies[lane] !== undefined;
  }

  /** Most bytes copied by one `push`/`pushParts` so far (at most one fragment: tests check it). */
  get longestCopyBytes(): number {
    return this.longestCopy;
  }

  /** Wire bytes (frame header included) of non-control DATA frames consumed since the last `takeUnacked`. */
  get unackedBytes(): number {
    return this.unacked;
  }

  /** Returns `unackedBytes` and resets it: the amount for the next ACK frame. */
  takeUnacked(): number {
    const n = this.unacked;
    this.unacked = 0;
    return n;
  }

  /**
   * Takes the body of one DATA frame; returns the message it completes, if any.
   * @throws FrameError FOUNDATION_FRAME_INVALID (bad lane/fin byte, truncated header, fragments
   *   out of sequence or not adding up to the declared size) or FOUNDATION_MESSAGE_TOO_LARGE
   *   (message over `maxMessageBytes`).
   */
  push(frameBody: Buffer): InboundMessage | undefined {
    if (frameBody.length < DATA_HEADER_BYTES) invalidFrame(`DATA frame of ${frameBody.length} bytes has no lane/fin header`);
    const lane = frameBody[0] as number;
    const fin = frameBody[1] as number;
    if (lane >= LANE_COUNT) invalidFrame(`DATA frame names lane ${lane}; lanes are 0..${LANE_COUNT - 1}`);
    if (lane !== 0) this.unacked += FRAME_HEADER_BYTES + frameBody.length;
    if (fin === FIN_LAST && this.bodies[lane] === undefined) {
      const length = frameBody.length - DATA_HEADER_BYTES;
      if (length > this.maxMessageBytes) this.tooLarge(lane, length);
      return parseMessageBody(lane, frameBody, DATA_HEADER_BYTES);
    }
    let at = DATA_HEADER_BYTES;
    if (fin === FIN_FIRST) {
      if (frameBody.length < DATA_HEADER_BYTES + FIRST_FRAGMENT_EXTRA_BYTES) invalidFrame('first DATA fragment without its total length');
      this.begin(lane, frameBody.readUInt32BE(DATA_HEADER_BYTES), frameBody.length - DATA_HEADER_BYTES - FIRST_FRAGMENT_EXTRA_BYTES);
      at += FIRST_FRAGMENT_EXTRA_BYTES;
    } else {
      this.next(lane, fin, frameBody.length - DATA_HEADER_BYTES);
    }
    const body = this.bodies[lane] as Buffer;
    const n = frameBody.copy(body, this.filled[lane] as number, at);
    return this.advance(lane, n);
  }

  /**
   * Like `push`, for a DATA frame body given as pieces (`Frame.parts` of a decoder with
   * `dataParts`): each piece is copied straight into the message body (a single-fragment message
   * is gathered into one buffer).
   */
  pushParts(pieces: readonly Buffer[]): InboundMessage | undefined {
    let length = 0;
    for (const b of pieces) length += b.length;
    if (length < DATA_HEADER_BYTES) invalidFrame(`DATA frame of ${length} bytes has no lane/fin header`);
    const lane = byteAt(pieces, 0);
    const fin = byteAt(pieces, 1);
    if (lane >= LANE_COUNT) invalidFrame(`DATA frame names lane ${lane}; lanes are 0..${LANE_COUNT - 1}`);
    if (lane !== 0) this.unacked += FRAME_HEADER_BYTES + length;
    let skip = DATA_HEADER_BYTES;
    if (fin === FIN_LAST && this.bodies[lane] === undefined) {
      const chunk = length - DATA_HEADER_BYTES;
      if (chunk > this.maxMessageBytes) this.tooLarge(lane, chunk);
      const whole = Buffer.allocUnsafe(chunk);
      copyPieces(pieces, skip, whole, 0);
      this.noteCopy(chunk);
      return parseMessageBody(lane, whole);
    }
    if (fin === FIN_FIRST) {
      if (length < DATA_HEADER_BYTES + FIRST_FRAGMENT_EXTRA_BYTES) invalidFrame('first DATA fragment without its total length');
      const total = byteAt(pieces, 2) * 0x1000000 + ((byteAt(pieces, 3) << 16) | (byteAt(pieces, 4) << 8) | byteAt(pieces, 5));
      this.begin(lane, total, length - DATA_HEADER_BYTES - FIRST_FRAGMENT_EXTRA_BYTES);
      skip += FIRST_FRAGMENT_EXTRA_BYTES;
    } else {
      this.next(lane, fin, length - DATA_HEADER_BYTES);
    }
    const n = copyPieces(pieces, skip, this.bodies[lane] as Buffer, this.filled[lane] as number);
    return this.advance(lane, n);
  }

  /** A `FIN_FIRST` fragment with `chunk` bytes of a message of `total`: allocates its body. */
  private begin(lane: number, total: number, chunk: number): void {
    if (this.bodies[lane] !== undefined) invalidFrame(`a new message starts on lane "${LANES[lane] as string}" before the previous one ended`);
    if (total > this.maxMessageBytes) this.tooLarge(lane, total);
    // A first fragment that holds everything, or nothing, is never sent (and would let a peer
    // allocate for free).
    if (chunk === 0 || chunk >= total) invalidFrame(`first DATA fragment of ${chunk} bytes for a message of ${total}`);
    const lent = this.bodyPool?.take(total);
    this.bodies[lane] = lent === undefined ? Buffer.allocUnsafe(total) : lent.body;
    this.releases[lane] = lent?.release;
    this.totals[lane] = total;
    this.filled[lane] = 0;
  }

  /** Checks a `FIN_MORE` or `FIN_LAST` fragment of `chunk` bytes against the message in progress. */
  private next(lane: number, fin: number, chunk: number): void {
    if (fin > FIN_FIRST) invalidFrame(`DATA frame has fin byte ${fin}; expected 0, 1 or 2`);
    if (this.bodies[lane] === undefined) invalidFrame(`a DATA fragment on lane "${LANES[lane] as string}" continues no message`);
    const filled = (this.filled[lane] as number) + chunk;
    const total = this.totals[lane] as number;
    // Empty middle fragments are never sent and would let a peer grow nothing forever.
    if (fin === FIN_MORE && (chunk === 0 || filled >= total)) invalidFrame(`middle DATA fragment of ${chunk} bytes at ${filled - chunk} of ${total}`);
    if (fin === FIN_LAST && filled !== total) invalidFrame(`message on lane "${LANES[lane] as string}" ends at ${filled} bytes; it declared ${total}`);
  }

  /** After copying `n` bytes into the lane's body: the message when it is complete. */
  private advance(lane: number, n: number): InboundMessage | undefined {
    this.noteCopy(n);
    const filled = (this.filled[lane] as number) + n;
    if (filled < (this.totals[lane] as number)) {
      this.filled[lane] = filled;
      return undefined;
    }
    const body = this.bodies[lane] as Buffer;
    const release = this.releases[lane];
    this.bodies[lane] = undefined;
    this.releases[lane] = undefined;
    this.totals[lane] = 0;
    this.filled[lane] = 0;
    return parseMessageBody(lane, body, 0, release);
  }

  private noteCopy(n: number): void {
    if (n > this.longestCopy) this.longestCopy = n;
  }

  private tooLarge(lane: number, bytes: number): never {
    this.bodies[lane] = undefined;
    this.totals[lane] = 0;
    this.filled[lane] = 0;
    throw new FrameError(
      ErrorCodes.MESSAGE_TOO_LARGE,
      `Message on lane "${LANES[lane] as string}" of ${bytes} bytes; maxMessageBytes is ${this.maxMessageBytes}`,
    );
  }

  /** Forgets partly received messages (the link was reset); pooled bodies go back (nothing else saw them). */
  reset(): void {
    for (let lane = 0; lane < LANE_COUNT; lane++) {
      this.releases[lane]?.();
      this.releases[lane] = undefined;
      this.bodies[lane] = undefined;
      this.totals[lane] = 0;
      this.filled[lane] = 0;
    }
  }
}

/** Byte `i` of pieces taken as one sequence (`i` within their total length). */
function byteAt(pieces: readonly Buffer[], i: number): number {
  for (const b of pieces) {
    if (i < b.length) return b[i] as number;
    i -= b.length;
  }
  return 0;
}

/** Copies pieces (as one sequence, from byte `skip` on) into `target` at `at`; returns the bytes copied. */
function copyPieces(pieces: readonly Buffer[], skip: number, target: Buffer, at: number): number {
  let n = 0;
  for (const b of pieces) {
    if (skip >= b.length) {
      skip -= b.length;
      continue;
    }
    n += b.copy(target, at + n, skip);
    skip = 0;
  }
  return n;
}
