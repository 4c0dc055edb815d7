/**
 * The pubsub compliance suite over the mesh adapter: real Foundation nodes (the built dist/, whose
 * heartbeat worker is a real worker thread) linked over loopback, in this process.
 */
import type { FoundationNode } from '../../src/api.js';
import type { PubSub } from '../../src/pubsub/pubsub.js';
import { type PubSubTestCluster, pubsubAdapterCompliance, waitFor } from '../compliance/pubsub-adapter-compliance.js';
import { silentLogger } from '../helpers/pubsub-hub.js';
import { requireBuild } from '../helpers/requires.js';

const skip = requireBuild('pubsub mesh adapter compliance');
const DIST = '../../dist/index.js';

let run = 0;

async function make(n: number): Promise<PubSubTestCluster> {
  const { Foundation } = (await import(DIST)) as typeof import('../../src/index.js');
  const clusterName = `pubsub-compliance-${process.pid}-${++run}`;
  const secret = 'pubsub-compliance-secret-0123456789abcdef';
  const nodes: FoundationNode[] = [];
  for (let i = 0; i < n; i++) {
    const hosts = nodes.map((x) => x.id.address);
    nodes.push(
      await Foundation.start({
        name: `m${i + 1}`,
        clusterName,
        secret,
        host: '127.0.0.1',
        logger: silentLogger,
        ...(hosts.length > 0 ? { cluster: { strategy: 'static', hosts } } : {}),
      }),
    );
  }
  await waitFor(() => nodes.every((x) => x.cluster.members().length === n - 1), 'a full mesh', 10_000);
  const stopped = new Set<number>();
  return {
    nodes: nodes.map((x) => x.pubsub as PubSub),
    names: nodes.map((x) => x.id.name),
    stopNode: async (i) => {
      stopped.add(i);
      await nodes[i]?.stop();
    },
    close: async () => {
      await Promise.all(nodes.map((x, i) => (stopped.has(i) ? undefined : x.stop())));
    },
  };
}

pubsubAdapterCompliance('mesh', make, skip);
