/**
 * The bytes of one published message between nodes, built once per publish and sent unchanged
 * to every destination (so the queue-group choices travel in it, for every node to read its own).
 *
 * Layout: `[u8 version][u8 flags][u8 topicLength][topic]`, then when flagged
 * `[u8 length][traceparent]`, `[u8 count]` and `count` × `[u8 length][group][u8 length][node]`,
 * then the body: the payload encoded by the mesh codec (or the raw bytes, flag RAW), deflated
 * when flag DEFLATE is set.
 *
 * The head (everything before the body) is built apart from the body and, for the common frame
 * (no trace, no queue groups), cached per topic and flags: a publish allocates no frame and
 * copies no body; the mesh adapter sends head and body as one gather write (`GatherPayload`),
 * so a 64 MiB body is never copied into a frame.
 */
import { deflateRawSync, inflateRawSync } from 'node:zlib';
import { decode, decodeRange, encode } from '../mesh/codec.js';
import { decodeTopic, topicBytes } from '../mesh/message.js';

const VERSION = 1;
/** First byte of every frame. */
export const FRAME_VERSION = VERSION;

export const FrameFlags = {
  /** The body is the caller's own bytes (a Uint8Array payload), not codec output. */
  RAW: 1,
  /** The body is deflated (raw deflate). */
  DEFLATE: 2,
  /** A W3C traceparent follows the topic. */
  TRACE: 4,
  /** Queue-group assignments follow. */
  GROUPS: 8,
  /** Sent to one node (`directBroadcast`): it delivers to one member of each of its own queue groups. */
  DIRECT: 16,
} as const;

/** One publish, ready for the wire. */
export interface OutboundFrame {
  topic: string;
  /** The encoded (and possibly deflated) payload. */
  body: Uint8Array;
  flags: number;
  traceparent?: string;
  /** Queue group → the node chosen to deliver it. */
  groups?: Array<[group: string, node: string]>;
}

/** A received frame, payload not yet decoded (most receivers decode it once, lazily). */
export interface InboundFrame {
  topic: string;
  flags: number;
  traceparent?: string;
  groups?: Array<[group: string, node: string]>;
  body: Buffer;
}

const textBytes = (s: string): Buffer => Buffer.from(s, 'utf8');

/** Encodes a payload into a frame body: codec (or raw bytes), then deflate above `compressAbove` bytes. */
export function encodeBody(payload: unknown, compressAbove: number | undefined): { body: Uint8Array; flags: number } {
  let flags = 0;
  let body: Uint8Array;
  if (payload instanceof Uint8Array) {
    body = payload;
    flags |= FrameFlags.RAW;
  } else {
    body = encode(payload);
  }
  if (compressAbove !== undefined && body.length > compressAbove) {
    // Level 1: most of level 6's saving on structured payloads at a fraction of its CPU (bench/compress.mjs).
    const deflated = deflateRawSync(body, { level: 1 });
    // Incompressible data (already compressed, random) is sent as it is.
    if (deflated.length < body.length) {
      body = deflated;
      flags |= FrameFlags.DEFLATE;
    }
  }
  return { body, flags };
}

/** Decodes the body of a received frame into the payload. Throws on bad bytes (the caller drops the frame). */
export function decodeBody(frame: InboundFrame): unknown {
  return decodeBodyBytes(frame.flags, frame.body);
}

/** `decodeBodyBytes` of the body `buf[start..end)`: a decoded body needs no view of its own. */
export function decodeBodyRange(flags: number, buf: Buffer, start: number, end: number): unknown {
  if (flags & (FrameFlags.DEFLATE | FrameFlags.RAW)) return decodeBodyBytes(flags, buf.subarray(start, end));
  return decodeRange(buf, start, end);
}

/** `decodeBody` from the frame's flags and body bytes. */
export function decodeBodyBytes(flags: number, body: Buffer): unknown {
  const bytes = flags & FrameFlags.DEFLATE ? inflateRawSync(body) : body;
  return flags & FrameFlags.RAW ? bytes : decode(bytes);
}

function short(s: string, what: string): Buffer {
  const b = textBytes(s);
  if (b.length > 255) throw new RangeError(`${what} longer than 255 bytes`);
  return b;
}

/** Most topics whose plain frame heads are cached (cleared wholesale when full, as the mesh's topic cache). */
const HEAD_CACHE_LIMIT = 4096;
/** Plain frame heads (no trace, no groups) by topic, then by flags. Shared buffers: never written after creation. */
const headCache = new Map<string, Array<Buffer | undefined>>();

