import { afterEach, describe, expect, it } from 'vitest';
import type { PubSub } from '../../../src/pubsub/pubsub.js';
import type { DeliveryMeta } from '../../../src/pubsub/subscriber.js';
import { Hub, settle } from '../../helpers/pubsub-hub.js';

let engines: PubSub[] = [];
afterEach(async () => {
  await Promise.all(engines.map((e) => e.stop()));
  engines = [];
});

async function cluster(n: number): Promise<{ hub: Hub; nodes: PubSub[] }> {
  const hub = new Hub();
  const nodes: PubSub[] = [];
  for (let i = 1; i <= n; i++) nodes.push(await hub.node(`n${i}`));
  engines.push(...nodes);
  await settle();
  return { hub, nodes };
}

function collect(ps: PubSub, pattern: string, opts = {}): Array<{ payload: unknown; meta: DeliveryMeta }> {
  const got: Array<{ payload: unknown; meta: DeliveryMeta }> = [];
  ps.subscribe(pattern, (payload, meta) => void got.push({ payload, meta }), opts);
  return got;
}

describe('pubsub engine', () => {
  it('broadcast reaches every subscriber on every node, this one included, once each and in order', async () => {
    const { nodes } = await cluster(3);
    const got = nodes.map((n) => collect(n, 'rooms.1'));
    await settle();
    for (let i = 0; i < 100; i++) nodes[0]?.broadcast('rooms.1', { i });
    await settle(10);
    for (const g of got) expect(g.map((m) => (m.payload as { i: number }).i)).toEqual([...Array(100).keys()]);
    expect(got[1]?.[0]?.meta).toEqual({ topic: 'rooms.1', from: 'n1', lane: 'events' });
  });

  it('broadcastFrom skips this node; localBroadcast stays here; directBroadcast reaches one node', async () => {
    const { nodes } = await cluster(3);
    const [a, b, c] = nodes.map((n) => collect(n, 't'));
    await settle();
    nodes[0]?.broadcastFrom('t', 'from');
    nodes[0]?.localBroadcast('t', 'local');
    nodes[0]?.directBroadcast('n3', 't', 'direct');
    await settle(10);
    expect(a?.map((m) => m.payload)).toEqual(['local']);
    expect(b?.map((m) => m.payload)).toEqual(['from']);
    expect(c?.map((m) => m.payload)).toEqual(['from', 'direct']);
  });

  it('wildcards follow NATS: * one token, > the rest', async () => {
    const { nodes } = await cluster(2);
    const star = collect(nodes[1] as PubSub, 'rooms.*');
    const rest = collect(nodes[1] as PubSub, 'rooms.>');
    await settle();
    for (const t of ['rooms.1', 'rooms.1.typing', 'rooms', 'other.1']) nodes[0]?.broadcast(t, t);
    await settle(10);
    expect(star.map((m) => m.payload)).toEqual(['rooms.1']);
    expect(rest.map((m) => m.payload)).toEqual(['rooms.1', 'rooms.1.typing']);
    expect(rest[1]?.meta.topic).toBe('rooms.1.typing');
  });

  it('sends a topic only to nodes with a matching subscriber', async () => {
    const { hub, nodes } = await cluster(3);
    collect(nodes[1] as PubSub, 'wanted.>');
    await settle();
    for (let i = 0; i < 50; i++) nodes[0]?.broadcast('wanted.x', 'x'.repeat(100));
    for (let i = 0; i < 50; i++) nodes[0]?.broadcast('unwanted', 'y'.repeat(100));
    await settle(10);
    expect(hub.frameBytes.get('n2')).toBeGreaterThan(50 * 100);
    expect(hub.frameBytes.get('n3') ?? 0).toBe(0);
    expect(nodes[0]?.stats().topics.wanted?.published).toBe(50);
  });

  it('a queue group gets each message exactly once in total, spread evenly; plain subscribers get all', async () => {
    const { nodes } = await cluster(3);
    const members = nodes.map((n) => collect(n, 'jobs.*', { queue: 'workers' }));
    const plain = collect(nodes[2] as PubSub, 'jobs.>');
    await settle();
    const N = 3000;
    for (let i = 0; i < N; i++) nodes[i % 3]?.broadcast('jobs.run', i);
    await settle(20);
    const all = members.flatMap((m) => m.map((x) => x.payload as number));
    expect(all.length).toBe(N);
    expect(new Set(all).size).toBe(N);
    for (const m of members) expect(Math.abs(m.length - N / 3)).toBeLessThanOrEqual((N / 3) * 0.2);
    expect(plain.length).toBe(N);
  });

  it('two members of a group on one node share its messages', async () => {
    const { nodes } = await cluster(2);
    const m1 = collect(nodes[1] as PubSub, 'q', { queue: 'g' });
    const m2 = collect(nodes[1] as PubSub, 'q', { queue: 'g' });
    await settle();
    for (let i = 0; i < 1000; i++) nodes[0]?.broadcast('q', i);
    await settle(20);
    expect(m1.length + m2.length).toBe(1000);
    expect(Math.abs(m1.length - 500)).toBeLessThanOrEqual(100);
  });

  it('a slow subscriber does not hold up a fast one; its overflow drops the oldest and counts it', async () => {
    const { nodes } = await cluster(2);
    const fast = collect(nodes[1] as PubSub, 'tick');
    const slowSeen: number[] = [];
    nodes[1]?.subscribe(
      'tick',
      async (i) => {
        slowSeen.push(i as number);
        await new Promise((r) => setTimeout(r, 50));
      },
      { maxQueue: 10 },
    );
    await settle();
    for (let i = 0; i < 200; i++) nodes[0]?.broadcast('tick', i);
    await settle(20);
    expect(fast.length).toBe(200);
    const subs = nodes[1]?.subscribers() ?? [];
    const slow = subs.find((s) => s.maxQueue === 10);
    expect(slow?.dropped).toBeGreaterThanOrEqual(180);
    expect(nodes[1]?.stats().topics.tick?.dropped).toBe(slow?.dropped);
    // All 200 arrived before its first turn: it kept the newest 10, and runs them one at a time.
    expect(slowSeen[0]).toBe(190);
    expect(slowSeen.length).toBeLessThan(10);
  });

  it('a throwing handler is counted and stays subscribed', async () => {
    const { nodes } = await cluster(1);
    let calls = 0;
    nodes[0]?.subscribe('boom', () => {
      calls++;
      throw new Error('nope');
    });
    nodes[0]?.subscribe('boom', async () => {
      calls++;
      throw new Error('async nope');
    });
    nodes[0]?.localBroadcast('boom', 1);
    nodes[0]?.localBroadcast('boom', 2);
    await settle(5);
    expect(calls).toBe(4);
    expect(nodes[0]?.stats().topics.boom?.handlerErrors).toBe(4);
  });

  it("overflow: 'disconnect' ends the subscription with FOUNDATION_SUBSCRIBER_OVERFLOW", async () => {
    const { nodes } = await cluster(1);
    const errors: unknown[] = [];
    nodes[0]?.subscribe('x', () => new Promise(() => {}), { maxQueue: 3, overflow: 'disconnect', onError: (e) => errors.push(e) });
    for (let i = 0; i < 10; i++) nodes[0]?.localBroadcast('x', i);
    expect(errors).toHaveLength(1);
    expect(errors[0]).toMatchObject({ code: 'FOUNDATION_SUBSCRIBER_OVERFLOW', name: 'PubSubError' });
    expect(nodes[0]?.stats().subscriptions).toBe(0);
  });

  it('stream() is an async iterator that ends on stop() and on abort', async () => {
    const { nodes } = await cluster(2);
    const ps = nodes[1] as PubSub;
    const stream = ps.stream<number>('s.>');
    await settle();
    for (let i = 0; i < 5; i++) nodes[0]?.broadcast('s.x', i);
    const seen: number[] = [];
    for await (const msg of stream) {
      seen.push(msg.payload);
      expect(msg).toMatchObject({ topic: 's.x', from: 'n1', lane: 'events' });
      if (seen.length === 5) stream.stop();
    }
    expect(seen).toEqual([0, 1, 2, 3, 4]);
    const ac = new AbortController();
    const s2 = ps.stream('s.>', { signal: ac.signal });
    const done = (async () => {
      for await (const _ of s2) {
      }
      return 'ended';
    })();
    ac.abort();
    expect(await done).toBe('ended');
    expect(ps.stats().subscriptions).toBe(0);
  });

  it('refuses bad topics and non-serializable payloads at the call site', async () => {
    const { nodes } = await cluster(1);
    const ps = nodes[0] as PubSub;
    expect(() => ps.broadcast('a.*', 1)).toThrowError(expect.objectContaining({ code: 'FOUNDATION_TOPIC_INVALID' }));
    expect(() => ps.broadcast('', 1)).toThrowError(expect.objectContaining({ code: 'FOUNDATION_TOPIC_INVALID' }));
    expect(() => ps.broadcast('x'.repeat(300), 1)).toThrowError(expect.objectContaining({ code: 'FOUNDATION_TOPIC_INVALID' }));
    // No one listens anywhere, and still the payload is checked.
    expect(() => ps.broadcast('fine', { f: () => 1 })).toThrowError(expect.objectContaining({ code: 'FOUNDATION_NOT_SERIALIZABLE' }));
    expect(() => ps.subscribe('a..b', () => {})).toThrowError(expect.objectContaining({ code: 'FOUNDATION_TOPIC_INVALID' }));
    expect(() => ps.subscribe('a', () => {}, { maxQueue: 0 })).toThrowError(/maxQueue/);
    expect(() => ps.broadcast('a', 1, { lane: 'fast' as never })).toThrowError(/lane/);
  });

  it('a node that goes down mid-stream does not stop the others; a late joiner gets messages from its subscription on', async () => {
    const { hub, nodes } = await cluster(3);
    const got2 = collect(nodes[1] as PubSub, 'feed');
    collect(nodes[2] as PubSub, 'feed');
    await settle();
    for (let i = 0; i < 10; i++) nodes[0]?.broadcast('feed', i);
    hub.kill('n3');
    for (let i = 10; i < 20; i++) nodes[0]?.broadcast('feed', i);
    const late = await hub.node('n4');
    engines.push(late);
    await settle();
    const got4 = collect(late, 'feed');
    await settle();
    for (let i = 20; i < 30; i++) nodes[0]?.broadcast('feed', i);
    await settle(10);
    expect(got2.map((m) => m.payload)).toEqual([...Array(30).keys()]);
    expect(got4.map((m) => m.payload)).toEqual([...Array(10).keys()].map((i) => i + 20));
    // The dead node's interest went with it.
    expect(nodes[0]?.interest.table.nodes().sort()).toEqual(['n2', 'n4']);
  });

  it('compresses above the threshold and delivers the same value', async () => {
    const { hub, nodes } = await cluster(2);
    const got = collect(nodes[1] as PubSub, 'big');
    await settle();
    const text = 'abc'.repeat(10_000);
    nodes[0]?.broadcast('big', text, { compressAbove: 1024 });
    await settle(10);
    expect(got[0]?.payload).toBe(text);
    expect(hub.frameBytes.get('n2')).toBeLessThan(2000);
  });

  it('delivers a mixed batch (plain, queue group, traced, direct, raw, large) exactly as one publish per job would', async () => {
    const { hub, nodes } = await cluster(2);
    const [a, b] = nodes as [PubSub, PubSub];
    const plain = collect(b, 'mix.>');
    const group = collect(b, 'mix.g', { queue: 'workers' });
    const other = collect(b, 'other');
    await settle();
    const big = Buffer.alloc(20_000, 3);
    // One job: all of it goes out as batches (the large payload alone, between them).
    a.broadcast('mix.a', 1);
    a.broadcast('mix.a', 2);
    a.broadcast('mix.g', 3);
    a.broadcast('mix.a', 4, { traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01' });
    a.directBroadcast('n2', 'mix.a', 5);
    a.broadcast('mix.a', Buffer.from('raw'));
    a.broadcast('mix.a', big);
    a.broadcast('other', 7);
    a.broadcast('mix.a', 8);
    await settle(10);
    expect(plain.map((m) => (Buffer.isBuffer(m.payload) ? m.payload.length : m.payload))).toEqual([1, 2, 3, 4, 5, 3, 20_000, 8]);
    expect(group.map((m) => m.payload)).toEqual([3]);
    expect(other.map((m) => m.payload)).toEqual([7]);
    expect(plain[0]?.meta).toEqual({ topic: 'mix.a', from: 'n1', lane: 'events' });
    expect(plain[2]?.meta.topic).toBe('mix.g');
    expect(plain[3]?.meta.traceparent).toBe('00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01');
    expect(plain[4]?.meta.traceparent).toBeUndefined();
    expect(Buffer.from(plain[6]?.payload as Uint8Array).equals(big)).toBe(true);
    expect(b.stats().topics.mix?.delivered).toBe(9);
    expect(b.stats().framesReceived).toBe(9);
    expect(hub.frameBytes.get('n2')).toBeGreaterThan(big.length);
  });
});
