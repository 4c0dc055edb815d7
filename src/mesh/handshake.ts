/**
 * Link handshake: mutual shared-secret authentication by HMAC challenge-response.
 *
 *   initiator                                   acceptor
 *   HELLO {step 1, v, cluster, id, nonceI}  →
 *                                           ←   HELLO {step 2, v, cluster, id, nonceA, proofA}
 *   HELLO {step 3, proofI}                  →
 *                                           ←   HELLO {step 4} (admitted) | REJECT {reason}
 *
 * proofA = HMAC(secret, "A" ‖ transcript), proofI = HMAC(secret, "I" ‖ transcript), where the
 * transcript binds both nonces, both identities and the cluster name. Each side proves with a
 * nonce the other side just chose, so a recorded exchange replayed on a new connection fails.
 * The secret itself never crosses the wire. The session key (for heartbeat MACs) and the link id
 * are derived from the secret and both nonces.
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { HandshakeError, type HandshakeFailureReason } from '../errors.js';
import { decode, encode } from './codec.js';
import { FrameType } from './framing.js';
import type { NodeIdentity } from './types.js';

/**
 * Wire protocol version. A peer with another version is refused with `version-mismatch`.
 * 3: the first fragment of a multi-fragment message carries the message's size (message.ts).
 */
export const PROTOCOL_VERSION = 3;

const NONCE_BYTES = 32;

/**
 * Largest frame (type byte + body) a link accepts before the peer has proved the secret. The
 * largest legitimate handshake frame, a step-2 HELLO with a 128-character node name and cluster
 * name and a 253-character host, is 682 bytes (measured in test/unit/handshake.test.ts);
 * REJECT frames are smaller. 8 KiB leaves a wide margin and keeps what a stranger can make a
 * link buffer small. See docs/guides/security.md.
 */
export const HANDSHAKE_MAX_FRAME_BYTES = 8 * 1024;

/** What a node says about itself in the handshake. */
export interface HelloInfo extends NodeIdentity {
  cluster: string;
  hidden: boolean;
  /** UDP port of the node's heartbeat worker. */
  heartbeatPort: number;
}

/** A result both ends agree on once the handshake succeeds. */
export interface HandshakeResult {
  peer: HelloInfo;
  /** 32 bytes, known to both ends only: keys the heartbeat MACs. */
  sessionKey: Buffer;
  /** 8 bytes as hex, the same at both ends: names the link in heartbeat packets. */
  linkId: string;
  /** Which end opened the TCP connection. */
  initiator: string;
}

/** The frame transport a handshake runs over. */
export interface HandshakeChannel {
  send(type: number, body: Uint8Array): void;
  /** Next frame, or rejects on close/timeout. */
  recv(): Promise<{ type: number; body: Buffer }>;
  /**
   * The peer just proved the secret (the initiator checked step 2, the acceptor step 3): the
   * transport may accept frames up to `maxFrameBytes` from now on, since data frames can follow
   * the last handshake frame in the same read. Until then it refuses frames over
   * `HANDSHAKE_MAX_FRAME_BYTES`.
   */
  peerAuthenticated?(): void;
}

/** The acceptor's decision on an authenticated peer (duplicate links, stale incarnations). */
export type AdmitDecision = { ok: true } | { ok: false; reason: HandshakeFailureReason; message: string };

interface Hello1 extends HelloInfo {
  step: 1;
  v: number;
  nonce: Uint8Array;
}
interface Hello2 extends HelloInfo {
  step: 2;
  v: number;
  nonce: Uint8Array;
  proof: Uint8Array;
}
interface Hello3 {
  step: 3;
  proof: Uint8Array;
}
interface Reject {
  reason: HandshakeFailureReason;
  message: string;
}

/** Everything both sides claim is bound into the proofs, so a man in the middle cannot alter any of it. */
function transcript(cluster: string, ini: HelloInfo, nI: Uint8Array, acc: HelloInfo, nA: Uint8Array): Buffer {
  const side = (h: HelloInfo) => `${h.name}\0${h.incarnation}\0${h.address}\0${h.hidden ? 1 : 0}\0${h.heartbeatPort}\0`;
  return Buffer.concat([Buffer.from(`${cluster}\0${side(ini)}${side(acc)}`), nI, nA]);
}

function mac(secret: Buffer, label: string, data: Buffer): Buffer {
  return createHmac('sha256', secret).update(label).update(data).digest();
}

function proofMatches(expected: Buffer, got: unknown): boolean {
  return got instanceof Uint8Array && got.length === expected.length && timingSafeEqual(expected, got);
}

function derive(secret: Buffer, nI: Uint8Array, nA: Uint8Array) {
  const material = Buffer.concat([nI, nA]);
  return {
    sessionKey: mac(secret, 'foundation-session', material),
    linkId: mac(secret, 'foundation-link', material).subarray(0, 8).toString('hex'),
  };
}

function isHelloInfo(v: unknown): v is HelloInfo & { v: number; nonce: Uint8Array } {
  if (typeof v !== 'object' || v === null) return false;
  const o = v as Record<string, unknown>;
  return (
    typeof o.v === 'number' &&
    typeof o.cluster === 'string' &&
    typeof o.name === 'string' &&
    typeof o.address === 'string' &&
    typeof o.incarnation === 'number' &&
    typeof o.hidden === 'boolean' &&
    Number.isInteger(o.heartbeatPort) &&
    o.nonce instanceof Uint8Array &&
    o.nonce.length === NONCE_BYTES
  );
}

