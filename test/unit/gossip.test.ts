/**
 * The gossip strategy's packet format and receive path: encode/decode, tampering, wrong
 * secrets, replays, stale timestamps, and random garbage. Strategies run on real UDP
 * sockets confined to loopback (127.0.0.1 multicast, group and port unique per run).
 */
import { randomBytes, randomInt } from 'node:crypto';
import { createSocket, type Socket } from 'node:dgram';
import fc from 'fast-check';
import { afterEach, describe, expect, it } from 'vitest';
import {
  decodeGossipPacket,
  deriveGossipKey,
  encodeGossipPacket,
  GOSSIP_DROP_REASONS,
  GOSSIP_MAGIC,
  GOSSIP_MAX_PACKET,
  GOSSIP_REPLAY_WINDOW_MS,
  type GossipMessage,
  GossipStrategy,
  type GossipStrategyConfig,
  gossipInterfaceFor,
} from '../../src/discovery/gossip.js';
import { ConfigError } from '../../src/errors.js';
import { RecordingContext, until } from '../compliance/strategy-compliance.js';

const key = deriveGossipKey('s3cret');
const msg: GossipMessage = {
  kind: 'announce',
  cluster: 'foundation',
  name: 'peer-1',
  address: '127.0.0.1:4101',
  incarnation: 1_700_000_000_000_123,
  seq: 7,
  timestamp: Date.now(),
};

const port = 40000 + randomInt(10000);
const group = `239.255.${randomInt(1, 255)}.${randomInt(1, 255)}`;
const self = { name: 'self', address: '127.0.0.1:4000', incarnation: 1 };

const running: Array<{ s: GossipStrategy; ctx: RecordingContext }> = [];
const sockets: Socket[] = [];

async function startStrategy(config: GossipStrategyConfig = {}, me = self): Promise<{ s: GossipStrategy; ctx: RecordingContext }> {
  const s = new GossipStrategy({ group, port, ...config });
  const ctx = new RecordingContext(me);
  await s.start(ctx);
  const r = { s, ctx };
  running.push(r);
  return r;
}

afterEach(async () => {
  for (const { s, ctx } of running.splice(0)) {
    ctx.abort.abort();
    await s.stop();
  }
  for (const so of sockets.splice(0)) so.close();
});

const droppedTotal = (s: GossipStrategy) => Object.values(s.stats().dropped).reduce((a, b) => a + b, 0);
const ignoredTotal = (s: GossipStrategy) => Object.values(s.stats().ignored).reduce((a, b) => a + b, 0);

/** Hands `s` an announce of `from` every 50 ms (a live peer), with a rising seq. */
function keepAnnouncing(s: GossipStrategy, from: GossipMessage, deliver = (p: Uint8Array, src: string) => s.ingest(p, src)): { stop(): void } {
  let seq = from.seq;
  deliver(encodeGossipPacket({ ...from, seq: ++seq }), '127.0.0.1');
  const t = setInterval(() => deliver(encodeGossipPacket({ ...from, seq: ++seq }), '127.0.0.1'), 50);
  return { stop: () => clearInterval(t) };
}

