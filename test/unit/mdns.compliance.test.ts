/**
 * The `mdns` strategy against real multicast DNS on loopback: every instance here joins and
 * sends on 127.0.0.1 only (the strategy derives that from the 127.0.0.1 node addresses, and the
 * raw sockets of this file are pinned to it), so nothing leaves the host. Several instances and
 * processes share UDP 5353 (SO_REUSEADDR); each setup uses its own cluster name, so a parallel
 * run on the same host cannot disturb it.
 */
import { createSocket } from 'node:dgram';
import { createRequire } from 'node:module';
import type * as DnsPacket from 'dns-packet';
import makeMdns from 'multicast-dns';
import { afterEach, describe, expect, it } from 'vitest';
import { MDNS_MISSING_MESSAGE, MdnsStrategy, type MdnsStrategyConfig, mdnsAvailable } from '../../src/discovery/mdns.js';
import { ConfigError } from '../../src/errors.js';
import { describeStrategyCompliance, RecordingContext, until } from '../compliance/strategy-compliance.js';

const GROUP = '224.0.0.251';
const require = createRequire(import.meta.url);
// multicast-dns's own DNS codec, loaded from where multicast-dns resolves it.
const dnsPacket = createRequire(require.resolve('multicast-dns'))('dns-packet') as typeof DnsPacket;
let run = 0;
const newCluster = () => `mdns-test-${process.pid}-${++run}`;

interface Running {
  strategy: MdnsStrategy;
  ctx: RecordingContext;
}

async function startNode(name: string, port: number, clusterName: string, config: MdnsStrategyConfig = {}): Promise<Running> {
  const strategy = new MdnsStrategy(config);
  const ctx = new RecordingContext({ name, address: `127.0.0.1:${port}`, incarnation: Date.now() * 1000 + port }, clusterName);
  await strategy.start(ctx);
  return { strategy, ctx };
}

async function stopNode(r: Running): Promise<void> {
  r.ctx.abort.abort();
  await r.strategy.stop();
}

describeStrategyCompliance({
  name: 'mdns',
  async setup() {
    const clusterName = newCluster();
    const peers = new Map<string, Running>();
    for (const port of [4101, 4102]) peers.set(`127.0.0.1:${port}`, await startNode(`p${port}`, port, clusterName));
    // A node of another cluster on the same link: must never be reported.
    const stranger = await startNode('stranger', 4199, `${clusterName}-other`);
    let next = 4110;
    return {
      self: { name: 'self', address: '127.0.0.1:4000', incarnation: 1 },
      clusterName,
      expectedPeers: ['127.0.0.1:4101', '127.0.0.1:4102'],
      create: () => new MdnsStrategy(),
      addPeer: async () => {
        const port = next++;
        const address = `127.0.0.1:${port}`;
        peers.set(address, await startNode(`n${port}`, port, clusterName));
        return address;
      },
      // Stopping sends the goodbye (TTL 0): the peer must go at once, not after 120 s.
      removePeer: async (address: string) => {
        const r = peers.get(address);
        peers.delete(address);
        if (r) await stopNode(r);
      },
      teardown: async () => {
        await Promise.all([...peers.values(), stranger].map(stopNode));
      },
    };
  },
  invalidConfigs: [
    { config: { serviceType: 'foundation' }, key: 'serviceType', create: (c) => new MdnsStrategy(c) },
    { config: { serviceType: '_this-name-is-too-long._tcp' }, key: 'serviceType', create: (c) => new MdnsStrategy(c) },
    { config: { domain: 'bad domain' }, key: 'domain', create: (c) => new MdnsStrategy(c) },
    { config: { interface: 'eth0' }, key: 'interface', create: (c) => new MdnsStrategy(c) },
    { config: { interface: '224.0.0.251' }, key: 'interface', create: (c) => new MdnsStrategy(c) },
    { config: { ttlSeconds: 0 }, key: 'ttlSeconds', create: (c) => new MdnsStrategy(c) },
    { config: { ttlSeconds: 1.5 }, key: 'ttlSeconds', create: (c) => new MdnsStrategy(c) },
    { config: { queryIntervalMs: 10 }, key: 'queryIntervalMs', create: (c) => new MdnsStrategy(c) },
    { config: { hostLabel: 'a.b' }, key: 'hostLabel', create: (c) => new MdnsStrategy(c) },
    { config: { port: 70000 }, key: 'port', create: (c) => new MdnsStrategy(c) },
    { config: { announcements: 11 }, key: 'announcements', create: (c) => new MdnsStrategy(c) },
    { config: { serviceTyp: '_foundation._tcp' }, key: 'serviceTyp', create: (c) => new MdnsStrategy(c) },
  ],
});

