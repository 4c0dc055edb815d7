/**
 * PubSub across real processes: each node is its own OS process (test/helpers/layer-proc.mjs)
 * running the built library, linked over loopback by the real mesh.
 */
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { isUp, type NodeProc } from '../helpers/cluster.js';
import { ask, LayerCluster, until } from '../helpers/layer-cluster.js';
import { requireBuild, requireTools } from '../helpers/requires.js';

const PROC = fileURLToPath(new URL('../helpers/layer-proc.mjs', import.meta.url));
const skip = requireBuild('pubsub multi-process tests');
const SECRET = 'pubsub-process-test-secret-0123456789';
/** How long a poll waits for a burst of deliveries. */
const DELIVERY_MS = 20_000;
const layer = new LayerCluster({ script: PROC, secret: SECRET, prefix: 'pubsub-proc' });

afterEach(() => layer.killAll());

const cluster = async (n: number): Promise<NodeProc[]> => (await layer.start(n, 'p')).procs;
const report = (p: NodeProc, id: string) => ask(p, { cmd: 'report', id }, 'report');
const stats = (p: NodeProc) => ask(p, { cmd: 'stats' }, 'stats');

describe.skipIf(skip !== undefined)('pubsub across processes', () => {
  it('fans out to subscribers on 3 nodes: every message once per subscriber, in publisher order; a node without subscribers gets no bytes', async () => {
    const [a, b, c, d] = (await cluster(4)) as NodeProc[];
    for (const p of [a, b, c] as NodeProc[]) await ask(p, { cmd: 'sub', id: 's', topic: 'chat.*' }, 'subscribed');
    await ask(a as NodeProc, { cmd: 'interest', topic: 'chat.room', to: ['p1', 'p2', 'p3'] }, 'interest');
    const before = (await stats(d as NodeProc)).lanes as Record<string, { bytesReceived: number }>;
    const N = 20_000;
    // The publisher yields now and then: its own local subscriber's queue (10,000) is drained by
    // the event loop, which a loop of 20,000 synchronous publishes would never let run.
    await ask(a as NodeProc, { cmd: 'pub', topic: 'chat.room', count: N, pauseEvery: 1000, pauseMs: 5 }, 'published', 60_000);
    await until(
      async () => ((await report(c as NodeProc, 's')).count as number) >= N && ((await report(b as NodeProc, 's')).count as number) >= N,
      'all deliveries',
      DELIVERY_MS,
    );
    for (const p of [a, b, c] as NodeProc[]) {
      const r = await report(p, 's');
      expect({ count: r.count, outOfOrder: r.outOfOrder, duplicates: r.duplicates }).toEqual({ count: N, outOfOrder: 0, duplicates: 0 });
    }
    // Interest routing, proved by the lane byte counters: the node with no subscriber received
    // nothing on the events lane while 20,000 messages of 100 bytes went to the others.
    const after = (await stats(d as NodeProc)).lanes as Record<string, { bytesReceived: number }>;
    expect((after.events?.bytesReceived ?? 0) - (before.events?.bytesReceived ?? 0)).toBe(0);
    expect(((await stats(d as NodeProc)).pubsub as { framesReceived: number }).framesReceived).toBe(0);
  });

  it('a subscriber that borrows its payloads gets 3 MiB messages intact, received into reused memory', async () => {
    const [a, b] = (await cluster(2)) as NodeProc[];
    await ask(b as NodeProc, { cmd: 'sub-borrow', id: 'big', topic: 'blobs' }, 'subscribed');
    await ask(a as NodeProc, { cmd: 'interest', topic: 'blobs', to: ['p2'] }, 'interest');
    const N = 24;
    await ask(a as NodeProc, { cmd: 'pub-bytes', topic: 'blobs', count: N, size: 3 * 1024 * 1024 }, 'published', 60_000);
    await until(async () => ((await report(b as NodeProc, 'big')).count as number) >= N, 'all large deliveries', DELIVERY_MS);
    const r = await report(b as NodeProc, 'big');
    expect({ count: r.count, intact: r.intact, values: r.values }).toEqual({ count: N, intact: N, values: [...Array(N).keys()] });
    const bodies = (await stats(b as NodeProc)).largeBodies as { reused: number; allocated: number };
    expect(bodies.reused + bodies.allocated).toBe(N);
    // At most a few in flight at once (one being received, the ones the handler still holds).
    expect(bodies.allocated).toBeLessThanOrEqual(4);
  });

  it('a queue group of 3 members on 3 nodes gets each of 30,000 messages exactly once in total, within ±20% of even', async () => {
    const nodes = await cluster(3);
    for (const p of nodes) await ask(p, { cmd: 'sub', id: 'q', topic: 'jobs.>', queue: 'workers' }, 'subscribed');
    await ask(nodes[0] as NodeProc, { cmd: 'interest', topic: 'jobs.run', to: ['p1', 'p2', 'p3'], group: 'workers' }, 'interest');
    const N = 30_000;
    await ask(nodes[0] as NodeProc, { cmd: 'pub', topic: 'jobs.run', count: N }, 'published', 60_000);
    let counts: number[] = [];
    await until(
      async () => {
        counts = [];
        for (const p of nodes) counts.push((await report(p, 'q')).count as number);
        return counts.reduce((x, y) => x + y, 0) >= N;
      },
      'every job delivered',
      DELIVERY_MS,
    );
    await new Promise((r) => setTimeout(r, 200));
    const reports = await Promise.all(nodes.map((p) => report(p, 'q')));
    expect(reports.reduce((x, r) => x + (r.count as number), 0)).toBe(N);
    expect(reports.reduce((x, r) => x + (r.distinct as number), 0)).toBe(N);
    for (const r of reports) {
      expect(r.duplicates).toBe(0);
      expect(Math.abs((r.count as number) - N / 3)).toBeLessThanOrEqual((N / 3) * 0.2);
    }
  });

  it('a node that joins late receives broadcasts from its first subscription on; a node killed mid-broadcast does not stop the others', async () => {
    const { procs, addresses, clusterName } = await layer.start(3, 'p');
    const [a, b, c] = procs;
    await ask(b as NodeProc, { cmd: 'sub', id: 's', topic: 'feed' }, 'subscribed');
    await ask(c as NodeProc, { cmd: 'sub', id: 's', topic: 'feed' }, 'subscribed');
    await ask(a as NodeProc, { cmd: 'interest', topic: 'feed', to: ['p2', 'p3'] }, 'interest');
    // Publish in the background, kill c in the middle.
    const published = ask(a as NodeProc, { cmd: 'pub', topic: 'feed', count: 5000, pauseEvery: 100, pauseMs: 2 }, 'published', 60_000);
    await until(async () => ((await report(b as NodeProc, 's')).count as number) > 1000, 'the broadcast under way', DELIVERY_MS);
    c?.kill('SIGKILL');
    await published;
    await until(async () => ((await report(b as NodeProc, 's')).count as number) >= 5000, 'b to get everything', DELIVERY_MS);
    const rb = await report(b as NodeProc, 's');
    expect({ count: rb.count, outOfOrder: rb.outOfOrder, duplicates: rb.duplicates }).toEqual({ count: 5000, outOfOrder: 0, duplicates: 0 });
    // A late joiner: subscribes, and gets exactly what is published after its interest is known.
    const joiner = await layer.startNode('p4', clusterName, [addresses[0] as string]);
    await joiner.proc.waitFor(isUp('p1'), 10_000, 'p1 up');
    await ask(joiner.proc, { cmd: 'sub', id: 's', topic: 'feed' }, 'subscribed');
    await ask(a as NodeProc, { cmd: 'interest', topic: 'feed', to: ['p4'] }, 'interest');
    await ask(a as NodeProc, { cmd: 'pub', topic: 'feed', count: 1000, start: 5000 }, 'published', 60_000);
    await until(async () => ((await report(joiner.proc, 's')).count as number) >= 1000, 'the joiner to get the new ones', DELIVERY_MS);
    const rj = await report(joiner.proc, 's');
    expect({ count: rj.count, outOfOrder: rj.outOfOrder, duplicates: rj.duplicates }).toEqual({ count: 1000, outOfOrder: 0, duplicates: 0 });
  });

  it('a slow subscriber does not slow a fast one on the same node, and its drops are counted', async () => {
    const [a, b] = (await cluster(2)) as NodeProc[];
    await ask(b as NodeProc, { cmd: 'sub', id: 'fast', topic: 'ticks' }, 'subscribed');
    await ask(b as NodeProc, { cmd: 'sub', id: 'slow', topic: 'ticks', slowMs: 20, maxQueue: 100 }, 'subscribed');
    await ask(a as NodeProc, { cmd: 'interest', topic: 'ticks', to: ['p2'] }, 'interest');
    const N = 10_000;
    const t0 = Date.now();
    await ask(a as NodeProc, { cmd: 'pub', topic: 'ticks', count: N }, 'published', 60_000);
    await until(async () => ((await report(b as NodeProc, 'fast')).count as number) >= N, 'the fast subscriber', DELIVERY_MS);
    const fastMs = Date.now() - t0;
    const slow = await report(b as NodeProc, 'slow');
    // The slow one handles one message per 20 ms: it cannot have seen more than a few hundred,
    // while the fast one got all 10,000 in far less time than the slow one would need (200 s).
    expect(fastMs).toBeLessThan(20_000);
    expect(slow.count as number).toBeLessThan(1000);
    const s = (await stats(b as NodeProc)).pubsub as { topics: Record<string, { dropped: number; delivered: number }> };
    expect(s.topics.ticks?.dropped).toBeGreaterThan(N - 1000 - 100);
    expect(s.topics.ticks?.delivered).toBe(2 * N);
  });
});

