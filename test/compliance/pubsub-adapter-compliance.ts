/**
 * The pubsub adapter compliance suite: the semantics every transport under `node.pubsub` must
 * give (docs/guides/pubsub.md), run against real transports: the mesh (real Foundation nodes on
 * loopback) and redis (a real redis-server). Each adapter's test file calls
 * `pubsubAdapterCompliance` with a factory of clusters.
 */
import { afterEach, describe, expect, it } from 'vitest';
import type { PubSub } from '../../src/pubsub/pubsub.js';

/** A running cluster of pubsub engines over the adapter under test. */
export interface PubSubTestCluster {
  /** Engines, one per node; `names[i]` is the node name of `nodes[i]`. */
  nodes: PubSub[];
  names: string[];
  /** Stops node `i` (gracefully); the others must see it go. */
  stopNode(i: number): Promise<void>;
  /** Stops everything. */
  close(): Promise<void>;
}

/** Polls `cond` every 10 ms until it holds, or fails with `what` after `timeoutMs`. */
export async function waitFor(cond: () => boolean, what: string, timeoutMs = 5000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** Waits until `publisher` routes `topic` to every node of `to` (their interest arrived). */
export function waitInterest(publisher: PubSub, topic: string, to: string[], group?: string): Promise<void> {
  return waitFor(
    () => {
      const route = publisher.interest.table.route(topic);
      if (group === undefined) return to.every((n) => route.plain.has(n));
      const members = route.groups.get(group) ?? [];
      return to.every((n) => members.some((m) => m.node === n));
    },
    `${publisher.self} to learn the interest of ${to.join(', ')} in ${topic}`,
  );
}

export function pubsubAdapterCompliance(adapter: string, make: (n: number) => Promise<PubSubTestCluster>, skip?: string): void {
  describe.skipIf(skip !== undefined)(`pubsub adapter compliance: ${adapter}`, () => {
    let cluster: PubSubTestCluster | undefined;
    afterEach(async () => {
      await cluster?.close();
      cluster = undefined;
    });

    it('fans out to subscribers on 3 nodes: each message once per subscriber, in publisher order', async () => {
      cluster = await make(3);
      const { nodes, names } = cluster;
      const got = nodes.map(() => [] as number[]);
      for (const [i, n] of nodes.entries()) n.subscribe('fan.out', (p) => void got[i]?.push(p as number));
      await waitInterest(nodes[0] as PubSub, 'fan.out', names);
      const N = 2000;
      for (let i = 0; i < N; i++) {
        if (!nodes[0]?.broadcast('fan.out', i)) await nodes[0]?.drained();
      }
      await waitFor(() => got.every((g) => g.length >= N), 'every message everywhere', 10_000);
      await new Promise((r) => setTimeout(r, 100)); // no duplicate arrives late
      for (const g of got) expect(g).toEqual([...Array(N).keys()]);
    });

    it('broadcastFrom skips this node, directBroadcast reaches one node, localBroadcast stays here', async () => {
      cluster = await make(3);
      const { nodes, names } = cluster;
      const got = nodes.map(() => [] as string[]);
      for (const [i, n] of nodes.entries()) n.subscribe('modes', (p) => void got[i]?.push(p as string));
      await waitInterest(nodes[0] as PubSub, 'modes', names);
      nodes[0]?.broadcastFrom('modes', 'from');
      nodes[0]?.directBroadcast(names[2] as string, 'modes', 'direct');
      nodes[0]?.localBroadcast('modes', 'local');
      await waitFor(() => (got[2]?.length ?? 0) >= 2 && (got[1]?.length ?? 0) >= 1 && (got[0]?.length ?? 0) >= 1, 'deliveries');
      await new Promise((r) => setTimeout(r, 100));
      expect(got).toEqual([['local'], ['from'], ['from', 'direct']]);
    });

    it('sends a topic only to nodes with a matching subscriber (wildcards included)', async () => {
      cluster = await make(3);
      const { nodes, names } = cluster;
      const got: string[] = [];
      nodes[1]?.subscribe('orders.*.created', (_p, m) => void got.push(m.topic));
      await waitInterest(nodes[0] as PubSub, 'orders.7.created', [names[1] as string]);
      for (let i = 0; i < 100; i++) nodes[0]?.broadcast(`orders.${i}.created`, { i });
      for (let i = 0; i < 100; i++) nodes[0]?.broadcast(`orders.${i}.shipped`, { i });
      await waitFor(() => got.length >= 100, 'matching deliveries');
      await new Promise((r) => setTimeout(r, 100));
      expect(got.length).toBe(100);
      expect(nodes[1]?.stats().framesReceived).toBe(100);
      expect(nodes[2]?.stats().framesReceived).toBe(0);
    });

    it('a queue group across 3 nodes gets each message exactly once in total, spread within ±20%', async () => {
      cluster = await make(3);
      const { nodes, names } = cluster;
      const got = nodes.map(() => [] as number[]);
      for (const [i, n] of nodes.entries()) n.subscribe('work.>', (p) => void got[i]?.push(p as number), { queue: 'workers' });
      await Promise.all(nodes.map((n) => waitInterest(n, 'work.item', names, 'workers')));
      const N = 6000;
      for (let i = 0; i < N; i++) {
        if (!nodes[i % 3]?.broadcast('work.item', i)) await nodes[i % 3]?.drained();
      }
      await waitFor(() => got.reduce((a, g) => a + g.length, 0) >= N, 'every job delivered', 15_000);
      await new Promise((r) => setTimeout(r, 100));
      const all = got.flat();
      expect(all.length).toBe(N);
      expect(new Set(all).size).toBe(N);
      for (const g of got) expect(Math.abs(g.length - N / 3)).toBeLessThanOrEqual((N / 3) * 0.2);
    });

    it('a subscriber that joins late receives broadcasts from its subscription on', async () => {
      cluster = await make(2);
      const { nodes, names } = cluster;
      for (let i = 0; i < 10; i++) nodes[0]?.broadcast('late', i);
      const got: number[] = [];
      nodes[1]?.subscribe('late', (p) => void got.push(p as number));
      await waitInterest(nodes[0] as PubSub, 'late', [names[1] as string]);
      for (let i = 10; i < 20; i++) nodes[0]?.broadcast('late', i);
      await waitFor(() => got.length >= 10, 'late deliveries');
      expect(got).toEqual([...Array(10).keys()].map((i) => i + 10));
    });

    it('when a node stops, the others keep receiving, and its interest goes', async () => {
      cluster = await make(3);
      const { nodes, names } = cluster;
      const got1: number[] = [];
      nodes[1]?.subscribe('keep', (p) => void got1.push(p as number));
      nodes[2]?.subscribe('keep', () => {});
      await waitInterest(nodes[0] as PubSub, 'keep', [names[1] as string, names[2] as string]);
      for (let i = 0; i < 50; i++) nodes[0]?.broadcast('keep', i);
      await cluster.stopNode(2);
      await waitFor(() => !nodes[0]?.interest.table.route('keep').plain.has(names[2] as string), 'the stopped node’s interest to go', 10_000);
      for (let i = 50; i < 100; i++) nodes[0]?.broadcast('keep', i);
      await waitFor(() => got1.length >= 100, 'deliveries after the stop');
      expect(got1).toEqual([...Array(100).keys()]);
    });
  });
}