describe('gossip packet', () => {
  it('round-trips plain and sealed packets with the documented layout', () => {
    const plain = encodeGossipPacket(msg);
    expect(plain.subarray(0, 6)).toEqual(Buffer.from([0x46, 0x44, 0x4e, 0x47, 1, 0]));
    expect(plain[6]).toBe(1); // announce
    expect(plain.readBigUInt64BE(7)).toBe(BigInt(msg.incarnation));
    expect(plain.readBigUInt64BE(15)).toBe(7n);
    expect(plain.readBigUInt64BE(23)).toBe(BigInt(msg.timestamp));
    expect(plain.readUInt16BE(31)).toBe(10);
    expect(plain.subarray(33, 43).toString()).toBe('foundation');
    expect(decodeGossipPacket(plain)).toEqual({ ok: true, msg });

    const sealed = encodeGossipPacket(msg, key);
    expect(sealed.subarray(0, 6)).toEqual(Buffer.from([0x46, 0x44, 0x4e, 0x47, 1, 1]));
    // header + nonce + ciphertext (same length as the plaintext payload) + tag
    expect(sealed.length).toBe(plain.length + 12 + 16);
    expect(sealed.includes(Buffer.from('foundation'))).toBe(false);
    expect(decodeGossipPacket(sealed, key)).toEqual({ ok: true, msg });
    // Random nonces: two seals of one message differ.
    expect(encodeGossipPacket(msg, key).equals(sealed)).toBe(false);
    const bye = { ...msg, kind: 'goodbye' as const, seq: 8 };
    expect(decodeGossipPacket(encodeGossipPacket(bye, key), key)).toEqual({ ok: true, msg: bye });
  });

  it('round-trips any valid message (property)', () => {
    const name = fc.stringMatching(/^[A-Za-z0-9][A-Za-z0-9._@:-]{0,40}$/);
    const safe = fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER });
    const address = fc.oneof(
      fc.tuple(fc.ipV4(), fc.integer({ min: 1, max: 65535 })).map(([h, p]) => `${h}:${p}`),
      fc.tuple(fc.ipV6(), fc.integer({ min: 1, max: 65535 })).map(([h, p]) => `[${h}]:${p}`),
    );
    fc.assert(
      fc.property(
        fc.record({
          kind: fc.constantFrom('announce' as const, 'goodbye' as const),
          cluster: fc.string({ minLength: 1, maxLength: 128, unit: 'grapheme' }),
          name,
          address,
          incarnation: safe,
          seq: safe,
          timestamp: safe,
        }),
        fc.boolean(),
        (m, sealed) => {
          const k = sealed ? key : undefined;
          expect(decodeGossipPacket(encodeGossipPacket(m, k), k)).toEqual({ ok: true, msg: m });
        },
      ),
      { numRuns: 500 },
    );
  });

  it('refuses to encode what it would refuse to decode', () => {
    expect(() => encodeGossipPacket({ ...msg, incarnation: 2 ** 53 })).toThrow(RangeError);
    expect(() => encodeGossipPacket({ ...msg, seq: -1 })).toThrow(RangeError);
    expect(() => encodeGossipPacket({ ...msg, address: `${'a'.repeat(400)}:1` })).toThrow(RangeError);
  });

  it('detects tampering: flipping any bit of a sealed packet drops it, with a reason', () => {
    const sealed = encodeGossipPacket(msg, key);
    for (let i = 0; i < sealed.length; i++) {
      for (const bit of [0x01, 0x80, 0xff]) {
        const t = Buffer.from(sealed);
        t[i] = (t[i] as number) ^ bit;
        const r = decodeGossipPacket(t, key);
        expect(r.ok, `byte ${i} ^ ${bit}`).toBe(false);
        if (r.ok) continue;
        if (i < 4) expect(r.reason).toBe('bad-magic');
        else if (i === 4) expect(r.reason).toBe('bad-version');
        else if (i === 5) expect(['bad-flags', 'not-encrypted']).toContain(r.reason);
        else expect(r.reason).toBe('auth-failed');
      }
    }
    // Truncated or extended.
    expect(decodeGossipPacket(sealed.subarray(0, sealed.length - 1), key)).toEqual({ ok: false, reason: 'auth-failed' });
    expect(decodeGossipPacket(Buffer.concat([sealed, Buffer.from([0])]), key)).toEqual({ ok: false, reason: 'auth-failed' });
    expect(decodeGossipPacket(sealed.subarray(0, 20), key)).toEqual({ ok: false, reason: 'too-short' });
  });

  it('drops a wrong secret, plaintext when a secret is set, and sealed packets without one', () => {
    expect(decodeGossipPacket(encodeGossipPacket(msg, deriveGossipKey('other')), key)).toEqual({ ok: false, reason: 'auth-failed' });
    expect(decodeGossipPacket(encodeGossipPacket(msg), key)).toEqual({ ok: false, reason: 'not-encrypted' });
    expect(decodeGossipPacket(encodeGossipPacket(msg, key))).toEqual({ ok: false, reason: 'encrypted-no-secret' });
  });

  it('bounds and checks every field of a plaintext payload', () => {
    const plain = encodeGossipPacket(msg);
    const bad = (mut: (b: Buffer) => Buffer | undefined) => {
      const b = Buffer.from(plain);
      return decodeGossipPacket(mut(b) ?? b);
    };
    expect(
      bad((b) => {
        b[6] = 3;
        return undefined;
      }),
    ).toEqual({ ok: false, reason: 'malformed' }); // kind
    expect(bad((b) => void b.writeBigUInt64BE(2n ** 63n, 7))).toEqual({ ok: false, reason: 'malformed' }); // incarnation > 2^53
    expect(bad((b) => void b.writeUInt16BE(60000, 31))).toEqual({ ok: false, reason: 'malformed' }); // length past the end
    expect(bad((b) => Buffer.concat([b, Buffer.from([0])]))).toEqual({ ok: false, reason: 'malformed' }); // trailing byte
    expect(bad((b) => b.subarray(0, b.length - 1))).toEqual({ ok: false, reason: 'malformed' });
    expect(decodeGossipPacket(encodeGossipPacket({ ...msg, name: 'bad name!' }))).toEqual({ ok: false, reason: 'malformed' });
    expect(decodeGossipPacket(encodeGossipPacket({ ...msg, address: 'no-port' }))).toEqual({ ok: false, reason: 'malformed' });
    expect(decodeGossipPacket(Buffer.concat([GOSSIP_MAGIC, Buffer.from([1, 0]), Buffer.from([0xff, 0xfe])]))).toEqual({ ok: false, reason: 'malformed' });
    expect(decodeGossipPacket(Buffer.alloc(GOSSIP_MAX_PACKET + 1))).toEqual({ ok: false, reason: 'too-large' });
    expect(decodeGossipPacket(Buffer.from('FDN'))).toEqual({ ok: false, reason: 'too-short' });
    expect(decodeGossipPacket(Buffer.from([0x46, 0x44, 0x4e, 0x47, 1, 0x81]))).toEqual({ ok: false, reason: 'bad-flags' });
  });

  it('derives the interface from the node address, never leaving loopback for a loopback node', () => {
    expect(gossipInterfaceFor('127.0.0.1:4000')).toBe('127.0.0.1');
    expect(gossipInterfaceFor('127.0.3.9:4000')).toBe('127.0.0.1');
    expect(gossipInterfaceFor('localhost:4000')).toBe('127.0.0.1');
    expect(gossipInterfaceFor('[::1]:4000')).toBe('127.0.0.1');
    expect(gossipInterfaceFor('0.0.0.0:4000')).toBe('127.0.0.1');
    expect(gossipInterfaceFor('[::ffff:127.0.0.1]:4000')).toBe('127.0.0.1');
    expect(gossipInterfaceFor('10.1.2.3:4000')).toBe('10.1.2.3');
    expect(gossipInterfaceFor('[::ffff:10.1.2.3]:4000')).toBe('10.1.2.3');
    expect(gossipInterfaceFor('db.example:4000')).toBeUndefined();
    expect(gossipInterfaceFor('[fd00::1]:4000')).toBeUndefined();
  });
});

