// One Foundation node in its own process for bench/pubsub.mjs and bench/hol.mjs, driven over the
// IPC channel. argv[2]: JSON options for Foundation.start. Events: started, up, down.
//
// Roles (commands): a subscriber of the workload topic (sub, mode, count, lat-start, lat-stop),
// its publisher (probe, tp, rate), the local fan-out measurements (fanout, wildcard; run the
// process with --expose-gc for the memory figures), and both ends of the head-of-line run
// (hol-recv, hol-send, hol-stop).
import { join } from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { pathToFileURL } from 'node:url';
import { emit, now, serve, sleep, summarizeUs, wallNow } from './common.mjs';
import { bytesPayload, objectPayload, publishAtRate, recorder, sentAt, TOPIC } from './pubsub-common.mjs';

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
node.cluster.on('up', (m) => emit('up', { name: m.name }));
node.cluster.on('down', (m, reason) => emit('down', { name: m.name, reason }));

const ps = node.pubsub;
const rec = recorder();
let kind = 'bytes';
let measuring = false;

/** Event-loop delay between lag-start and lag-stop (ms). */
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

const gc = () => {
  if (typeof globalThis.gc !== 'function') return false;
  globalThis.gc();
  globalThis.gc();
  return true;
};

let probing = false;
let holStop = false;

