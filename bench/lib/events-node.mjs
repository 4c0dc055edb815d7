// A Foundation node for bench/events.mjs, in its own process. argv[2]: JSON start options.
// Commands (IPC, see common.mjs serve): address, members, watch, emit-burst, raw-burst, received,
// delays, query-latency, request-latency.
import { Foundation } from '../../dist/index.js';
import { now, serve, sleep, wallNow } from './common.mjs';

const opts = JSON.parse(process.argv[2] ?? '{}');
const silent = { debug() {}, info() {}, warn() {}, error() {}, child: () => silent };
const node = await Foundation.start({ ...opts, logger: silent });

/** Per kind ('events' | 'raw'): messages received, and one-way delays (ms) of the timed ones. */
const got = { events: { n: 0, delays: [] }, raw: { n: 0, delays: [] } };
const record = (kind, data) => {
  const g = got[kind];
  g.n++;
  if (typeof data?.t === 'number') g.delays.push(wallNow() - data.t);
};

// The peer of `events.query` in the same run: one plain request that returns a node's matching events.
node.mesh.handle('bench.query', (q) => ({ events: node.events.queryLocal(q) }));

serve({
  address: () => node.id.address,
  members: () => node.cluster.members().length,
  watch: () => {
    node.events.on('bench.>', (e) => record('events', e.data));
    node.pubsub.subscribe('bench.raw', (data) => record('raw', data), { maxQueue: 100_000 });
    return true;
  },
  /** Emits `n` distributed events (or raw broadcasts on the events lane), yielding every 1000; `everyMs` paces and stamps them. */
  burst: async ({ kind, n, everyMs }) => {
    for (let i = 0; i < n; i++) {
      const data = everyMs ? { i, t: wallNow() } : { i };
      if (kind === 'events') node.events.emitDistributed('bench.tick', data);
      else if (!node.pubsub.broadcast('bench.raw', data)) await node.pubsub.drained();
      if (everyMs) await sleep(everyMs);
      else if ((i + 1) % 1000 === 0) await sleep(0);
    }
    return n;
  },
  received: ({ kind }) => got[kind].n,
  reset: () => {
    for (const g of Object.values(got)) {
      g.n = 0;
      g.delays = [];
    }
    return true;
  },
  delays: ({ kind }) => got[kind].delays.splice(0),
  /** `rounds` sequential cluster-wide queries; their durations in ms. */
  'query-latency': async ({ rounds, limit }) => {
    const out = [];
    for (let i = 0; i < rounds; i++) {
      const t0 = now();
      const r = await node.events.query({ type: 'bench.>', limit });
      out.push(now() - t0);
      if (r.partial) throw new Error(`partial query: ${JSON.stringify(r.missing)}`);
    }
    return out;
  },
  /** `rounds` sequential plain requests to `to` returning its matching events; their durations in ms. */
  'request-latency': async ({ rounds, limit, to }) => {
    const out = [];
    for (let i = 0; i < rounds; i++) {
      const t0 = now();
      await node.mesh.request(to, 'bench.query', { type: 'bench.>', limit });
      out.push(now() - t0);
    }
    return out;
  },
});