// ---------------------------------------------------------------------------
// What the compliance suite does not cover: the wire format, interop details, defences.

/** A loose view of a decoded record and response. */
interface Rec {
  name: string;
  type: string;
  ttl?: number;
  flush?: boolean;
  data?: unknown;
}
interface Pkt {
  answers: Rec[];
  additionals: Rec[];
}

/** A raw multicast-dns socket on loopback, recording every response it sees. */
function rawMdns() {
  const m = makeMdns({ interface: '127.0.0.1', bind: GROUP, ip: GROUP, port: 5353, loopback: true });
  const responses: Pkt[] = [];
  m.on('response', (p) => responses.push({ answers: (p.answers ?? []) as Rec[], additionals: (p.additionals ?? []) as Rec[] }));
  const ready = new Promise<void>((resolve) => m.on('ready', () => resolve()));
  return { m, responses, ready, close: () => new Promise<void>((r) => m.destroy(() => r())) };
}

const txtOf = (data: unknown) => Object.fromEntries((data as Buffer[]).map((b) => b.toString().split('=') as [string, string]));

interface Handmade {
  ptr: DnsPacket.StringAnswer;
  rest: DnsPacket.Answer[];
}

/** The records of a handmade instance `<label>._foundation._tcp.local`, on host `<label>-host.local` (127.0.0.1). */
function handmade(label: string, port: number, txt: string[], ttl: number): Handmade {
  const service = '_foundation._tcp.local';
  return {
    ptr: { name: service, type: 'PTR', ttl, data: `${label}.${service}` },
    rest: [
      { name: `${label}.${service}`, type: 'SRV', ttl, flush: true, data: { port, target: `${label}-host.local` } },
      { name: `${label}.${service}`, type: 'TXT', ttl, flush: true, data: txt },
      { name: `${label}-host.local`, type: 'A', ttl, flush: true, data: '127.0.0.1' },
    ],
  };
}

/** Makes a raw responder answer queries about an instance, as a live node does (all its records, at once), until stopped. */
function answerFor(raw: ReturnType<typeof rawMdns>, r: Handmade): () => void {
  const names = new Set([r.ptr.name, ...r.rest.map((x) => x.name)].map((n) => n.toLowerCase()));
  const listener = (q: { questions: Array<{ name: string }> }) => {
    if (q.questions.some((question) => names.has(question.name.toLowerCase()))) raw.m.respond({ answers: [r.ptr, ...r.rest] });
  };
  raw.m.on('query', listener);
  return () => raw.m.removeListener('query', listener);
}

