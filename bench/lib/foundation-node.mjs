// One Foundation node in its own process, driven by bench/mesh.mjs over the IPC channel.
// argv[2]: JSON options for Foundation.start. Events to the orchestrator: started, up, down.
// Handlers: `bench.tp` and `bench.bulk` count what they receive; `bench.echo` returns its payload.
import { join } from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { pathToFileURL } from 'node:url';
import { emit, now, payload, serve, sleep, summarizeUs, timeRoundTrips } from './common.mjs';

// BENCH_FOUNDATION_DIST (set by `mesh.mjs --dist DIR`) benchmarks another build, e.g. a baseline.
const dist = process.env.BENCH_FOUNDATION_DIST;
const { Foundation } = await import(dist ? pathToFileURL(join(dist, 'index.js')).href : '../../dist/index.js');

const opts = JSON.parse(process.argv[2] ?? '{}');
let node;
try {
  node = await Foundation.start(opts);
} catch (err) {
  emit('start-failed', { message: err.message, code: err.code });
  process.exit(3);
}

const count = { msgs: 0, bytes: 0 };
node.mesh.handle('bench.tp', (p) => {
  count.msgs++;
  count.bytes += p.length;
});
node.mesh.handle('bench.bulk', (p) => {
  count.msgs++;
  count.bytes += p.length;
});
node.mesh.handle('bench.echo', (p) => p);

node.cluster.on('up', (m) => emit('up', { name: m.name }));
// `at` (wallNow) is taken by emit() first thing in the listener: it is the detection time.
node.cluster.on('down', (m, reason) => emit('down', { name: m.name, reason }));

// Event-loop delay of this process, between lag-start and lag-stop (ms).
let loopDelay;
const lagStart = () => {
  loopDelay?.disable();
  loopDelay = monitorEventLoopDelay({ resolution: 2 });
  loopDelay.enable();
};
const lagStop = () => {
  if (!loopDelay) return undefined;
  loopDelay.disable();
  const h = loopDelay;
  loopDelay = undefined;
  const ms = (ns) => Math.round(ns / 1e4) / 100;
  return { p50Ms: ms(h.percentile(50)), p99Ms: ms(h.percentile(99)), maxMs: ms(h.max) };
};

serve({
  count: () => ({ msgs: count.msgs, bytes: count.bytes, t: now() }),
  'lag-start': lagStart,
  'lag-stop': lagStop,

  /** Sends `size`-byte Buffers on `lane` for `ms`, waiting on drained() whenever send() says so. */
  'tp-send': async ({ peer, size, ms, lane = 'events' }) => {
    const buf = payload(size);
    const mesh = node.mesh;
    const end = now() + ms;
    let sent = 0;
    let waits = 0;
    let maxRss = 0;
    while (now() < end) {
      for (let i = 0; i < 1024; i++) {
        sent++;
        if (!mesh.send(peer, 'bench.tp', buf, { lane })) {
          waits++;
          await mesh.drained(peer, lane);
        }
      }
      if ((sent & 0x3ffff) === 0) maxRss = Math.max(maxRss, process.memoryUsage().rss);
    }
    maxRss = Math.max(maxRss, process.memoryUsage().rss);
    return { sent, waits, maxRss };
  },

  /** Sequential requests to the peer's echo handler; RTT samples after the warm-up. */
  latency: async ({ peer, size, warmup, n, lane = 'events', raw = false }) => {
    const buf = payload(size);
    const mesh = node.mesh;
    const once = async () => {
      const r = await mesh.request(peer, 'bench.echo', buf, { lane, timeoutMs: 5000 });
      if (r.length !== size) throw new Error(`echo returned ${r.length} bytes`);
    };
    return timeRoundTrips(once, { warmup, n, raw });
  },

  /**
   * Head-of-line: 1 MiB Buffers on the bulk lane as fast as back-pressure allows, and one
   * control-lane request every `intervalMs`; control RTTs are kept after `warmupMs`.
   */
  hol: async ({ peer, warmupMs, ms, bulkBytes, intervalMs, size }) => {
    const mesh = node.mesh;
    const bulk = payload(bulkBytes);
    const small = payload(size);
    const start = now();
    const measureFrom = start + warmupMs;
    const end = measureFrom + ms;
    let stop = false;
    let bulkSent = 0;
    let bulkWaits = 0;
    const bulkLoop = (async () => {
      while (!stop) {
        bulkSent++;
        if (!mesh.send(peer, 'bench.bulk', bulk, { lane: 'bulk' })) {
          bulkWaits++;
          await mesh.drained(peer, 'bulk');
        }
      }
    })();
    const rtts = [];
    let timeouts = 0;
    let lagging = false;
    try {
      while (now() < end) {
        const t = now();
        if (!lagging && t >= measureFrom) {
          lagging = true;
          lagStart();
        }
        try {
          await mesh.request(peer, 'bench.echo', small, { lane: 'control', timeoutMs: 5000 });
          if (t >= measureFrom) rtts.push(now() - t);
        } catch {
          timeouts++;
        }
        const wait = intervalMs - (now() - t);
        if (wait > 0) await sleep(wait);
      }
    } finally {
      stop = true;
    }
    const senderLoopDelay = lagStop();
    await bulkLoop;
    const s = summarizeUs(Float64Array.from(rtts));
    return { control: s, timeouts, bulkSent, bulkWaits, rss: process.memoryUsage().rss, senderLoopDelay };
  },
});

emit('started', { node: node.id });
