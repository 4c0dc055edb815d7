import { describe, expect, it } from 'vitest';
import { HandshakeError } from '../../src/errors.js';
import { decode, encode } from '../../src/mesh/codec.js';
import { FrameType } from '../../src/mesh/framing.js';
import {
  acceptHandshake,
  HANDSHAKE_MAX_FRAME_BYTES,
  type HandshakeChannel,
  type HelloInfo,
  initiateHandshake,
  PROTOCOL_VERSION,
} from '../../src/mesh/handshake.js';

type Frame = { type: number; body: Buffer };

/** Two in-memory channels wired back to back; every frame sent is also recorded. */
function pipe() {
  const queues: [Frame[], Frame[]] = [[], []];
  const waiters: [((f: Frame) => void) | undefined, ((f: Frame) => void) | undefined] = [undefined, undefined];
  const sent: [Frame[], Frame[]] = [[], []];
  /** Per end: how many frames it had received when told the peer authenticated (-1: never told). */
  const authenticatedAt: [number, number] = [-1, -1];
  const received: [number, number] = [0, 0];
  const end = (me: 0 | 1): HandshakeChannel => ({
    send(type, body) {
      const f = { type, body: Buffer.from(body) };
      sent[me].push(f);
      const other = (1 - me) as 0 | 1;
      const w = waiters[other];
      if (w) {
        waiters[other] = undefined;
        w(f);
      } else queues[other].push(f);
    },
    recv() {
      received[me]++;
      const f = queues[me].shift();
      if (f) return Promise.resolve(f);
      return new Promise((resolve, reject) => {
        waiters[me] = resolve;
        setTimeout(() => reject(new HandshakeError('timeout', 'test timeout')), 500);
      });
    },
    peerAuthenticated() {
      expect(authenticatedAt[me]).toBe(-1);
      authenticatedAt[me] = received[me];
    },
  });
  return { ini: end(0), acc: end(1), sent, authenticatedAt };
}

const info = (name: string, over: Partial<HelloInfo> = {}): HelloInfo => ({
  name,
  address: `127.0.0.1:${name === 'a' ? 4001 : 4002}`,
  incarnation: name === 'a' ? 1 : 2,
  cluster: 'c',
  hidden: false,
  heartbeatPort: 9,
  ...over,
});
const secret = Buffer.from('the-secret');
const admitAll = () => ({ ok: true }) as const;

