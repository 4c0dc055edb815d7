/** The pubsub compliance suite over the redis adapter, against a real redis-server on loopback. */
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