describe('gossip receive path', () => {
  it('uses 127.0.0.1 for a node on loopback (and a name that resolves to it)', async () => {
    const a = await startStrategy();
    expect(a.s.interfaceAddress).toBe('127.0.0.1');
    const b = await startStrategy({}, { name: 'b', address: 'localhost:4001', incarnation: 1 });
    expect(b.s.interfaceAddress).toBe('127.0.0.1');
  });

  it('accepts a good announce, answers it, and follows goodbye', async () => {
    const { s, ctx } = await startStrategy({ secret: 's3cret' });
    s.ingest(encodeGossipPacket({ ...msg, timestamp: Date.now() }, key), '127.0.0.1');
    expect(ctx.latest()).toEqual(['127.0.0.1:4101']);
    expect(s.stats()).toMatchObject({ received: 1, accepted: 1, peers: 1 });
    s.ingest(encodeGossipPacket({ ...msg, kind: 'goodbye', seq: 8, timestamp: Date.now() }, key), '127.0.0.1');
    expect(ctx.latest()).toEqual([]);
    expect(s.stats()).toMatchObject({ received: 2, accepted: 2, peers: 0 });
  });

  it('drops replays: the same packet twice, an older seq, an older incarnation; a replay never re-adds a peer', async () => {
    const { s, ctx } = await startStrategy({ secret: 's3cret' });
    // Stamps after this node's start (older ones are dropped as 'before-start', not as replays).
    const now = Date.now() + 10;
    const p5 = encodeGossipPacket({ ...msg, seq: 5, timestamp: now }, key);
    const p4 = encodeGossipPacket({ ...msg, seq: 4, timestamp: now - 1 }, key); // captured, never delivered
    s.ingest(p5, '127.0.0.1');
    s.ingest(p5, '127.0.0.1');
    expect(s.stats().dropped.replay).toBe(1);
    s.ingest(p4, '127.0.0.1');
    expect(s.stats().dropped.replay).toBe(2);
    s.ingest(encodeGossipPacket({ ...msg, kind: 'goodbye', seq: 6, timestamp: now }, key), '127.0.0.1');
    expect(ctx.latest()).toEqual([]);
    const setsAfterGoodbye = ctx.peerSets.length;
    s.ingest(p5, '127.0.0.1');
    s.ingest(p4, '127.0.0.1');
    expect(s.stats().dropped.replay).toBe(4);
    expect(ctx.peerSets.length).toBe(setsAfterGoodbye);
    expect(s.stats().peers).toBe(0);

    // A newer incarnation replaces the address; the older one is refused from then on.
    s.ingest(encodeGossipPacket({ ...msg, incarnation: msg.incarnation + 1, seq: 1, address: '127.0.0.1:4102', timestamp: now }, key), '127.0.0.1');
    expect(ctx.latest()).toEqual(['127.0.0.1:4102']);
    s.ingest(encodeGossipPacket({ ...msg, seq: 99, timestamp: now }, key), '127.0.0.1');
    expect(s.stats().dropped['stale-incarnation']).toBe(1);
    expect(ctx.latest()).toEqual(['127.0.0.1:4102']);
  });

  it('drops a replay sent over the wire after the peer left', async () => {
    const { s, ctx } = await startStrategy({ secret: 's3cret' });
    // Capture the peer's real announcements from the group, like an attacker on the segment.
    const spy = createSocket({ type: 'udp4', reuseAddr: true });
    sockets.push(spy);
    const captured: Buffer[] = [];
    spy.on('message', (m) => captured.push(m));
    await new Promise<void>((r) => spy.bind(port, group, () => r()));
    spy.addMembership(group, '127.0.0.1');
    const peer = new GossipStrategy({ group, port, secret: 's3cret' });
    const pctx = new RecordingContext({ name: 'peer', address: '127.0.0.1:4200', incarnation: 5 });
    await peer.start(pctx);
    await until(() => ctx.latest()?.includes('127.0.0.1:4200') === true, 2000, 'peer announce');
    await peer.stop();
    await until(() => ctx.latest()?.length === 0, 2000, 'goodbye');
    const announces = captured.filter((c) => decodeGossipPacket(c, key).ok && (decodeGossipPacket(c, key) as { msg: GossipMessage }).msg.name === 'peer');
    expect(announces.length).toBeGreaterThan(0);
    const replayer = createSocket({ type: 'udp4' });
    sockets.push(replayer);
    await new Promise<void>((r) => replayer.bind(0, '127.0.0.1', () => r()));
    replayer.setMulticastInterface('127.0.0.1');
    const before = s.stats().dropped.replay;
    for (const a of announces) replayer.send(a, port, group);
    await until(() => s.stats().dropped.replay >= before + announces.length, 2000, 'replays counted');
    expect(ctx.latest()).toEqual([]);
  });

  it('drops packets whose timestamp is more than 30 s off', async () => {
    const { s, ctx } = await startStrategy({ secret: 's3cret' });
    const now = Date.now();
    s.ingest(encodeGossipPacket({ ...msg, seq: 1, timestamp: now - GOSSIP_REPLAY_WINDOW_MS - 1000 }, key), '127.0.0.1');
    s.ingest(encodeGossipPacket({ ...msg, seq: 2, timestamp: now + GOSSIP_REPLAY_WINDOW_MS + 1000 }, key), '127.0.0.1');
    expect(s.stats().dropped.expired).toBe(2);
    expect(ctx.peerSets).toEqual([]);
    s.ingest(encodeGossipPacket({ ...msg, seq: 3, timestamp: now + GOSSIP_REPLAY_WINDOW_MS - 2000 }, key), '127.0.0.1');
    expect(ctx.latest()).toEqual(['127.0.0.1:4101']);
  });

  it('a fresh node refuses, and never dials, a replayed announce of a node that has left since (real UDP)', async () => {
    const secret = 's3cret';
    // An attacker on the segment records a node's announcements...
    const spy = createSocket({ type: 'udp4', reuseAddr: true });
    sockets.push(spy);
    const captured: Buffer[] = [];
    spy.on('message', (m) => captured.push(m));
    await new Promise<void>((r) => spy.bind(port, group, () => r()));
    spy.addMembership(group, '127.0.0.1');
    const gone = new GossipStrategy({ group, port, secret });
    const gctx = new RecordingContext({ name: 'gone', address: '127.0.0.1:4250', incarnation: 9 });
    await gone.start(gctx);
    const fromGone = () =>
      captured.filter((c) => {
        const r = decodeGossipPacket(c, key);
        return r.ok && r.msg.name === 'gone' && r.msg.kind === 'announce';
      });
    await until(() => fromGone().length >= 2, 2000, 'announces of the node that will leave');
    // ...which then leaves.
    gctx.abort.abort();
    await gone.stop();
    await new Promise((r) => setTimeout(r, 5)); // a clock tick between its last packet and the fresh node's start
    // A node starts fresh, well within the 30 s window of the captured packets, with no replay record of them.
    const { s, ctx } = await startStrategy({ secret });
    const replayer = createSocket({ type: 'udp4' });
    sockets.push(replayer);
    await new Promise<void>((r) => replayer.bind(0, '127.0.0.1', () => r()));
    replayer.setMulticastInterface('127.0.0.1');
    const replays = fromGone();
    for (const a of replays) replayer.send(a, port, group);
    const dialed = () => ctx.peerSets.flat().includes('127.0.0.1:4250');
    await until(() => s.stats().dropped['before-start'] >= replays.length || dialed(), 2000, 'the replays handled');
    // setPeers is what the topology dials: the dead address must never be in it.
    expect(dialed()).toBe(false);
    // A live node announcing now is still found: the fresh node hears, and only refuses the past.
    const live = new GossipStrategy({ group, port, secret });
    const lctx = new RecordingContext({ name: 'live', address: '127.0.0.1:4251', incarnation: 10 });
    await live.start(lctx);
    running.push({ s: live, ctx: lctx });
    await until(() => ctx.latest()?.includes('127.0.0.1:4251') === true, 2000, 'the live node');
    expect(dialed()).toBe(false);
    expect(s.stats().dropped['before-start']).toBe(replays.length);
  });

  it('drops tampered and wrong-secret packets on the receive path, counting each reason', async () => {
    const { s, ctx } = await startStrategy({ secret: 's3cret' });
    const sealed = encodeGossipPacket({ ...msg, timestamp: Date.now() }, key);
    for (let i = 0; i < sealed.length; i++) {
      const t = Buffer.from(sealed);
      t[i] = (t[i] as number) ^ 0x01;
      s.ingest(t, '127.0.0.1');
    }
    s.ingest(encodeGossipPacket({ ...msg, timestamp: Date.now() }, deriveGossipKey('wrong')), '127.0.0.1');
    s.ingest(encodeGossipPacket({ ...msg, timestamp: Date.now() }), '127.0.0.1');
    const st = s.stats();
    expect(st.accepted).toBe(0);
    expect(st.dropped['bad-magic']).toBe(4);
    expect(st.dropped['bad-version']).toBe(1);
    expect(st.dropped['not-encrypted']).toBe(2);
    expect(st.dropped['auth-failed']).toBe(sealed.length - 6 + 1);
    expect(droppedTotal(s)).toBe(st.received);
    expect(ctx.peerSets).toEqual([]);
  });

  it('ignores its own packets and other clusters; drops foreign sources on loopback', async () => {
    const { s, ctx } = await startStrategy();
    s.ingest(encodeGossipPacket({ ...msg, name: 'self', incarnation: 1 }), '127.0.0.1');
    s.ingest(encodeGossipPacket({ ...msg, cluster: 'other' }), '127.0.0.1');
    s.ingest(encodeGossipPacket({ ...msg, address: self.address, name: 'impostor' }), '127.0.0.1');
    s.ingest(encodeGossipPacket({ ...msg, seq: 1 }), '192.0.2.7');
    expect(s.stats()).toMatchObject({ received: 4, accepted: 0, ignored: { self: 1, 'other-cluster': 1 } });
    expect(s.stats().dropped['self-address']).toBe(1);
    expect(s.stats().dropped['foreign-source']).toBe(1);
    expect(ctx.peerSets).toEqual([]);
  });

  it('expires a peer not heard from for expireAfterMs, while this node hears itself and others', async () => {
    const { s, ctx } = await startStrategy({ intervalMs: 50, expireAfterMs: 300 });
    // Multicast loopback brings this node's own announcements back: its receive path works.
    await until(() => s.stats().ignored.self > 0, 1000, 'its own announcement');
    const chatty = keepAnnouncing(s, { ...msg, name: 'chatty', address: '127.0.0.1:4102' });
    try {
      s.ingest(encodeGossipPacket(msg), '127.0.0.1');
      await until(() => ctx.latest()?.join() === '127.0.0.1:4101,127.0.0.1:4102', 1000, 'both peers');
      await until(() => ctx.latest()?.join() === '127.0.0.1:4102', 1500, 'expiry of the silent peer');
    } finally {
      chatty.stop();
    }
  });

  it('keeps its peers while its receive socket is down, and expires the silent ones once it hears itself again', async () => {
    const { s, ctx } = await startStrategy({ intervalMs: 50, expireAfterMs: 200 });
    await until(() => s.stats().ignored.self > 0, 1000, 'its own announcement');
    const chatty = keepAnnouncing(s, { ...msg, name: 'chatty', address: '127.0.0.1:4102' });
    try {
      s.ingest(encodeGossipPacket(msg), '127.0.0.1');
      await until(() => ctx.latest()?.length === 2, 1000, 'both peers');
      (s as unknown as { rx: Socket }).rx.emit('error', new Error('simulated receive failure'));
      // The socket is reopened after 2 s: until then this node cannot know who is silent.
      await new Promise((r) => setTimeout(r, 1200));
      expect(ctx.latest()).toEqual(['127.0.0.1:4101', '127.0.0.1:4102']);
      expect(ctx.failures.map((f) => f.message)).toContainEqual(expect.stringMatching(/gossip receive socket failed: simulated receive failure/));
      await until(() => ctx.latest()?.join() === '127.0.0.1:4102', 4000, 'expiry once the socket is back');
    } finally {
      chatty.stop();
    }
  });

  it('keeps its peers while its own announcements stop coming back (multicast dropped), and says so once', async () => {
    const { s, ctx } = await startStrategy({ intervalMs: 50, expireAfterMs: 200 });
    await until(() => s.stats().ignored.self > 0, 1000, 'its own announcement');
    const deliver = GossipStrategy.prototype.ingest.bind(s);
    // From here on the socket delivers nothing (a firewall dropping the group's traffic); only
    // the packets the test hands over arrive.
    (s as unknown as { ingest: unknown }).ingest = () => {};
    const chatty = keepAnnouncing(s, { ...msg, name: 'chatty', address: '127.0.0.1:4102' }, deliver);
    try {
      deliver(encodeGossipPacket(msg), '127.0.0.1');
      await until(() => ctx.latest()?.length === 2, 1000, 'both peers');
      await new Promise((r) => setTimeout(r, 1000));
      expect(ctx.latest()).toEqual(['127.0.0.1:4101', '127.0.0.1:4102']);
      const deaf = ctx.failures.filter((f) => /has not heard its own announcements/.test(f.message));
      expect(deaf).toHaveLength(1);
      expect(deaf[0]?.message).toMatch(/silent peers are kept/);
      // Delivery is back: it hears itself again, and the silent peer goes after a full window.
      delete (s as unknown as { ingest?: unknown }).ingest;
      await until(() => ctx.latest()?.join() === '127.0.0.1:4102', 2000, 'expiry once it hears itself');
    } finally {
      chatty.stop();
    }
  });

  it('never empties the cluster by silence alone: the last silent peer is kept until another node is heard', async () => {
    const { s, ctx } = await startStrategy({ intervalMs: 50, expireAfterMs: 200 });
    await until(() => s.stats().ignored.self > 0, 1000, 'its own announcement');
    s.ingest(encodeGossipPacket(msg), '127.0.0.1');
    expect(ctx.latest()).toEqual(['127.0.0.1:4101']);
    await new Promise((r) => setTimeout(r, 1000));
    // Its own announcements come back, but nobody else is heard: multicast from other hosts may be dropped.
    expect(ctx.latest()).toEqual(['127.0.0.1:4101']);
    const alone = ctx.failures.filter((f) => /no packet from any other node/.test(f.message));
    expect(alone).toHaveLength(1);
    // Another node is heard: the silent one gets a full window to speak, then goes.
    const chatty = keepAnnouncing(s, { ...msg, name: 'newcomer', address: '127.0.0.1:4103' });
    try {
      await until(() => ctx.latest()?.join() === '127.0.0.1:4101,127.0.0.1:4103', 1000, 'the newcomer');
      await until(() => ctx.latest()?.join() === '127.0.0.1:4103', 2000, 'expiry of the silent peer');
    } finally {
      chatty.stop();
    }
  });

  it('a goodbye removes even the last peer at once', async () => {
    const { s, ctx } = await startStrategy({ intervalMs: 50, expireAfterMs: 200 });
    (s as unknown as { ingest: unknown }).ingest = () => {}; // hears nothing from the socket
    GossipStrategy.prototype.ingest.call(s, encodeGossipPacket(msg), '127.0.0.1');
    expect(ctx.latest()).toEqual(['127.0.0.1:4101']);
    GossipStrategy.prototype.ingest.call(s, encodeGossipPacket({ ...msg, kind: 'goodbye', seq: msg.seq + 1 }), '127.0.0.1');
    expect(ctx.latest()).toEqual([]);
  });

  it('never throws on random garbage and counts every packet (fast-check, thousands of buffers)', async () => {
    const { s: sealedS } = await startStrategy({ secret: 's3cret' });
    const { s: plainS } = await startStrategy({}, { name: 'plain', address: '127.0.0.1:4001', incarnation: 1 });
    const header = Buffer.from([0x46, 0x44, 0x4e, 0x47, 1]);
    const garbage = fc.oneof(
      fc.uint8Array({ maxLength: 1500 }),
      // Valid header, random rest: reaches the decryption and payload parsing.
      fc.tuple(fc.constantFrom(0, 1), fc.uint8Array({ maxLength: 400 })).map(([flag, rest]) => Buffer.concat([header, Buffer.from([flag]), rest])),
      // A real packet with random bytes spliced in.
      fc.tuple(fc.nat(60), fc.uint8Array({ minLength: 1, maxLength: 8 })).map(([at, bytes]) => {
        const b = Buffer.from(encodeGossipPacket(msg));
        Buffer.from(bytes).copy(b, Math.min(at, b.length - 1));
        return b;
      }),
    );
    let n = 0;
    fc.assert(
      fc.property(garbage, fc.constantFrom('127.0.0.1', '127.0.0.2', '10.0.0.1', 'not-an-ip'), (buf, source) => {
        n++;
        expect(() => sealedS.ingest(buf, source)).not.toThrow();
        expect(() => plainS.ingest(buf, source)).not.toThrow();
      }),
      { numRuns: 5000 },
    );
    for (const st of [sealedS, plainS]) {
      const x = st.stats();
      expect(x.received).toBe(n);
      expect(x.accepted + droppedTotal(st) + ignoredTotal(st)).toBe(n);
    }
    expect(sealedS.stats().accepted).toBe(0);
    expect(Object.keys(sealedS.stats().dropped).sort()).toEqual([...GOSSIP_DROP_REASONS].sort());
  });

  it('rate-limits the drop log line', async () => {
    const warns: unknown[] = [];
    const logger = { debug() {}, info() {}, warn: (o: unknown) => warns.push(o), error() {}, child: () => logger };
    const s = new GossipStrategy({ group, port });
    const ctx = new RecordingContext(self);
    (ctx as unknown as { logger: unknown }).logger = logger;
    await s.start(ctx);
    running.push({ s, ctx });
    for (let i = 0; i < 1000; i++) s.ingest(randomBytes(40), '127.0.0.1');
    expect(droppedTotal(s)).toBe(1000);
    expect(warns.length).toBeLessThanOrEqual(3);
  });

  it('refuses a configured interface this host does not have, before opening a socket', async () => {
    const s = new GossipStrategy({ group, port, interface: '192.0.2.254' });
    const ctx = new RecordingContext(self);
    const err = await s.start(ctx).then(
      () => undefined,
      (e: unknown) => e,
    );
    await s.stop();
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as ConfigError).key).toBe('topologies.compliance.config.interface');
    expect((err as Error).message).toMatch(/192\.0\.2\.254 is not an IPv4 address of this host; allowed: .*127\.0\.0\.1/);
  });

  it('falls back to loopback, with a warning, when the node address is not an address of this host', async () => {
    const warns: string[] = [];
    const logger = { debug() {}, info() {}, warn: (_o: unknown, m: string) => warns.push(m), error() {}, child: () => logger };
    const s = new GossipStrategy({ group, port });
    const ctx = new RecordingContext({ name: 'natted', address: '192.0.2.254:4000', incarnation: 1 });
    (ctx as unknown as { logger: unknown }).logger = logger;
    await s.start(ctx);
    running.push({ s, ctx });
    expect(s.interfaceAddress).toBe('127.0.0.1');
    expect(warns.some((w) => /gossip: the node address does not lead to an IPv4 address of this host; using loopback only/.test(w))).toBe(true);
  });

  it('reports socket errors through lookupFailed once per distinct error, and keeps running', async () => {
    // The receive port is held without reuse: every reopen (every 2 s) fails the same way.
    const blocker = createSocket({ type: 'udp4' });
    sockets.push(blocker);
    const p3 = port + 3;
    await new Promise<void>((r) => blocker.bind({ port: p3, exclusive: true }, () => r()));
    const { ctx } = await startStrategy({ port: p3, intervalMs: 50 });
    await new Promise((r) => setTimeout(r, 2500)); // past one socket retry
    const messages = ctx.failures.map((e) => e.message);
    expect(messages.length).toBeGreaterThanOrEqual(1);
    expect(new Set(messages).size).toBe(messages.length);
    expect(messages.some((m) => /EADDRINUSE/.test(m))).toBe(true);
  });

  it('reports EADDRINUSE when the port is held without reuse, and still announces', async () => {
    const blocker = createSocket({ type: 'udp4' });
    sockets.push(blocker);
    const heard: Buffer[] = [];
    blocker.on('message', (m) => heard.push(m));
    const p2 = port + 1;
    await new Promise<void>((r) => blocker.bind({ port: p2, exclusive: true }, () => r()));
    blocker.addMembership(group, '127.0.0.1');
    const { ctx } = await startStrategy({ port: p2 });
    expect(ctx.failures.map((e) => e.message).join()).toMatch(/EADDRINUSE/);
    await until(() => heard.length > 0, 2000, 'an announce despite the receive socket failing');
    expect(decodeGossipPacket(heard[0] as Buffer)).toMatchObject({ ok: true, msg: { name: 'self' } });
  });

  it('works with broadcast instead of multicast (loopback broadcast address)', async () => {
    const cfg: GossipStrategyConfig = { broadcastOnly: true, broadcastAddress: '127.255.255.255', port: port + 2 };
    const a = await startStrategy(cfg);
    const b = await startStrategy(cfg, { name: 'b', address: '127.0.0.1:4001', incarnation: 1 });
    await until(() => a.ctx.latest()?.[0] === '127.0.0.1:4001' && b.ctx.latest()?.[0] === '127.0.0.1:4000', 2000, 'broadcast discovery');
    // Broadcasts come back to the sender too: expiry can rely on hearing itself in this mode as well.
    await until(() => a.s.stats().ignored.self > 0, 1000, 'its own broadcast');
  });

  it('refuses a broadcast address that is not one of the interface', async () => {
    const s = new GossipStrategy({ group, port, broadcastOnly: true, broadcastAddress: '192.0.2.255' });
    // Found at start, after the registry prefixed constructor errors: the strategy names the full key.
    await expect(s.start(new RecordingContext(self))).rejects.toMatchObject({ key: 'topologies.compliance.config.broadcastAddress' });
    await s.stop();
  });
});

describe('gossip configuration', () => {
  it('refuses unknown keys, suggesting the closest one', () => {
    let err: unknown;
    try {
      new GossipStrategy({ group, intervalMS: 100 } as GossipStrategyConfig);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as ConfigError).key).toBe('intervalMS');
    expect((err as Error).message).toMatch(/unknown key; did you mean "intervalMs"\? Allowed keys: group, port, ttl, interface, intervalMs/);
  });
});
