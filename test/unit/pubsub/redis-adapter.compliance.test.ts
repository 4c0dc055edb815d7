/** The pubsub compliance suite over the redis adapter, against a real redis-server on loopback. */
import { describe, expect, it } from 'vitest';
import { PubSub } from '../../../src/pubsub/pubsub.js';
import { RedisPubSubAdapter } from '../../../src/pubsub/redis-adapter.js';
import { type PubSubTestCluster, pubsubAdapterCompliance, waitFor } from '../../compliance/pubsub-adapter-compliance.js';
import { silentLogger } from '../../helpers/pubsub-hub.js';
import { startRedis } from '../../helpers/redis-server.js';
import { requireTools } from '../../helpers/requires.js';

const skip = requireTools(['redis-server'], 'redis pubsub adapter compliance');
let cluster = 0;

async function make(n: number): Promise<PubSubTestCluster> {
  const redis = await startRedis();
  const clusterName = `c${++cluster}`;
  const names = Array.from({ length: n }, (_, i) => `r${i + 1}`);
  const nodes: PubSub[] = [];
  for (const name of names) {
    const adapter = new RedisPubSubAdapter(clusterName, { url: redis.url, presenceMs: 200 }, silentLogger);
    const ps = new PubSub(name, Date.now() * 1000 + Math.floor(Math.random() * 1000), adapter, silentLogger);
    await ps.start();
    nodes.push(ps);
  }
  // Everyone has heard everyone's presence.
  await waitFor(() => nodes.every((ps) => names.every((other) => other === ps.self || ps.interest.isUp(other))), 'redis presence');
  const stopped = new Set<number>();
  return {
    nodes,
    names,
    stopNode: async (i) => {
      stopped.add(i);
      await nodes[i]?.stop();
    },
    close: async () => {
      await Promise.all(nodes.map((ps, i) => (stopped.has(i) ? undefined : ps.stop())));
      await redis.stop();
    },
  };
}

pubsubAdapterCompliance('redis', make, skip);

describe.skipIf(skip !== undefined)('redis adapter: malformed input', () => {
  it('drops junk published on its channels and keeps delivering', async () => {
    const redis = await startRedis();
    const { Redis } = await import('ioredis');
    const junk = new Redis(redis.url);
    const nodes: PubSub[] = [];
    try {
      for (const name of ['j1', 'j2']) {
        const ps = new PubSub(
          name,
          Date.now() * 1000 + nodes.length,
          new RedisPubSubAdapter('junk', { url: redis.url, presenceMs: 200 }, silentLogger),
          silentLogger,
        );
        await ps.start();
        nodes.push(ps);
      }
      const [a, b] = nodes as [PubSub, PubSub];
      await waitFor(() => a.interest.isUp('j2') && b.interest.isUp('j1'), 'presence');
      const got: unknown[] = [];
      b.subscribe('t', (p) => void got.push(p));
      await waitFor(() => a.interest.table.route('t').plain.has('j2'), 'interest');
      // Short, truncated, unknown kind, bad interest body: each dropped, none fatal.
      const name = Buffer.from('j1');
      const header = (kind: number) => Buffer.concat([Buffer.from([kind, name.length]), name, Buffer.alloc(8), Buffer.from([1])]);
      for (const bytes of [
        Buffer.alloc(1),
        Buffer.from([2, 200, 1]),
        header(9),
        Buffer.concat([header(2), Buffer.from([0xc1])]),
        Buffer.concat([header(1), Buffer.from([7, 7])]),
      ]) {
        await junk.publish('foundation:junk:all', bytes);
        await junk.publish('foundation:junk:n:j2', bytes);
      }
      a.broadcast('t', 'still here');
      await waitFor(() => got.length === 1, 'the delivery after the junk');
      expect(got).toEqual(['still here']);
    } finally {
      junk.disconnect();
      await Promise.all(nodes.map((n) => n.stop()));
      await redis.stop();
    }
  });
});