describe('handshake', () => {
  it('tells the acceptor who the peer claims to be before it proves the secret, and admits only after the proof', async () => {
    const { ini, acc } = pipe();
    const claims: string[] = [];
    let admitted = 0;
    const admit = () => {
      admitted++;
      return { ok: true } as const;
    };
    const results = await Promise.allSettled([
      initiateHandshake(ini, info('a'), Buffer.from('another-secret')),
      acceptHandshake(acc, info('b'), secret, admit, (claimed) => claims.push(claimed.address)),
    ]);
    expect(claims).toEqual(['127.0.0.1:4001']);
    expect(admitted).toBe(0);
    expect(results.every((r) => r.status === 'rejected')).toBe(true);
  });

  it('authenticates both sides and derives the same session key and link id', async () => {
    const { ini, acc, sent } = pipe();
    const [r1, r2] = await Promise.all([initiateHandshake(ini, info('a'), secret), acceptHandshake(acc, info('b'), secret, admitAll)]);
    expect(r1.peer.name).toBe('b');
    expect(r2.peer.name).toBe('a');
    expect(r1.sessionKey.equals(r2.sessionKey)).toBe(true);
    expect(r1.linkId).toBe(r2.linkId);
    expect(r1.initiator).toBe('a');
    expect(r2.initiator).toBe('a');
    // The secret never crosses the wire.
    for (const f of [...sent[0], ...sent[1]]) expect(f.body.includes(secret)).toBe(false);
  });

  it('fails on both sides with bad-secret when the secrets differ', async () => {
    const { ini, acc } = pipe();
    const [r1, r2] = await Promise.allSettled([initiateHandshake(ini, info('a'), Buffer.from('other')), acceptHandshake(acc, info('b'), secret, admitAll)]);
    expect(r1.status).toBe('rejected');
    expect(r2.status).toBe('rejected');
    expect((r1 as PromiseRejectedResult).reason).toMatchObject({ name: 'HandshakeError', reason: 'bad-secret', code: 'FOUNDATION_HANDSHAKE_FAILED' });
    expect((r2 as PromiseRejectedResult).reason).toMatchObject({ reason: 'bad-secret' });
  });

  it('refuses a replayed step 3 on a new connection (fresh acceptor nonce)', async () => {
    const first = pipe();
    await Promise.all([initiateHandshake(first.ini, info('a'), secret), acceptHandshake(first.acc, info('b'), secret, admitAll)]);
    const recorded = first.sent[0]; // step 1 and step 3 from the genuine initiator
    expect(recorded).toHaveLength(2);
    // An attacker without the secret replays them to a new acceptor.
    const second = pipe();
    const accepting = acceptHandshake(second.acc, info('b'), secret, admitAll);
    for (const f of recorded) second.ini.send(f.type, f.body);
    await expect(accepting).rejects.toMatchObject({ reason: 'bad-secret' });
  });

  it('refuses a replayed step 2 (fresh initiator nonce)', async () => {
    const first = pipe();
    await Promise.all([initiateHandshake(first.ini, info('a'), secret), acceptHandshake(first.acc, info('b'), secret, admitAll)]);
    const step2 = first.sent[1][0] as Frame;
    const second = pipe();
    const initiating = initiateHandshake(second.ini, info('a'), secret);
    second.acc.send(step2.type, step2.body);
    await expect(initiating).rejects.toMatchObject({ reason: 'bad-secret' });
  });

  it('refuses another cluster name and another protocol version', async () => {
    const p = pipe();
    const [r1, r2] = await Promise.allSettled([
      initiateHandshake(p.ini, info('a', { cluster: 'other' }), secret),
      acceptHandshake(p.acc, info('b'), secret, admitAll),
    ]);
    expect((r2 as PromiseRejectedResult).reason).toMatchObject({ reason: 'cluster-mismatch' });
    expect((r1 as PromiseRejectedResult).reason).toMatchObject({ reason: 'cluster-mismatch' });

    const q = pipe();
    const accepting = acceptHandshake(q.acc, info('b'), secret, admitAll);
    q.ini.send(FrameType.HELLO, encode({ step: 1, v: PROTOCOL_VERSION + 1, ...info('a'), nonce: Buffer.alloc(32) }));
    await expect(accepting).rejects.toMatchObject({ reason: 'version-mismatch' });
    const reject = q.sent[1][0] as Frame;
    expect(reject.type).toBe(FrameType.REJECT);
    expect(decode(reject.body)).toMatchObject({ reason: 'version-mismatch' });
  });

  it('asks admit only after authentication and relays its refusal', async () => {
    const p = pipe();
    let asked = 0;
    const [r1, r2] = await Promise.allSettled([
      initiateHandshake(p.ini, info('a'), secret),
      acceptHandshake(p.acc, info('b'), secret, () => {
        asked++;
        return { ok: false, reason: 'duplicate-link', message: 'exists' };
      }),
    ]);
    expect(asked).toBe(1);
    expect((r1 as PromiseRejectedResult).reason).toMatchObject({ reason: 'duplicate-link' });
    expect((r2 as PromiseRejectedResult).reason).toMatchObject({ reason: 'duplicate-link' });

    const bad = pipe();
    let askedBad = 0;
    const accepting = acceptHandshake(bad.acc, info('b'), secret, () => {
      askedBad++;
      return { ok: true };
    });
    await expect(initiateHandshake(bad.ini, info('a'), Buffer.from('wrong'))).rejects.toThrow();
    await expect(accepting).rejects.toThrow();
    expect(askedBad).toBe(0);
  });

  it('rejects malformed handshake messages without crashing', async () => {
    for (const body of [Buffer.from([0xc1]), encode({ step: 1 }), encode('x'), encode({ step: 1, v: 1, name: 5 })]) {
      const p = pipe();
      const accepting = acceptHandshake(p.acc, info('b'), secret, admitAll);
      p.ini.send(FrameType.HELLO, body);
      await expect(accepting).rejects.toMatchObject({ name: 'HandshakeError' });
    }
  });

  it('lifts the frame limit only once the peer proved the secret: initiator after step 2, acceptor after step 3', async () => {
    const ok = pipe();
    await Promise.all([initiateHandshake(ok.ini, info('a'), secret), acceptHandshake(ok.acc, info('b'), secret, admitAll)]);
    expect(ok.authenticatedAt).toEqual([1, 2]);
    const bad = pipe();
    await Promise.allSettled([initiateHandshake(bad.ini, info('a'), Buffer.from('wrong')), acceptHandshake(bad.acc, info('b'), secret, admitAll)]);
    expect(bad.authenticatedAt).toEqual([-1, -1]); // with different secrets neither proof checks out
  });

  it('sends no frame near HANDSHAKE_MAX_FRAME_BYTES, even with the longest names and host allowed', async () => {
    // Start options allow 128-character node and cluster names; a DNS name has at most 253 characters.
    const longest = (name: string, cluster: string): HelloInfo => ({
      name: name.repeat(128),
      address: `${'h'.repeat(253)}:65535`,
      incarnation: Number.MAX_SAFE_INTEGER,
      cluster: cluster.repeat(128),
      hidden: true,
      heartbeatPort: 65535,
    });
    const frames: Frame[] = [];
    const ok = pipe();
    await Promise.all([
      initiateHandshake(ok.ini, longest('a', 'c'), secret),
      acceptHandshake(ok.acc, longest('b', 'c'), secret, () => ({ ok: false, reason: 'stale-incarnation', message: 'm'.repeat(200) })),
    ]).catch(() => {});
    const mismatch = pipe();
    await Promise.allSettled([initiateHandshake(mismatch.ini, longest('a', 'c'), secret), acceptHandshake(mismatch.acc, longest('b', 'd'), secret, admitAll)]);
    const wrong = pipe();
    await Promise.allSettled([
      initiateHandshake(wrong.ini, longest('a', 'c'), Buffer.from('x')),
      acceptHandshake(wrong.acc, longest('b', 'c'), secret, admitAll),
    ]);
    for (const p of [ok, mismatch, wrong]) frames.push(...p.sent[0], ...p.sent[1]);
    expect(frames.some((f) => f.type === FrameType.REJECT)).toBe(true);
    const largest = Math.max(...frames.map((f) => 1 + f.body.length));
    // Measured: 682 bytes (a step-2 HELLO). The limit leaves more than 8x that.
    expect(largest).toBeLessThan(1024);
    expect(HANDSHAKE_MAX_FRAME_BYTES).toBeGreaterThanOrEqual(8 * largest);
  });

  it('refuses a connection to itself', async () => {
    const p = pipe();
    const me = info('a');
    const [, r2] = await Promise.allSettled([initiateHandshake(p.ini, me, secret), acceptHandshake(p.acc, me, secret, admitAll)]);
    expect((r2 as PromiseRejectedResult).reason).toMatchObject({ reason: 'self-connection' });
  });
});
