// One Foundation node of bench/config-commit.mjs, in its own process: cluster-wide config
// commits timed from this node, and plain mesh.request round trips for comparison.
import { Foundation } from '../../dist/index.js';
import { now, serve } from './common.mjs';

const opts = JSON.parse(process.argv[2]);
const node = await Foundation.start({
  ...opts,
  logger: {
    debug() {},
    info() {},
    warn() {},
    error() {},
    child() {
      return this;
    },
  },
});
node.mesh.handle('bench.echo', (p) => p);

serve({
  address: () => node.id.address,
  members: () => node.cluster.members().filter((m) => m.status === 'up').length,
  ready: () => node.cluster.isReady(),
  /** `n` sequential setClusterWide calls of a small value; the latency of each, in ms. */
  commits: async ({ n, path }) => {
    const samples = new Float64Array(n);
    let retried = 0;
    for (let i = 0; i < n; i++) {
      const t0 = now();
      const r = await node.config.setClusterWide(path, { i, at: Date.now() }, { timeoutMs: 10_000 });
      samples[i] = now() - t0;
      if (r.attempts > 1) retried++;
    }
    return { samples: [...samples], retried, version: node.config.version() };
  },
  /** `n` sequential mesh.request round trips to `to` on the control lane (the lane the commit uses), 100-byte payload. */
  requests: async ({ n, to }) => {
    const samples = new Float64Array(n);
    const payload = { pad: 'x'.repeat(80) };
    for (let i = 0; i < n; i++) {
      const t0 = now();
      await node.mesh.request(to, 'bench.echo', payload, { lane: 'control' });
      samples[i] = now() - t0;
    }
    return { samples: [...samples] };
  },
  /**
   * The message pattern of a two-phase commit without its logic: two rounds, each a request to
   * every other member in parallel, `n` times; the latency of each pair of rounds, in ms.
   */
  rounds: async ({ n }) => {
    const samples = new Float64Array(n);
    const others = node.cluster.members().map((m) => m.name);
    const payload = { pad: 'x'.repeat(80) };
    for (let i = 0; i < n; i++) {
      const t0 = now();
      for (let k = 0; k < 2; k++) await Promise.all(others.map((to) => node.mesh.request(to, 'bench.echo', payload, { lane: 'control' })));
      samples[i] = now() - t0;
    }
    return { samples: [...samples] };
  },
  version: () => node.config.version(),
});
