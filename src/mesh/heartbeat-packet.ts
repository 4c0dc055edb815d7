/**
 * Wire format of the UDP heartbeat packet, and its authentication.
 *
 *     offset size
 *      0     2   magic 'FH'
 *      2     1   version (2)
 *      3     1   type: 3 = heartbeat (carries the echo of the last heartbeat received)
 *      4     8   linkId (random, shared by both ends of a mesh link)
 *     12     4   seq, u32 big-endian
 *     16     8   sendTimeMicros, f64 big-endian (sender's clock)
 *     24     8   echoTimeMicros, f64 big-endian: `sendTimeMicros` of the last heartbeat the sender
 *                received on this link (0: none yet)
 *     32     4   echoHoldMicros, u32 big-endian: how long the sender held that echo before this
 *                send (saturating)
 *     36     4   mainLagMs, u32 big-endian (sender's main-thread lag, saturating)
 *     40     1   flags
 *     41    16   HMAC-SHA256(sessionKey, bytes 0..40), truncated to 16 bytes
 *     57         (total)
 *
 * One datagram per direction and interval: each end sends its own heartbeat on its own timer and
 * echoes the last one it received, so the round trip is `now − echoTime − echoHold` on arrival
 * and nobody answers a packet with a packet. (Version 1 had a ping and an immediate pong: two
 * datagrams each way, twice the wake-ups.)
 *
 * Every field is covered by the MAC, so an attacker without the link's session key can neither
 * forge nor alter a heartbeat. Replays are stopped by the receiver with a {@link ReplayWindow}
 * on `seq`; reflection (sending a node's own packet back to it — both ends share the key) is
 * stopped by the {@link FLAG_SENDER_LOW} direction bit.
 *
 * `decodeHeartbeat` is fed raw datagrams from the network: it never throws, whatever the input.
 */

import { createHmac, timingSafeEqual } from 'node:crypto';

/** 'FH' (Foundation Heartbeat). */
export const HEARTBEAT_MAGIC_0 = 0x46;
export const HEARTBEAT_MAGIC_1 = 0x48;
/** Current packet version. Packets of other versions (version 1's ping/pong) are rejected as malformed. */
export const HEARTBEAT_VERSION = 2;
/** Type byte of a heartbeat. */
export const HEARTBEAT_TYPE = 3;
/** Length of the link id, in bytes (16 hex characters). */
export const LINK_ID_BYTES = 8;
/** Length of the session key, in bytes. */
export const SESSION_KEY_BYTES = 32;
/** Length of the truncated HMAC, in bytes. */
export const HEARTBEAT_MAC_BYTES = 16;
/** Length of the authenticated part of the packet. */
export const HEARTBEAT_BODY_BYTES = 41;
/** Total packet length: every valid heartbeat is exactly this long. */
export const HEARTBEAT_PACKET_BYTES = HEARTBEAT_BODY_BYTES + HEARTBEAT_MAC_BYTES;
/** Largest value of the u32 fields (seq, echoHoldMicros, mainLagMs). */
export const U32_MAX = 0xffff_ffff;

/**
 * Direction bit: set when the sender's node name sorts before the receiver's (JS string
 * comparison). Both ends of a link share one key, so without it an attacker could bounce a
 * node's own heartbeats back at it and fake the peer's liveness. Receivers that know their own
 * name check that the bit is the opposite of the one they would send.
 */
export const FLAG_SENDER_LOW = 0x01;

/**
 * "Send me two copies": set by a receiver that saw heartbeats of this link go missing recently
 * (a gap in the sequence numbers). The sender then sends every heartbeat twice, so random loss
 * must take both copies to cost an arrival; on a clean link one copy is enough.
 */
export const FLAG_WANT_COPIES = 0x02;

/** Fields of a heartbeat packet. */
export interface HeartbeatFields {
  /** 16 hex characters (decoded packets carry lower case). */
  readonly linkId: string;
  /** Sequence number, u32, strictly increasing per link and direction. */
  readonly seq: number;
  /** Sender's clock at send time, in microseconds (finite, ≥ 0). */
  readonly sendTimeMicros: number;
  /** `sendTimeMicros` of the last heartbeat the sender received on this link; 0 when none yet. */
  readonly echoTimeMicros: number;
  /** Microseconds the sender held that echo before sending (u32, saturates at {@link U32_MAX}); 0 without an echo. */
  readonly echoHoldMicros: number;
  /** Sender's main-thread lag in ms (u32, saturates at {@link U32_MAX}). */
  readonly mainLagMs: number;
  /** Flag bits ({@link FLAG_SENDER_LOW}, {@link FLAG_WANT_COPIES}); unknown bits are carried and ignored. */
  readonly flags: number;
}