serve({
  // ---- subscriber ----
  'ps-sub': () => {
    ps.subscribe(TOPIC, (p) => rec.got(measuring ? sentAt(kind, p) : undefined));
    return true;
  },
  /** The payload kind the next messages carry (the subscriber reads the send time from it). */
  'ps-mode': (m) => {
    kind = m.kind;
    return true;
  },
  'ps-count': () => ({ ...rec.count(), stats: { topics: { bench: ps.stats().topics.bench } } }),
  'ps-lat-start': () => {
    measuring = true;
    rec.latStart();
    return true;
  },
  'ps-lat-stop': () => {
    measuring = false;
    return rec.latStop();
  },

  // ---- publisher ----
  /** Publishes one small message every 10 ms until probe-stop (or 10 s): the coordinator stops it once every subscriber got one (interest has arrived). */
  probe: async () => {
    probing = true;
    const end = now() + 10_000;
    const p = bytesPayload(0);
    let sent = 0;
    while (probing && now() < end) {
      ps.broadcast(TOPIC, p);
      sent++;
      await sleep(10);
    }
    return { sent };
  },
  'probe-stop': () => {
    probing = false;
    return true;
  },

  /** As fast as flow control allows for `ms`: broadcast, and await drained() when it returns false. */
  'ps-tp': async ({ kind: k, ms }) => {
    const buf = bytesPayload(0);
    const end = now() + ms;
    let sent = 0;
    let waits = 0;
    let maxRss = 0;
    while (now() < end) {
      for (let i = 0; i < 1024; i++) {
        const ok = ps.broadcast(TOPIC, k === 'bytes' ? buf : objectPayload(sent, 0));
        sent++;
        if (!ok) {
          waits++;
          await ps.drained();
        }
      }
      if ((sent & 0x3ffff) === 0) maxRss = Math.max(maxRss, process.memoryUsage().rss);
    }
    return { sent, waits, maxRss: Math.max(maxRss, process.memoryUsage().rss) };
  },

  /** `rate` messages per second for `ms`, each stamped with its send time. */
  'ps-rate': ({ kind: k, rate, ms }) =>
    publishAtRate(rate, ms, (i, t) => {
      ps.broadcast(TOPIC, k === 'bytes' ? bytesPayload(t) : objectPayload(i, t));
    }),

  // ---- local fan-out (one process) ----
  /**
   * `subs` subscribers on one topic of this node; `broadcast` (no other node listens, so it is
   * delivered locally) for `ms`, `batch` publishes per turn of the event loop. Deliveries are
   * counted by the handlers. Memory: heapUsed after a full GC, before and after subscribing.
   */
  fanout: async ({ subs, ms, batch }) => {
    const topic = 'fan.one';
    const hadGc = gc();
    const heap0 = process.memoryUsage().heapUsed;
    let delivered = 0;
    const handler = () => {
      delivered++;
    };
    const t0 = now();
    const offs = [];
    for (let i = 0; i < subs; i++) offs.push(ps.subscribe(topic, handler));
    const subscribeMs = now() - t0;
    await sleep(50);
    gc();
    const heap1 = process.memoryUsage().heapUsed;
    const r = await publishLoop(
      ms,
      batch,
      (i) => ps.broadcast(topic, { i, pad: 'x'.repeat(8) }),
      () => {
        delivered = 0;
      },
    );
    const deliveredInWindow = delivered;
    await sleep(20);
    const dropped = ps.stats();
    for (const off of offs) off();
    return {
      subs,
      ...r,
      delivered: deliveredInWindow,
      deliveriesPerSec: Math.round(deliveredInWindow / (r.elapsedMs / 1000)),
      subscribeUsEach: Math.round((subscribeMs * 1000 * 10) / subs) / 10,
      bytesPerSubscription: hadGc ? Math.round((heap1 - heap0) / subs) : undefined,
      stats: dropped,
    };
  },

  /**
   * `topics` wildcard subscriptions `w.<i>.*` plus `full` subscriptions `w.>`; publishes to
   * `w.<i>.x` (i cycling over all topics, so every publish matches 1 + full subscribers).
   */
  wildcard: async ({ topics, full, ms, batch }) => {
    const hadGc = gc();
    const heap0 = process.memoryUsage().heapUsed;
    let delivered = 0;
    const handler = () => {
      delivered++;
    };
    const t0 = now();
    const offs = [];
    for (let i = 0; i < topics; i++) offs.push(ps.subscribe(`w.${i}.*`, handler));
    for (let i = 0; i < full; i++) offs.push(ps.subscribe('w.>', handler));
    const subscribeMs = now() - t0;
    await sleep(50);
    gc();
    const heap1 = process.memoryUsage().heapUsed;
    const names = Array.from({ length: topics }, (_, i) => `w.${i}.x`);
    const r = await publishLoop(
      ms,
      batch,
      (i) => ps.broadcast(names[i % topics], { i, pad: 'x'.repeat(8) }),
      () => {
        delivered = 0;
      },
    );
    const deliveredInWindow = delivered;
    await sleep(20);
    gc();
    const heap2 = process.memoryUsage().heapUsed;
    const stats = ps.stats();
    for (const off of offs) off();
    return {
      subscriptions: topics + full,
      ...r,
      publishesPerSec: Math.round(r.published / (r.elapsedMs / 1000)),
      delivered: deliveredInWindow,
      deliveriesPerSec: Math.round(deliveredInWindow / (r.elapsedMs / 1000)),
      subscribeUsEach: Math.round((subscribeMs * 1000 * 10) / (topics + full)) / 10,
      bytesPerSubscription: hadGc ? Math.round((heap1 - heap0) / (topics + full)) : undefined,
      /** After publishing to every topic (route cache filled): heap growth per distinct topic published. */
      routeCacheBytesPerTopic: hadGc ? Math.round((heap2 - heap1) / topics) : undefined,
      stats,
    };
  },

  // ---- head-of-line ----
  /**
   * Counts telemetry bytes and records control one-way latency (send time in the payload). The
   * telemetry subscriber borrows its payloads (it only reads their length), as the tuning guide
   * advises for large binary payloads: they are received into reused memory.
   */
  'hol-recv': () => {
    node.channels.subscribe(
      'telemetry',
      (p) => {
        rec.got(undefined);
        telemetryBytes += p.length;
      },
      { borrowPayload: true },
    );
    node.channels.subscribe('control', (p) => {
      controlSamples.push(wallNow() - p.readDoubleLE(0));
    });
    return true;
  },
  'hol-count': () => ({ msgs: rec.msgs, bytes: telemetryBytes, t: now() }),
  'hol-samples': ({ from }) => {
    const s = controlSamples.slice(from);
    return { n: s.length, all: controlSamples.length, summary: summarizeUs(Float64Array.from(s)) };
  },
  'hol-mark': () => controlSamples.length,
  'lag-start': lagStart,
  'lag-stop': lagStop,
  /**
   * Telemetry: `bigBytes` Buffers back to back (awaiting drained() when broadcast says so);
   * control: a 16-byte Buffer stamped with its send time every `intervalMs`, until hol-stop.
   */
  'hol-send': async ({ bigBytes, intervalMs }) => {
    holStop = false;
    const big = Buffer.alloc(bigBytes, 7);
    let bigSent = 0;
    let waits = 0;
    const bulk = (async () => {
      while (!holStop) {
        bigSent++;
        if (!node.channels.broadcast('telemetry', big)) {
          waits++;
          await ps.drained();
        } else await sleep(0);
      }
    })();
    let controlSent = 0;
    while (!holStop) {
      const small = Buffer.alloc(16);
      small.writeDoubleLE(wallNow(), 0);
      node.channels.broadcast('control', small);
      controlSent++;
      await sleep(intervalMs);
    }
    await bulk;
    return { bigSent, waits, controlSent, rss: process.memoryUsage().rss };
  },
  'hol-stop': () => {
    holStop = true;
    return true;
  },
});

let telemetryBytes = 0;
const controlSamples = [];

/** Publishes `batch` messages per turn of the event loop for `ms`. */
async function publishLoop(ms, batch, publishOne, onMeasureStart) {
  // Warm-up: JIT and route caches, not counted.
  const warmEnd = now() + Math.min(500, ms / 4);
  let i = 0;
  while (now() < warmEnd) {
    for (let k = 0; k < batch; k++) publishOne(i++);
    await new Promise(setImmediate);
  }
  await sleep(20);
  onMeasureStart();
  const t0 = now();
  const end = t0 + ms;
  let published = 0;
  while (now() < end) {
    for (let k = 0; k < batch; k++) publishOne(i++);
    published += batch;
    await new Promise(setImmediate);
  }
  return { published, elapsedMs: now() - t0 };
}

emit('started', { node: node.id });