describe.skipIf(skip !== undefined || requireTools(['redis-server'], 'pubsub over redis between processes') !== undefined)(
  'pubsub over redis between processes that have no mesh link',
  () => {
    it('delivers every message once and in order through a real redis-server', async () => {
      const { startRedis } = await import('../helpers/redis-server.js');
      const redis = await startRedis();
      try {
        const pubsub = { adapter: 'redis', redis: { url: redis.url, presenceMs: 200 } };
        const clusterName = `pubsub-redis-${process.pid}`;
        const start = async (name: string) => (await layer.startNode(name, clusterName, [], { pubsub })).proc;
        const a = await start('r1');
        const b = await start('r2');
        await ask(b, { cmd: 'sub', id: 's', topic: 'orders.>' }, 'subscribed');
        await ask(a, { cmd: 'interest', topic: 'orders.new', to: ['r2'] }, 'interest');
        await ask(a, { cmd: 'pub', topic: 'orders.new', count: 5000 }, 'published', 60_000);
        await until(async () => ((await report(b, 's')).count as number) >= 5000, 'deliveries over redis', DELIVERY_MS);
        const r = await report(b, 's');
        expect({ count: r.count, outOfOrder: r.outOfOrder, duplicates: r.duplicates }).toEqual({ count: 5000, outOfOrder: 0, duplicates: 0 });
        // No mesh link between them: the messages went through Redis.
        const lanes = (await stats(b)).lanes as Record<string, { bytesReceived: number }>;
        expect(lanes.events?.bytesReceived ?? 0).toBe(0);
      } finally {
        await redis.stop();
      }
    });
  },
);