/**
 * The frame's bytes before the body. Do not modify the result: plain heads are cached and shared
 * by every frame of the same topic and flags.
 */
export function writeFrameHead(f: Omit<OutboundFrame, 'body'>): Buffer {
  const plain = f.traceparent === undefined && (f.groups === undefined || f.groups.length === 0);
  if (!plain) return buildHead(f);
  let byFlags = headCache.get(f.topic);
  const cached = byFlags?.[f.flags];
  if (cached !== undefined) return cached;
  const head = buildHead(f);
  if (byFlags === undefined) {
    if (headCache.size >= HEAD_CACHE_LIMIT) headCache.clear();
    byFlags = [];
    headCache.set(f.topic, byFlags);
  }
  byFlags[f.flags] = head;
  return head;
}

/** Builds the frame's bytes as one buffer: the head, then a copy of the body (adapters that need one buffer). */
export function writeFrame(f: OutboundFrame): Buffer {
  const head = writeFrameHead(f);
  const out = Buffer.allocUnsafe(head.length + f.body.length);
  head.copy(out, 0);
  out.set(f.body, head.length);
  return out;
}

function buildHead(f: Omit<OutboundFrame, 'body'>): Buffer {
  // The same few topics repeat on every publish: their UTF-8 bytes are cached by the mesh.
  const topic = topicBytes(f.topic);
  let flags = f.flags;
  let extra = 0;
  let trace: Buffer | undefined;
  if (f.traceparent !== undefined) {
    trace = short(f.traceparent, 'traceparent');
    flags |= FrameFlags.TRACE;
    extra += 1 + trace.length;
  }
  let groups: Array<[Buffer, Buffer]> | undefined;
  if (f.groups && f.groups.length > 0) {
    if (f.groups.length > 255) throw new RangeError('more than 255 queue groups match one topic');
    groups = f.groups.map(([g, n]) => [short(g, 'queue group'), short(n, 'node name')]);
    flags |= FrameFlags.GROUPS;
    extra += 1;
    for (const [g, n] of groups) extra += 2 + g.length + n.length;
  }
  const out = Buffer.allocUnsafe(3 + topic.length + extra);
  out[0] = VERSION;
  out[1] = flags;
  out[2] = topic.length;
  let at = 3 + topic.copy(out, 3);
  if (trace) {
    out[at++] = trace.length;
    at += trace.copy(out, at);
  }
  if (groups) {
    out[at++] = groups.length;
    for (const [g, n] of groups) {
      out[at++] = g.length;
      at += g.copy(out, at);
      out[at++] = n.length;
      at += n.copy(out, at);
    }
  }
  return out;
}

/**
 * Parses the frame in bytes [start, end) of `buf` (a batch holds several); undefined when they
 * are not a valid frame (dropped and counted by the caller). The body is a view into `buf`.
 */
export function readFrame(buf: Buffer, start = 0, end = buf.length): InboundFrame | undefined {
  if (end - start < 3 || buf[start] !== VERSION) return undefined;
  const flags = buf[start + 1] as number;
  const topicLen = buf[start + 2] as number;
  let at = start + 3;
  if (topicLen === 0 || at + topicLen > end) return undefined;
  // Topics repeat: decoded through the mesh's small cache of recent strings.
  const topic = decodeTopic(buf, at, topicLen);
  at += topicLen;
  if ((flags & (FrameFlags.TRACE | FrameFlags.GROUPS)) === 0) return { topic, flags, traceparent: undefined, groups: undefined, body: buf.subarray(at, end) };
  let traceparent: string | undefined;
  if (flags & FrameFlags.TRACE) {
    if (at >= end) return undefined;
    const n = buf[at++] as number;
    if (at + n > end) return undefined;
    traceparent = buf.toString('utf8', at, at + n);
    at += n;
  }
  let groups: Array<[string, string]> | undefined;
  if (flags & FrameFlags.GROUPS) {
    if (at >= end) return undefined;
    const count = buf[at++] as number;
    groups = [];
    for (let i = 0; i < count; i++) {
      if (at >= end) return undefined;
      const gn = buf[at++] as number;
      if (at + gn >= end) return undefined;
      const g = buf.toString('utf8', at, at + gn);
      at += gn;
      const nn = buf[at++] as number;
      if (at + nn > end) return undefined;
      const n = buf.toString('utf8', at, at + nn);
      at += nn;
      groups.push([g, n]);
    }
  }
  return { topic, flags, traceparent, groups, body: buf.subarray(at, end) };
}
