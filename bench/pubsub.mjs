#!/usr/bin/env node
// PubSub benchmark: one publisher process, subscribers in 1 and in 3 other processes, through
// Foundation's pubsub, NATS (core), Redis pub/sub and Moleculer 0.14 events; then local fan-out
// in one process. This process only coordinates (see bench/README.md, "pubsub").
//
//   node bench/pubsub.mjs [--only remote,local] [--peers foundation,nats,redis,moleculer]
//                         [--kinds bytes,object] [--subs 1,3] [--duration 3] [--warmup 1] [--latency 3] [--rate 1000]
//                         [--out file.json] [--dist DIR] [--cpu-prof]
import { mkdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { benchArgs } from './lib/args.mjs';
import { summarizeUs } from './lib/common.mjs';
import {
  closeAll,
  daemonVersion,
  fmt,
  fmtInt,
  freePort,
  getDist,
  killAll,
  packageVersion,
  ROOT,
  ratio,
  requireBuilt,
  resultHeader,
  round1,
  SECRET,
  setDist,
  sleep,
  startDaemon,
  table,
  Worker,
} from './lib/coordinator.mjs';

const HERE = join(ROOT, 'bench');
const SECTIONS = ['remote', 'local'];
const PEERS = ['foundation', 'nats', 'redis', 'moleculer'];
const KINDS = ['bytes', 'object'];

function parseArgs(argv) {
  const a = benchArgs(
    argv,
    'usage: node bench/pubsub.mjs [--only remote,local] [--peers foundation,nats,redis,moleculer] [--kinds bytes,object] [--subs 1,3] [--duration 3] [--warmup 1] [--latency 3] [--rate 1000] [--out file] [--dist DIR] [--cpu-prof]',
    {
      only: { type: 'list', default: SECTIONS },
      peers: { type: 'list', default: PEERS },
      kinds: { type: 'list', default: KINDS },
      subs: { type: 'numbers', default: [1, 3] },
      duration: { type: 'number', default: 3 },
      warmup: { type: 'number', default: 1 },
      latency: { type: 'number', default: 3 },
      rate: { type: 'number', default: 1000 },
      out: { type: 'string' },
      dist: { type: 'string' },
      'cpu-prof': { type: 'boolean', default: false },
    },
  );
  for (const s of a.only) if (!SECTIONS.includes(s)) throw new Error(`--only: unknown section "${s}" (sections: ${SECTIONS.join(', ')})`);
  for (const p of a.peers) if (!PEERS.includes(p)) throw new Error(`--peers: unknown peer "${p}" (peers: ${PEERS.join(', ')})`);
  for (const n of a.subs) if (!(Number.isInteger(n) && n >= 1 && n <= 8)) throw new Error('--subs: integers in 1..8');
  for (const kind of a.kinds) if (!KINDS.includes(kind)) throw new Error(`--kinds: unknown payload kind "${kind}" (kinds: ${KINDS.join(', ')})`);
  if (!(a.duration > 0 && a.duration <= 60)) throw new Error('--duration must be in (0, 60] seconds');
  if (!(a.warmup >= 0 && a.warmup <= 10)) throw new Error('--warmup must be in [0, 10] seconds');
  if (!(a.latency > 0 && a.latency <= 60)) throw new Error('--latency must be in (0, 60] seconds');
  if (!(a.rate >= 10 && a.rate <= 100_000)) throw new Error('--rate must be in [10, 100000] messages/s');
  return a;
}

/** How each peer is configured (printed with the results and kept in the JSON). */
const CONFIG = {
  foundation:
    'node.pubsub.broadcast on the events lane, default start options (authenticated links, default lanes and windows); the publisher awaits pubsub.drained() when broadcast returns false; bytes: a 100-byte Buffer (raw, no codec); object: msgpack',
  nats: 'core NATS, nats-server defaults, @nats-io/transport-node with noEcho; publisher writes are batched by the client (no flush per message); objects as JSON; acknowledgement window of 131072 messages on the slowest subscriber (no end-to-end flow control in core NATS)',
  redis:
    'redis-server without persistence, ioredis; throughput: pipelines of 1024 PUBLISH, at most 8 awaiting replies; latency: one PUBLISH per message; subscribers on their own connection (messageBuffer); objects as JSON; the same acknowledgement window as NATS',
  moleculer:
    'Moleculer 0.14 brokers on the TCP transporter (direct connections, UDP discovery off, peers given), default JSON serializer, metrics and tracing off; broker.emit with every subscriber node as a group (one copy per subscriber node); bytes: { t, p: 100-character string }; the same acknowledgement window as NATS',
};

// ---- set-ups: one publisher, n subscriber processes ------------------------------------------

/**
 * Starts one peer's processes for `n` subscribers and returns { pub, subs, close }. Every worker
 * speaks the same ps-* commands (bench/lib/pubsub-node.mjs and the ps-* commands of the peers).
 */
async function setUp(peer, n, a) {
  if (peer === 'foundation') {
    const workers = [];
    const start = async (label, opts) => {
      const w = new Worker('pubsub-node.mjs', [JSON.stringify({ name: label, host: '127.0.0.1', port: 0, secret: SECRET, ...opts })], label, {
        cpuProf: a.cpuProf,
      });
      workers.push(w);
      const e = await w.started();
      w.id = e.node;
      return w;
    };
    try {
      const pub = await start('pub', {});
      const subs = [];
      for (let i = 0; i < n; i++) subs.push(await start(`sub${i}`, { cluster: { strategy: 'static', hosts: [pub.id.address] } }));
      await Promise.all(subs.map((s) => pub.waitEvent((e) => e.event === 'up' && e.name === s.label, 10_000, `up(${s.label})`)));
      for (const s of subs) await s.call('ps-sub');
      // Interest travels to the publisher: probe until every subscriber received something.
      const probing = pub.call('probe', {}, 20_000);
      const deadline = Date.now() + 10_000;
      for (;;) {
        const counts = await Promise.all(subs.map((s) => s.call('ps-count')));
        if (counts.every((c) => c.msgs > 0)) break;
        if (Date.now() > deadline) throw new Error('foundation: subscribers received no probe in 10 s (interest did not reach the publisher)');
        await sleep(20);
      }
      await pub.call('probe-stop');
      await probing;
      return { pub, subs, close: () => closeAll(workers) };
    } catch (err) {
      await closeAll(workers);
      throw err;
    }
  }
  if (peer === 'nats' || peer === 'redis') {
    const server = await startDaemon(peer);
    const arg = peer === 'nats' ? server.url : String(server.port);
    const workers = [];
    try {
      const pub = new Worker(`${peer}-peer.mjs`, [arg], `${peer}-pub`);
      workers.push(pub);
      const subs = [];
      for (let i = 0; i < n; i++) {
        const s = new Worker(`${peer}-peer.mjs`, [arg], `${peer}-sub${i}`);
        workers.push(s);
        subs.push(s);
      }
      await Promise.all(workers.map((w) => w.started()));
      for (const s of subs) await s.call('ps-sub');
      return {
        pub,
        subs,
        close: async () => {
          await closeAll(workers);
          await server.close();
        },
      };
    } catch (err) {
      await closeAll(workers);
      await server.close();
      throw err;
    }
  }
  if (peer === 'moleculer') {
    const ids = ['mol-pub', ...Array.from({ length: n }, (_, i) => `mol-sub${i}`)];
    const ports = [];
    for (const _ of ids) ports.push(await freePort());
    const workers = ids.map((id, i) => {
      const peers = ids.flatMap((other, j) => (j === i ? [] : [`127.0.0.1:${ports[j]}/${other}`]));
      return new Worker('moleculer-peer.mjs', [JSON.stringify({ nodeID: id, port: ports[i], peers })], id);
    });
    try {
      await Promise.all(workers.map((w) => w.started()));
      await Promise.all(workers.map((w) => w.call('ready', {}, 30_000)));
      return { pub: workers[0], subs: workers.slice(1), close: () => closeAll(workers) };
    } catch (err) {
      await closeAll(workers);
      throw err;
    }
  }
  throw new Error(`unknown peer ${peer}`);
}

// ---- measurements ----------------------------------------------------------------------------

/** Delivered messages per second, summed over subscribers, each over its own measurement window. */
async function throughput(set, kind, n, a) {
  await Promise.all(set.subs.map((s) => s.call('ps-mode', { kind })));
  const warmMs = a.warmup * 1000;
  const durMs = a.duration * 1000;
  const sending = set.pub.call('ps-tp', { kind, ms: warmMs + durMs + 300, subscribers: n }, warmMs + durMs + 60_000);
  sending.catch(() => {});
  await sleep(warmMs);
  const c0 = await Promise.all(set.subs.map((s) => s.call('ps-count')));
  await sleep(durMs);
  const c1 = await Promise.all(set.subs.map((s) => s.call('ps-count')));
  const sender = await sending;
  const perSub = c1.map((c, i) => Math.round((c.msgs - c0[i].msgs) / ((c.t - c0[i].t) / 1000)));
  // Foundation only: messages its subscribers' queues dropped (drop-oldest) in the window.
  const droppedOf = (cs) => cs.reduce((s, c) => s + (c.stats?.topics?.bench?.dropped ?? 0), 0);
  const dropped = droppedOf(c1) - droppedOf(c0);
  return {
    deliveredPerSec: perSub.reduce((x, y) => x + y, 0),
    perSubscriber: perSub,
    published: sender.sent,
    flowControlWaits: sender.waits,
    publisherMaxRssMB: round1(sender.maxRss / 1e6),
    ...(dropped ? { subscriberQueueDrops: dropped } : {}),
  };
}

/** One-way latency at a fixed rate: samples of every subscriber merged. */
async function latency(set, kind, a) {
  await Promise.all(set.subs.map((s) => s.call('ps-mode', { kind })));
  // A short untimed run first: connections and code paths warm for this payload kind.
  await set.pub.call('ps-rate', { kind, rate: a.rate, ms: 300 }, 30_000);
  await sleep(50);
  await Promise.all(set.subs.map((s) => s.call('ps-lat-start')));
  const r = await set.pub.call('ps-rate', { kind, rate: a.rate, ms: a.latency * 1000 }, a.latency * 1000 + 30_000);
  await sleep(100);
  const samples = (await Promise.all(set.subs.map((s) => s.call('ps-lat-stop')))).flat();
  const s = summarizeUs(Float64Array.from(samples));
  return { ...s, published: r.sent, expected: r.sent * set.subs.length };
}

async function remote(a, log) {
  const out = { rate: a.rate, latencySec: a.latency, config: {} };
  for (const p of a.peers) out.config[p] = CONFIG[p];
  for (const n of a.subs) {
    log(`remote: 1 publisher process, ${n} subscriber process(es)`);
    const sets = {};
    const res = {};
    try {
      for (const p of a.peers) {
        try {
          sets[p] = await setUp(p, n, a);
        } catch (err) {
          const msg = String(err.message ?? err).split('\n')[0];
          log(`  ${p}: skipped (${msg})`);
          res[p] = { skipped: msg };
        }
      }
      const ready = a.peers.filter((p) => sets[p]);
      // Peers take turns per measurement (rotating the order), so a burst of load on the shared
      // machine does not land on one peer only.
      let turn = 0;
      const each = async (what, fn) => {
        const order = ready.map((_, i) => ready[(i + turn) % ready.length]);
        turn++;
        for (const p of order) {
          res[p] ??= {};
          try {
            res[p][what] = await fn(sets[p], p);
          } catch (err) {
            res[p][what] = { error: String(err.message ?? err).split('\n')[0] };
            log(`  ${p} ${what} FAILED: ${err.message}`);
          }
        }
        log(`  ${what}: ${ready.map((p) => `${p} ${describe(res[p][what])}`).join(', ')}`);
      };
      for (const kind of a.kinds) await each(`tp-${kind}`, (set) => throughput(set, kind, n, a));
      for (const kind of a.kinds) await each(`lat-${kind}`, (set) => latency(set, kind, a));
    } finally {
      for (const s of Object.values(sets)) await s.close();
    }
    out[`subs${n}`] = res;
    res.ratios = ratiosOf(res);
  }
  return out;
}

function describe(x) {
  if (!x) return '-';
  if (x.error) return 'FAILED';
  if (x.deliveredPerSec !== undefined) return `${fmtInt(x.deliveredPerSec)} msg/s`;
  return `p50 ${fmt(x.p50Us)} µs p99 ${fmt(x.p99Us)} µs`;
}

function ratiosOf(res) {
  const f = res.foundation;
  const out = {};
  for (const p of ['nats', 'redis', 'moleculer']) {
    const q = res[p];
    if (!f || !q || q.skipped) continue;
    out[p] = {
      tpBytes: ratio(f['tp-bytes']?.deliveredPerSec, q['tp-bytes']?.deliveredPerSec),
      tpObject: ratio(f['tp-object']?.deliveredPerSec, q['tp-object']?.deliveredPerSec),
      p50Bytes: ratio(f['lat-bytes']?.p50Us, q['lat-bytes']?.p50Us),
      p50Object: ratio(f['lat-object']?.p50Us, q['lat-object']?.p50Us),
      p99Bytes: ratio(f['lat-bytes']?.p99Us, q['lat-bytes']?.p99Us),
      p99Object: ratio(f['lat-object']?.p99Us, q['lat-object']?.p99Us),
    };
  }
  return out;
}

async function local(a, log) {
  log('local: one process (node --expose-gc), fan-out and wildcard topics');
  const w = new Worker('pubsub-node.mjs', [JSON.stringify({ name: 'local', host: '127.0.0.1', port: 0, secret: SECRET })], 'local', {
    nodeFlags: ['--expose-gc'],
  });
  try {
    await w.started();
    const ms = a.duration * 1000;
    const fanout = await w.call('fanout', { subs: 1000, ms, batch: 32 }, ms + 60_000);
    log(`  fan-out 1,000 subscribers: ${fmtInt(fanout.deliveriesPerSec)} deliveries/s, ${fanout.bytesPerSubscription} B/subscription`);
    const wildcard = await w.call('wildcard', { topics: 10_000, full: 5, ms, batch: 256 }, ms + 60_000);
    log(
      `  10,000 topics (w.<i>.* + 5 x w.>): ${fmtInt(wildcard.publishesPerSec)} publishes/s, ${fmtInt(wildcard.deliveriesPerSec)} deliveries/s, ${wildcard.bytesPerSubscription} B/subscription`,
    );
    // The same workload over 4,000 topics: fits the route cache (4,096 topics), for comparison.
    const wildcard4k = await w.call('wildcard', { topics: 4_000, full: 5, ms, batch: 256 }, ms + 60_000);
    log(`  4,000 topics (same shape): ${fmtInt(wildcard4k.publishesPerSec)} publishes/s, ${fmtInt(wildcard4k.deliveriesPerSec)} deliveries/s`);
    for (const r of [fanout, wildcard, wildcard4k]) delete r.stats;
    return { fanout, wildcard, wildcard4k };
  } finally {
    await closeAll([w]);
  }
}

// ---- report ----------------------------------------------------------------------------------

const NAMES = {
  foundation: 'Foundation pubsub',
  nats: 'NATS (nats-server)',
  redis: 'Redis pub/sub',
  moleculer: 'Moleculer events (TCP)',
};

function report(r) {
  const parts = [];
  const rm = r.remote;
  if (rm && !rm.error) {
    for (const n of r.config.subs) {
      const res = rm[`subs${n}`];
      if (!res) continue;
      const rows = r.config.peers.map((p) => {
        const x = res[p] ?? {};
        if (x.skipped) return [NAMES[p], `skipped: ${x.skipped}`];
        return [
          NAMES[p],
          fmtInt(x['tp-bytes']?.deliveredPerSec),
          fmtInt(x['tp-object']?.deliveredPerSec),
          fmt(x['lat-bytes']?.p50Us),
          fmt(x['lat-bytes']?.p99Us),
          fmt(x['lat-object']?.p50Us),
          fmt(x['lat-object']?.p99Us),
          fmt(x['tp-bytes']?.publisherMaxRssMB),
          p === 'foundation' ? `${fmtInt(x['tp-bytes']?.subscriberQueueDrops ?? 0)} / ${fmtInt(x['tp-object']?.subscriberQueueDrops ?? 0)}` : 'n/a',
        ];
      });
      parts.push(
        table(
          `Remote, 1 publisher -> ${n} subscriber process(es): delivered msgs/s (sum), ${r.config.durationSec}s; one-way latency at ${r.config.rate} msg/s (µs)`,
          ['peer', 'bytes msg/s', 'object msg/s', 'bytes p50', 'bytes p99', 'object p50', 'object p99', 'pub RSS MB', 'queue drops bytes/object'],
          rows,
        ),
      );
      for (const [p, q] of Object.entries(res.ratios ?? {})) {
        parts.push(
          `Foundation/${p}: throughput bytes ${fmt(q.tpBytes, 2)}x, object ${fmt(q.tpObject, 2)}x; p50 bytes ${fmt(q.p50Bytes, 2)}x, object ${fmt(q.p50Object, 2)}x; p99 bytes ${fmt(q.p99Bytes, 2)}x, object ${fmt(q.p99Object, 2)}x`,
        );
      }
    }
    parts.push('\nConfigurations:');
    for (const p of r.config.peers) parts.push(`- ${NAMES[p]}: ${rm.config[p]}`);
  } else if (rm?.error) parts.push(`\nRemote: FAILED: ${rm.error}`);
  const l = r.local;
  if (l && !l.error) {
    parts.push(
      table(
        'Local, one process (deliveries counted by the handlers; memory: heapUsed after full GCs)',
        ['workload', 'subscriptions', 'publishes/s', 'deliveries/s', 'B/subscription', 'µs/subscribe'],
        [
          [
            '1 topic, 1,000 subscribers',
            fmtInt(l.fanout.subs),
            fmtInt(l.fanout.published / (l.fanout.elapsedMs / 1000)),
            fmtInt(l.fanout.deliveriesPerSec),
            fmtInt(l.fanout.bytesPerSubscription),
            fmt(l.fanout.subscribeUsEach),
          ],
          [
            '10,000 topics w.<i>.x; subs w.<i>.* + 5 x w.>',
            fmtInt(l.wildcard.subscriptions),
            fmtInt(l.wildcard.publishesPerSec),
            fmtInt(l.wildcard.deliveriesPerSec),
            fmtInt(l.wildcard.bytesPerSubscription),
            fmt(l.wildcard.subscribeUsEach),
          ],
          [
            'the same with 4,000 topics',
            fmtInt(l.wildcard4k.subscriptions),
            fmtInt(l.wildcard4k.publishesPerSec),
            fmtInt(l.wildcard4k.deliveriesPerSec),
            fmtInt(l.wildcard4k.bytesPerSubscription),
            fmt(l.wildcard4k.subscribeUsEach),
          ],
        ],
      ),
    );
  } else if (l?.error) parts.push(`\nLocal: FAILED: ${l.error}`);
  if (r.targets.length)
    parts.push(
      table(
        'Targets',
        ['target', 'measured', 'result'],
        r.targets.map((x) => [x.name, x.measured, x.pass ? 'PASS' : 'MISS']),
      ),
    );
  return parts.join('\n');
}

function targets(r) {
  const out = [];
  const rm = r.remote;
  if (!rm || rm.error) return out;
  for (const n of r.config.subs) {
    const q = rm[`subs${n}`]?.ratios?.nats;
    if (!q) continue;
    out.push({ name: `delivered >= 2.5x NATS, ${n} subscriber(s), bytes`, measured: `${fmt(q.tpBytes, 2)}x`, pass: q.tpBytes >= 2.5 });
    out.push({ name: `delivered >= 2.5x NATS, ${n} subscriber(s), object`, measured: `${fmt(q.tpObject, 2)}x`, pass: q.tpObject >= 2.5 });
    out.push({ name: `p50 below NATS, ${n} subscriber(s), bytes`, measured: `${fmt(q.p50Bytes, 2)}x`, pass: q.p50Bytes < 1 });
    out.push({ name: `p50 below NATS, ${n} subscriber(s), object`, measured: `${fmt(q.p50Object, 2)}x`, pass: q.p50Object < 1 });
  }
  return out;
}

// ---- main ------------------------------------------------------------------------------------

async function main() {
  const a = parseArgs(process.argv.slice(2));
  if (a.dist) setDist(resolve(a.dist));
  requireBuilt('bench:pubsub');
  const started = new Date();
  const result = {
    ...resultHeader('pubsub', started, {
      natsServer: daemonVersion('nats'),
      redisServer: daemonVersion('redis'),
      moleculer: packageVersion('moleculer'),
      natsClient: packageVersion('@nats-io/transport-node'),
      ioredis: packageVersion('ioredis'),
    }),
    config: {
      sections: a.only,
      peers: a.peers,
      subs: a.subs,
      payloadBytes: 100,
      durationSec: a.duration,
      warmupSec: a.warmup,
      latencySec: a.latency,
      rate: a.rate,
      dist: relative(ROOT, getDist()) || getDist(),
    },
  };
  const t0 = performance.now();
  const log = (s) => console.error(`[pubsub ${((performance.now() - t0) / 1000).toFixed(1)}s] ${s}`);
  log(`host: ${result.host.cpus} CPUs, node ${process.version}, load ${result.host.loadAvgAtStart.join(' ')}`);
  const run = async (name, fn) => {
    if (!a.only.includes(name)) return;
    try {
      result[name] = await fn(a, log);
    } catch (err) {
      log(`${name} FAILED: ${err.stack ?? err}`);
      result[name] = { error: String(err.message ?? err).split('\n')[0] };
      process.exitCode = 1;
    }
  };
  try {
    await run('remote', remote);
    await run('local', local);
  } finally {
    killAll();
  }
  result.host.loadAvgAtEnd = os.loadavg().map(round1);
  result.elapsedSec = round1((performance.now() - t0) / 1000);
  result.targets = targets(result);
  console.log(report(result));
  console.log(
    `\nhost: ${result.host.cpus} x ${result.host.cpuModel}, ${result.host.node}, ${result.host.natsServer ?? 'nats-server ?'}, ${result.host.redisServer ?? 'redis-server ?'}, moleculer ${result.host.moleculer ?? '?'}; load avg ${result.host.loadAvgAtStart.join('/')} -> ${result.host.loadAvgAtEnd.join('/')}; ${result.elapsedSec}s`,
  );
  const file = a.out ?? join(HERE, 'results', `pubsub-${started.toISOString().replace(/:/g, '-').replace(/\..*$/, '')}.json`);
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(file, `${JSON.stringify(result, null, 2)}\n`);
  console.log(`results: ${relative(process.cwd(), file)}`);
}

main().catch((err) => {
  console.error(err.stack ?? err);
  killAll();
  process.exit(1);
});