async function expectHello(ch: HandshakeChannel, step: number): Promise<Record<string, unknown>> {
  const frame = await ch.recv();
  if (frame.type === FrameType.REJECT) {
    const r = safeDecode(frame.body) as Partial<Reject> | undefined;
    const reason = (typeof r?.reason === 'string' ? r.reason : 'protocol') as HandshakeFailureReason;
    // The peer's message is written from its side ("node X proved..."); restate the bad-secret case from ours.
    const detail = reason === 'bad-secret' ? 'the two nodes hold different secrets' : String(r?.message ?? 'no message').slice(0, 200);
    throw new HandshakeError(reason, `peer refused the handshake (${reason}): ${detail}`);
  }
  if (frame.type !== FrameType.HELLO) {
    throw new HandshakeError('protocol', `expected handshake step ${step}, got frame type ${frame.type}`);
  }
  const body = safeDecode(frame.body);
  if (typeof body !== 'object' || body === null || (body as { step?: unknown }).step !== step) {
    throw new HandshakeError('protocol', `expected handshake step ${step}, got a malformed message`);
  }
  return body as Record<string, unknown>;
}

function safeDecode(body: Buffer): unknown {
  try {
    return decode(body);
  } catch {
    return undefined;
  }
}

function refuse(ch: HandshakeChannel, reason: HandshakeFailureReason, message: string): never {
  try {
    ch.send(FrameType.REJECT, encode({ reason, message } satisfies Reject));
  } catch {
    // The socket may already be gone; the local error below is what matters.
  }
  throw new HandshakeError(reason, message);
}

function checkPeer(self: HelloInfo, peer: HelloInfo & { v: number }, ch: HandshakeChannel): void {
  if (peer.v !== PROTOCOL_VERSION) {
    refuse(ch, 'version-mismatch', `protocol version ${peer.v} is not supported (this node speaks ${PROTOCOL_VERSION})`);
  }
  if (peer.cluster !== self.cluster) {
    refuse(ch, 'cluster-mismatch', `cluster "${peer.cluster}" does not match this node's cluster "${self.cluster}"`);
  }
  if (peer.name === self.name && peer.incarnation === self.incarnation) {
    refuse(ch, 'self-connection', 'connected to itself');
  }
}

/** Runs the initiator's side. Throws `HandshakeError` on any failure. */
export async function initiateHandshake(
  ch: HandshakeChannel,
  self: HelloInfo,
  secret: Buffer,
  /** Told who the peer is as soon as it has proved the secret, before the acceptor decides. */
  onPeer?: (peer: HelloInfo) => void,
): Promise<HandshakeResult> {
  const nI = randomBytes(NONCE_BYTES);
  ch.send(FrameType.HELLO, encode({ step: 1, v: PROTOCOL_VERSION, ...pickInfo(self), nonce: nI } satisfies Hello1));
  const h2 = await expectHello(ch, 2);
  if (!isHelloInfo(h2)) throw new HandshakeError('protocol', 'malformed handshake step 2');
  const peer = pickInfo(h2);
  checkPeer(self, { ...peer, v: h2.v }, ch);
  const t = transcript(self.cluster, self, nI, peer, h2.nonce);
  if (!proofMatches(mac(secret, 'A', t), (h2 as unknown as Hello2).proof)) {
    refuse(ch, 'bad-secret', `node "${peer.name}" at ${peer.address} proved a different secret`);
  }
  ch.peerAuthenticated?.();
  onPeer?.(peer);
  ch.send(FrameType.HELLO, encode({ step: 3, proof: mac(secret, 'I', t) } satisfies Hello3));
  await expectHello(ch, 4);
  return { peer, ...derive(secret, nI, h2.nonce), initiator: self.name };
}

/**
 * Runs the acceptor's side. `admit` is asked only after the peer proved the secret, so an
 * unauthenticated peer learns nothing about which links exist. `onClaim` is told who the peer
 * says it is as soon as its first HELLO is in: NOT authenticated yet, so only for hints (e.g.
 * "that node is dialing us right now") that cost nothing when false.
 */
export async function acceptHandshake(
  ch: HandshakeChannel,
  self: HelloInfo,
  secret: Buffer,
  admit: (peer: HelloInfo) => AdmitDecision,
  onClaim?: (claimed: HelloInfo) => void,
): Promise<HandshakeResult> {
  const h1 = await expectHello(ch, 1);
  if (!isHelloInfo(h1)) refuse(ch, 'protocol', 'malformed handshake step 1');
  const peer = pickInfo(h1);
  checkPeer(self, { ...peer, v: h1.v }, ch);
  onClaim?.(peer);
  const nA = randomBytes(NONCE_BYTES);
  const t = transcript(self.cluster, peer, h1.nonce, self, nA);
  ch.send(FrameType.HELLO, encode({ step: 2, v: PROTOCOL_VERSION, ...pickInfo(self), nonce: nA, proof: mac(secret, 'A', t) } satisfies Hello2));
  const h3 = await expectHello(ch, 3);
  if (!proofMatches(mac(secret, 'I', t), h3.proof)) {
    refuse(ch, 'bad-secret', `node "${peer.name}" at ${peer.address} proved a different secret`);
  }
  ch.peerAuthenticated?.();
  const decision = admit(peer);
  if (!decision.ok) refuse(ch, decision.reason, decision.message);
  ch.send(FrameType.HELLO, encode({ step: 4 }));
  return { peer, ...derive(secret, h1.nonce, nA), initiator: peer.name };
}

function pickInfo(o: HelloInfo): HelloInfo {
  return {
    cluster: o.cluster,
    name: o.name,
    address: o.address,
    incarnation: o.incarnation,
    hidden: o.hidden,
    heartbeatPort: o.heartbeatPort,
  };
}