/** A decoded, authenticated heartbeat. */
export type HeartbeatPacket = HeartbeatFields;

/** Why a datagram was rejected by {@link decodeHeartbeat}. */
export type HeartbeatDecodeError = 'malformed' | 'unknown-link' | 'bad-mac';

/** Rejection returned by {@link decodeHeartbeat}. */
export interface HeartbeatDecodeFailure {
  readonly error: HeartbeatDecodeError;
}

/** Result of {@link decodeHeartbeat}: narrow with `'error' in result`. */
export type HeartbeatDecodeResult = HeartbeatPacket | HeartbeatDecodeFailure;

const LINK_ID_RE = /^[0-9a-f]{16}$/i;

function mac(key: Uint8Array, body: Uint8Array): Buffer {
  return createHmac('sha256', key).update(body).digest().subarray(0, HEARTBEAT_MAC_BYTES);
}

/** A measurement, not an identifier: saturate into a u32 instead of refusing to heartbeat. */
function saturateU32(v: number): number {
  return Number.isFinite(v) ? Math.min(U32_MAX, Math.max(0, Math.round(v))) : U32_MAX;
}

/**
 * Encodes and authenticates a heartbeat.
 * @throws RangeError / TypeError when a field is out of range (a local programming error).
 */
export function encodeHeartbeat(fields: HeartbeatFields, sessionKey: Uint8Array): Buffer {
  if (!(sessionKey instanceof Uint8Array) || sessionKey.length !== SESSION_KEY_BYTES) {
    throw new TypeError(`sessionKey must be ${SESSION_KEY_BYTES} bytes`);
  }
  if (typeof fields.linkId !== 'string' || !LINK_ID_RE.test(fields.linkId)) {
    throw new TypeError('linkId must be 16 hex characters');
  }
  if (!Number.isInteger(fields.seq) || fields.seq < 0 || fields.seq > U32_MAX) {
    throw new RangeError(`seq must be a u32, got ${fields.seq}`);
  }
  if (!Number.isFinite(fields.sendTimeMicros) || fields.sendTimeMicros < 0) {
    throw new RangeError('sendTimeMicros must be finite and >= 0');
  }
  if (!Number.isFinite(fields.echoTimeMicros) || fields.echoTimeMicros < 0) {
    throw new RangeError('echoTimeMicros must be finite and >= 0');
  }

  const buf = Buffer.allocUnsafe(HEARTBEAT_PACKET_BYTES);
  buf[0] = HEARTBEAT_MAGIC_0;
  buf[1] = HEARTBEAT_MAGIC_1;
  buf[2] = HEARTBEAT_VERSION;
  buf[3] = HEARTBEAT_TYPE;
  buf.write(fields.linkId.toLowerCase(), 4, LINK_ID_BYTES, 'hex');
  buf.writeUInt32BE(fields.seq, 12);
  buf.writeDoubleBE(fields.sendTimeMicros, 16);
  buf.writeDoubleBE(fields.echoTimeMicros, 24);
  buf.writeUInt32BE(fields.echoTimeMicros === 0 ? 0 : saturateU32(fields.echoHoldMicros), 32);
  buf.writeUInt32BE(saturateU32(fields.mainLagMs), 36);
  buf[40] = fields.flags & 0xff;
  mac(sessionKey, buf.subarray(0, HEARTBEAT_BODY_BYTES)).copy(buf, HEARTBEAT_BODY_BYTES);
  return buf;
}

const MALFORMED: HeartbeatDecodeFailure = Object.freeze({ error: 'malformed' });
const UNKNOWN_LINK: HeartbeatDecodeFailure = Object.freeze({ error: 'unknown-link' });
const BAD_MAC: HeartbeatDecodeFailure = Object.freeze({ error: 'bad-mac' });

