// A Foundation node for bench/registry.mjs, in its own process. argv[2]: JSON start options.
// Commands (IPC, see common.mjs serve): address, members, watch, register-burst, stats, lookups, memory, churn.
import { Foundation } from '../../dist/index.js';
import { serve, sleep, wallNow } from './common.mjs';

const opts = JSON.parse(process.argv[2] ?? '{}');
const silent = { debug() {}, info() {}, warn() {}, error() {}, child: () => silent };
const node = await Foundation.start({ ...opts, logger: silent });
/** Visibility delays (ms) of names registered elsewhere, measured when the register event arrives. */
const delays = [];

const gc = () => {
  if (global.gc) {
    global.gc();
    global.gc();
  }
};

serve({
  address: () => node.id.address,
  members: () => node.cluster.members().length,
  watch: () => {
    node.registry.watch((e) => {
      if (e.type === 'register' && typeof e.owner.meta?.t === 'number') delays.push(wallNow() - e.owner.meta.t);
    });
    return true;
  },
  delays: () => delays.splice(0),
  count: () => node.registry.count(),
  'register-burst': async ({ prefix, n, everyMs }) => {
    for (let i = 0; i < n; i++) {
      node.registry.register(`${prefix}:${i}`, { t: wallNow() });
      if (everyMs) await sleep(everyMs);
    }
    return n;
  },
  lookups: ({ names, rounds }) => {
    const keys = Array.from({ length: names }, (_, i) => `bulk:${i}`);
    let found = 0;
    const t0 = performance.now();
    for (let r = 0; r < rounds; r++) for (const k of keys) if (node.registry.lookup(k)) found++;
    const ms = performance.now() - t0;
    return { perSec: Math.round((names * rounds) / (ms / 1000)), found };
  },
  memory: () => {
    gc();
    return process.memoryUsage();
  },
  bulk: ({ n }) => {
    for (let i = 0; i < n; i++) node.registry.register(`bulk:${i}`, { i });
    return node.registry.count();
  },
  churn: async ({ cycles }) => {
    for (let i = 0; i < cycles; i++) {
      node.registry.register(`churn:${i % 1000}`, null);
      node.registry.unregister(`churn:${i % 1000}`);
      if (i % 10_000 === 0) await sleep(0); // let deltas go out
    }
    return cycles;
  },
});