describe('mdns strategy', () => {
  const cleanup: Array<() => Promise<void>> = [];
  afterEach(async () => {
    for (const f of cleanup.splice(0).reverse()) await f();
  });

  it('finds the optional multicast-dns package', async () => {
    expect(await mdnsAvailable()).toBe(true);
  });

  it('without multicast-dns, start fails with a ConfigError that says how to install it', async () => {
    class Missing extends MdnsStrategy {
      protected override readonly moduleSpecifier = 'foundation-no-such-package-mdns';
    }
    const s = new Missing();
    const ctx = new RecordingContext({ name: 'x', address: '127.0.0.1:4000', incarnation: 1 });
    const err = await s.start(ctx).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as ConfigError).key).toBe('topologies.compliance.strategy');
    expect((err as Error).message).toContain(MDNS_MISSING_MESSAGE);
    await s.stop();
  });

  it('refuses an interface address this host does not have, before opening a socket', async () => {
    const s = new MdnsStrategy({ interface: '192.0.2.254' });
    const ctx = new RecordingContext({ name: 'x', address: '127.0.0.1:4000', incarnation: 1 });
    const err = await s.start(ctx).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as ConfigError).key).toBe('topologies.compliance.config.interface');
    await s.stop();
  });

  it('falls back to loopback, with a warning, when the node address is not an address of this host', async () => {
    // Before the interface helpers were shared, mdns derived 192.0.2.254 itself and refused to start.
    const warns: string[] = [];
    const logger = { debug() {}, info() {}, warn: (_o: unknown, m: string) => warns.push(m), error() {}, child: () => logger };
    const s = new MdnsStrategy({ announcements: 0 });
    const ctx = new RecordingContext({ name: 'natted', address: '192.0.2.254:4000', incarnation: 1 }, newCluster());
    (ctx as unknown as { logger: unknown }).logger = logger;
    await s.start(ctx);
    cleanup.push(() => stopNode({ strategy: s, ctx }));
    expect(s.interfaceAddress).toBe('127.0.0.1');
    expect(warns.some((w) => /mdns: the node address does not lead to an IPv4 address of this host; using loopback only/.test(w))).toBe(true);
  });

  it('announces a DNS-SD instance (PTR, SRV, TXT, A) on loopback, and says goodbye on stop', async () => {
    const raw = rawMdns();
    cleanup.push(raw.close);
    await raw.ready;
    const cluster = newCluster();
    const node = await startNode('wire.node', 4301, cluster, { announcements: 2 });
    cleanup.push(() => stopNode(node));
    expect(node.strategy.interfaceAddress).toBe('127.0.0.1');
    expect(node.strategy.instanceName).toBe('wire-node._foundation._tcp.local');
    const instance = node.strategy.instanceName;
    const mine = () => raw.responses.filter((p) => p.answers.some((a) => a.name === instance));
    await until(() => mine().length >= 2, 4000, 'two announcements');
    const [first, second] = mine() as [Pkt, Pkt];
    const all = [...first.answers];
    const ptr = all.find((a) => a.type === 'PTR' && a.name === '_foundation._tcp.local');
    expect(ptr?.data).toBe(instance);
    expect(all.find((a) => a.type === 'PTR' && a.name === '_services._dns-sd._udp.local')?.data).toBe('_foundation._tcp.local');
    const srv = all.find((a) => a.type === 'SRV');
    expect(srv).toMatchObject({ name: instance, ttl: 120, flush: true, data: { port: 4301, target: 'wire-node.local' } });
    const txt = all.find((a) => a.type === 'TXT');
    expect(txtOf(txt?.data)).toEqual({ cluster, node: 'wire.node', inc: String(node.ctx.self.incarnation), v: '1' });
    expect(all.find((a) => a.type === 'A')).toMatchObject({ name: 'wire-node.local', data: '127.0.0.1', flush: true });
    // RFC 6762 §8.3: announcements at least one second apart (the packets carry no timestamp: count is checked above).
    expect(second.answers.length).toBe(first.answers.length);

    await stopNode(node);
    await until(() => mine().some((p) => p.answers.every((a) => a.ttl === 0)), 2000, 'a goodbye');
    const bye = mine().find((p) => p.answers.every((a) => a.ttl === 0));
    expect(bye?.answers.map((a) => a.type).sort()).toEqual(['PTR', 'SRV', 'TXT']);
  });

  it('answers queries: multicast to port-5353 queriers, legacy unicast (TTL <= 10, ID echoed) to others', async () => {
    const raw = rawMdns();
    cleanup.push(raw.close);
    await raw.ready;
    const node = await startNode('answerer', 4302, newCluster(), { announcements: 0 });
    cleanup.push(() => stopNode(node));
    const instance = node.strategy.instanceName;
    raw.m.query({ questions: [{ name: instance, type: 'SRV' }] });
    await until(() => raw.responses.some((p) => p.answers.some((a) => a.type === 'SRV' && a.name === instance)), 3000, 'a multicast SRV answer');
    const res = raw.responses.find((p) => p.answers.some((a) => a.type === 'SRV' && a.name === instance));
    // The SRV target's address comes along as an additional record.
    expect(res?.additionals.find((a) => a.type === 'A')).toMatchObject({ name: 'answerer.local', data: '127.0.0.1' });

    // Legacy unicast: a plain DNS client on an ephemeral port.
    const sock = createSocket('udp4');
    cleanup.push(() => new Promise((r) => sock.close(() => r())));
    // Every responder on loopback answers (other tests' processes too): keep them all.
    const replies: DnsPacket.Packet[] = [];
    sock.on('message', (m) => {
      try {
        replies.push(dnsPacket.decode(m));
      } catch {
        // Not ours to judge.
      }
    });
    await new Promise<void>((r) => sock.bind(0, '127.0.0.1', () => r()));
    sock.setMulticastInterface('127.0.0.1');
    const query = dnsPacket.encode({ type: 'query', id: 4242, questions: [{ name: '_foundation._tcp.local', type: 'PTR' }] });
    sock.send(query, 5353, GROUP);
    const ours = () => replies.find((p) => ((p.answers ?? []) as Rec[]).some((a) => a.type === 'PTR' && a.data === instance));
    await until(() => ours() !== undefined, 2000, 'a legacy unicast answer');
    const decoded = ours() as DnsPacket.Packet;
    expect(decoded.id).toBe(4242);
    expect(decoded.questions).toEqual([expect.objectContaining({ name: '_foundation._tcp.local', type: 'PTR' })]);
    const answer = ((decoded.answers ?? []) as Rec[]).find((a) => a.type === 'PTR' && a.data === instance);
    expect(answer?.flush).toBe(false);
    expect(answer?.ttl).toBeLessThanOrEqual(10);
  });

  it('browses other responders: answers and additionals, other clusters and versions ignored, TTL expiry, goodbye', async () => {
    const raw = rawMdns();
    cleanup.push(raw.close);
    await raw.ready;
    const cluster = newCluster();
    const watcher = await startNode('watcher', 4303, cluster, { announcements: 0 });
    cleanup.push(() => stopNode(watcher));
    const rec = handmade;
    // A live peer: it answers the strategy's queries, as a running node does.
    const lasting = rec('lasting', 4504, [`cluster=${cluster}`, 'node=lasting', 'inc=5', 'v=1'], 120);
    const stopAnswering = answerFor(raw, lasting);
    raw.m.respond({ answers: [lasting.ptr, ...lasting.rest] });
    await until(() => watcher.ctx.latest()?.join() === '127.0.0.1:4504', 3000, 'the lasting instance');
    // PTR in the answers, everything else only in the additionals (what avahi does).
    const good = rec('handmade', 4501, [`cluster=${cluster}`, 'node=handmade', 'inc=7', 'v=1'], 2);
    const otherCluster = rec('foreign', 4502, ['cluster=someone-else', 'node=foreign', 'inc=1', 'v=1'], 120);
    const futureVersion = rec('future', 4503, [`cluster=${cluster}`, 'node=future', 'inc=1', 'v=9'], 120);
    for (const r of [good, otherCluster, futureVersion]) raw.m.respond({ answers: [r.ptr], additionals: r.rest });
    await until(() => watcher.ctx.latest()?.join() === '127.0.0.1:4501,127.0.0.1:4504', 3000, 'the handmade instance');
    // TTL 2 s and nobody refreshes it, while this node hears itself and the live peer: it expires
    // (after the strategy's refresh queries at 80-95 %, and at most one more look).
    const t0 = Date.now();
    await until(() => watcher.ctx.latest()?.join() === '127.0.0.1:4504', 6000, 'expiry of a 2 s record');
    expect(Date.now() - t0).toBeLessThan(5500);
    expect(watcher.strategy.stats().ownPacketsReceived).toBeGreaterThan(0);
    expect(watcher.ctx.failures).toEqual([]);

    // It stops, and says goodbye. A goodbye from an OLDER incarnation of that instance is ignored...
    stopAnswering();
    const older = rec('lasting', 4504, [`cluster=${cluster}`, 'node=lasting', 'inc=4', 'v=1'], 0);
    raw.m.respond({ answers: [older.ptr, ...older.rest.slice(0, 2)] });
    await new Promise((r) => setTimeout(r, 300));
    expect(watcher.ctx.latest()).toEqual(['127.0.0.1:4504']);
    // ...the instance's own goodbye removes it at once.
    const bye = rec('lasting', 4504, [`cluster=${cluster}`, 'node=lasting', 'inc=5', 'v=1'], 0);
    raw.m.respond({ answers: [bye.ptr, ...bye.rest.slice(0, 2)] });
    await until(() => watcher.ctx.latest()?.length === 0, 1000, 'goodbye');
    expect(watcher.strategy.stats().goodbyesReceived).toBeGreaterThan(0);
  });

  it('resolves an instance whose PTR came alone by querying its SRV, TXT and A records', async () => {
    const raw = rawMdns();
    cleanup.push(raw.close);
    await raw.ready;
    const cluster = newCluster();
    const instance = `lonely._foundation._tcp.local`;
    const asked: string[] = [];
    raw.m.on('query', (q) => {
      for (const question of q.questions) {
        asked.push(`${question.type} ${question.name}`);
        if (question.name === instance && question.type === 'SRV')
          raw.m.respond([{ name: instance, type: 'SRV', ttl: 120, data: { port: 4601, target: 'lonely-host.local' } }]);
        if (question.name === instance && question.type === 'TXT')
          raw.m.respond([{ name: instance, type: 'TXT', ttl: 120, data: [`cluster=${cluster}`, 'node=lonely', 'inc=1', 'v=1'] }]);
        if (question.name === 'lonely-host.local' && question.type === 'A')
          raw.m.respond([{ name: 'lonely-host.local', type: 'A', ttl: 120, data: '127.0.0.1' }]);
      }
    });
    const watcher = await startNode('resolver', 4304, cluster, { announcements: 0 });
    cleanup.push(() => stopNode(watcher));
    raw.m.respond([{ name: '_foundation._tcp.local', type: 'PTR', ttl: 120, data: instance }]);
    await until(() => watcher.ctx.latest()?.join() === '127.0.0.1:4601', 4000, 'the resolved instance');
    expect(asked).toEqual(expect.arrayContaining([`SRV ${instance}`, `TXT ${instance}`, 'A lonely-host.local']));
  });

  it('never empties the cluster by TTL alone: the last peer is kept (unknown) until another responder is heard', async () => {
    const raw = rawMdns();
    cleanup.push(raw.close);
    await raw.ready;
    const cluster = newCluster();
    const watcher = await startNode('lastone', 4306, cluster, { announcements: 0 });
    cleanup.push(() => stopNode(watcher));
    const gone = handmade('gone', 4511, [`cluster=${cluster}`, 'node=gone', 'inc=1', 'v=1'], 2);
    raw.m.respond({ answers: [gone.ptr, ...gone.rest] });
    await until(() => watcher.ctx.latest()?.join() === '127.0.0.1:4511', 3000, 'the instance');
    // Its 2 s records end, this node hears its own queries, but no other responder answers.
    await new Promise((r) => setTimeout(r, 4000));
    expect(watcher.ctx.latest()).toEqual(['127.0.0.1:4511']);
    const kept = watcher.ctx.failures.filter((f) => /no other mDNS responder was heard/.test(f.message));
    expect(kept).toHaveLength(1);
    expect(watcher.strategy.stats().heldRecords).toBeGreaterThan(0);
    // A live responder shows up: the silent instance is asked for once more, then goes.
    const alive = handmade('alive', 4512, [`cluster=${cluster}`, 'node=alive', 'inc=1', 'v=1'], 120);
    answerFor(raw, alive);
    raw.m.respond({ answers: [alive.ptr, ...alive.rest] });
    await until(() => watcher.ctx.latest()?.join() === '127.0.0.1:4512', 8000, 'only the live instance');
  });

  it('keeps peers whose records end while it does not hear its own packets, and lets them go once it does', async () => {
    const raw = rawMdns();
    cleanup.push(raw.close);
    await raw.ready;
    const cluster = newCluster();
    const watcher = await startNode('deaf', 4307, cluster, { announcements: 0 });
    cleanup.push(() => stopNode(watcher));
    const lasting = handmade('steady', 4521, [`cluster=${cluster}`, 'node=steady', 'inc=1', 'v=1'], 120);
    answerFor(raw, lasting);
    const short = handmade('short', 4522, [`cluster=${cluster}`, 'node=short', 'inc=1', 'v=1'], 2);
    raw.m.respond({ answers: [lasting.ptr, short.ptr, ...lasting.rest, ...short.rest] });
    await until(() => watcher.ctx.latest()?.join() === '127.0.0.1:4521,127.0.0.1:4522', 3000, 'both instances');
    // The socket stops delivering: nothing arrives, not even this node's own queries.
    const m = (watcher.strategy as unknown as { running: { socket: { mdns: NodeJS.EventEmitter } } }).running.socket.mdns;
    const saved = { query: m.listeners('query'), response: m.listeners('response') };
    m.removeAllListeners('query');
    m.removeAllListeners('response');
    try {
      await new Promise((r) => setTimeout(r, 3000));
      expect(watcher.ctx.latest()).toEqual(['127.0.0.1:4521', '127.0.0.1:4522']);
      const deaf = watcher.ctx.failures.filter((f) => /did not hear its own query/.test(f.message));
      expect(deaf).toHaveLength(1);
    } finally {
      for (const l of saved.query) m.on('query', l as (...a: unknown[]) => void);
      for (const l of saved.response) m.on('response', l as (...a: unknown[]) => void);
    }
    // Hearing itself (and the live peer) again, the silent instance goes at its next look.
    await until(() => watcher.ctx.latest()?.join() === '127.0.0.1:4521', 15_000, 'the silent instance to go');
  });

  it('refuses unknown keys, suggesting the closest one', () => {
    let err: unknown;
    try {
      new MdnsStrategy({ serviceTyp: '_foundation._tcp' } as MdnsStrategyConfig);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as Error).message).toMatch(/unknown key; did you mean "serviceType"\? Allowed keys: serviceType, domain/);
  });

  it('ignores malformed datagrams and counts them', async () => {
    const watcher = await startNode('sturdy', 4305, newCluster(), { announcements: 0 });
    cleanup.push(() => stopNode(watcher));
    const sock = createSocket('udp4');
    cleanup.push(() => new Promise((r) => sock.close(() => r())));
    await new Promise<void>((r) => sock.bind(0, '127.0.0.1', () => r()));
    sock.setMulticastInterface('127.0.0.1');
    const garbage = [Buffer.from([1, 2, 3]), Buffer.alloc(12, 0xff), Buffer.from('not a dns packet at all, really not')];
    for (const g of garbage) sock.send(g, 5353, GROUP);
    await until(() => watcher.strategy.stats().malformed >= garbage.length, 2000, 'malformed packets to be counted');
    expect(watcher.ctx.failures).toEqual([]);
  });
});