/**
 * Parses and authenticates a datagram. Never throws: any input (wrong length, random bytes,
 * non-buffers, a throwing `lookupKey`) yields `{ error }`.
 *
 * Order of checks: structure (`malformed`) → key lookup by link id (`unknown-link`) → MAC
 * (`bad-mac`) → field sanity (`malformed`). Field sanity is checked after the MAC so that only
 * a key holder can trigger it, but garbage from anyone is discarded before any HMAC is computed.
 *
 * @param lookupKey returns the 32-byte session key of a link id (16 lowercase hex), or undefined.
 */
export function decodeHeartbeat(buf: Uint8Array, lookupKey: (linkIdHex: string) => Uint8Array | undefined): HeartbeatDecodeResult {
  try {
    if (!(buf instanceof Uint8Array) || buf.length !== HEARTBEAT_PACKET_BYTES) return MALFORMED;
    if (buf[0] !== HEARTBEAT_MAGIC_0 || buf[1] !== HEARTBEAT_MAGIC_1 || buf[2] !== HEARTBEAT_VERSION || buf[3] !== HEARTBEAT_TYPE) return MALFORMED;
    const b = Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
    const linkId = b.toString('hex', 4, 4 + LINK_ID_BYTES);

    let key: Uint8Array | undefined;
    try {
      key = lookupKey(linkId);
    } catch {
      key = undefined;
    }
    if (!(key instanceof Uint8Array) || key.length !== SESSION_KEY_BYTES) return UNKNOWN_LINK;

    const expected = mac(key, b.subarray(0, HEARTBEAT_BODY_BYTES));
    if (!timingSafeEqual(expected, b.subarray(HEARTBEAT_BODY_BYTES, HEARTBEAT_PACKET_BYTES))) return BAD_MAC;

    const sendTimeMicros = b.readDoubleBE(16);
    const echoTimeMicros = b.readDoubleBE(24);
    if (!Number.isFinite(sendTimeMicros) || sendTimeMicros < 0) return MALFORMED;
    if (!Number.isFinite(echoTimeMicros) || echoTimeMicros < 0) return MALFORMED;
    const echoHoldMicros = b.readUInt32BE(32);
    if (echoTimeMicros === 0 && echoHoldMicros !== 0) return MALFORMED;
    return {
      linkId,
      seq: b.readUInt32BE(12),
      sendTimeMicros,
      echoTimeMicros,
      echoHoldMicros,
      mainLagMs: b.readUInt32BE(36),
      flags: b[40] ?? 0,
    };
  } catch {
    // Defensive: nothing above should throw, but hostile input must never escape as an exception.
    return MALFORMED;
  }
}

/**
 * Sliding anti-replay window over u32 sequence numbers (in the spirit of RFC 4303 §3.4.3).
 *
 * With `size` 1 it is strict: only a seq greater than every one accepted so far passes.
 * With a larger size, a seq up to `size - 1` below the highest passes once (reordered datagrams).
 * Anything at or below `highest - size`, or already seen, is a replay.
 */
export class ReplayWindow {
  private highestSeq = -1;
  private readonly seen: Uint8Array;

  /** @param size window width (integer 1..4096). Default 1: strictly increasing. */
  constructor(readonly size = 1) {
    if (!Number.isInteger(size) || size < 1 || size > 4096) throw new RangeError('window size must be an integer in 1..4096');
    this.seen = new Uint8Array(size);
  }

  /** Highest seq accepted so far, or -1. */
  get highest(): number {
    return this.highestSeq;
  }

  /** Whether `seq` would be accepted, without recording it. */
  check(seq: number): boolean {
    if (!Number.isInteger(seq) || seq < 0 || seq > U32_MAX) return false;
    if (seq > this.highestSeq) return true;
    if (seq <= this.highestSeq - this.size) return false;
    return this.seen[seq % this.size] === 0;
  }

  /** Accepts and records `seq` if it is fresh; returns false (and records nothing) for a replay. */
  accept(seq: number): boolean {
    if (!this.check(seq)) return false;
    if (seq > this.highestSeq) {
      // Slide: slots for the seqs we jumped over become "not seen"; at most `size` of them matter.
      if (this.highestSeq < 0) this.seen.fill(0);
      else {
        const jump = Math.min(seq - this.highestSeq, this.size);
        for (let i = 0; i < jump; i++) this.seen[(seq - i) % this.size] = 0;
      }
      this.highestSeq = seq;
    }
    this.seen[seq % this.size] = 1;
    return true;
  }
}
