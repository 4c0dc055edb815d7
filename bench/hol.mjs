#!/usr/bin/env node
// Head-of-line benchmark of node.channels: control-channel latency while the telemetry channel
// carries 64 MiB payloads back to back between the same two node processes, with lane priority
// (the default) and with one FIFO lane, each with default Node flags and with
// --single-threaded-gc. This process only coordinates (see bench/README.md, "hol").
//
//   node bench/hol.mjs [--duration 8] [--warmup 2] [--big-mib 64] [--interval 5] [--runs priority,fifo,...]
//                      [--out file.json] [--dist DIR] [--cpu-prof]
import { mkdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { benchArgs } from './lib/args.mjs';
import {
  closeAll,
  fmt,
  fmtInt,
  getDist,
  killAll,
  ROOT,
  ratio,
  requireBuilt,
  resultHeader,
  round1,
  round3,
  SECRET,
  setDist,
  sleep,
  table,
  Worker,
} from './lib/coordinator.mjs';

const MiB = 1024 * 1024;

/** The runs: lane scheduling x Node flags of both processes (docs/guides/tuning.md). */
const RUNS = [
  { key: 'priority', mode: 'priority', nodeFlags: [], label: 'priority lanes (default), default flags' },
  { key: 'prioritySingleThreadedGc', mode: 'priority', nodeFlags: ['--single-threaded-gc'], label: 'priority lanes, --single-threaded-gc' },
  { key: 'fifo', mode: 'fifo', nodeFlags: [], label: 'one FIFO lane, default flags' },
  { key: 'fifoSingleThreadedGc', mode: 'fifo', nodeFlags: ['--single-threaded-gc'], label: 'one FIFO lane, --single-threaded-gc' },
];

function parseArgs(argv) {
  const a = benchArgs(
    argv,
    'usage: node bench/hol.mjs [--duration 8] [--warmup 2] [--big-mib 64] [--interval 5] [--runs priority,prioritySingleThreadedGc,fifo,fifoSingleThreadedGc] [--out file] [--dist DIR] [--cpu-prof]',
    {
      duration: { type: 'number', default: 8 },
      warmup: { type: 'number', default: 2 },
      'big-mib': { type: 'number', default: 64, key: 'bigMiB' },
      interval: { type: 'number', default: 5 },
      runs: { type: 'list', default: RUNS.map((r) => r.key) },
      out: { type: 'string' },
      dist: { type: 'string' },
      'cpu-prof': { type: 'boolean', default: false },
    },
  );
  for (const r of a.runs) if (!RUNS.some((x) => x.key === r)) throw new Error(`--runs: unknown run "${r}" (runs: ${RUNS.map((x) => x.key).join(', ')})`);
  if (!(a.duration > 0 && a.duration <= 120)) throw new Error('--duration must be in (0, 120] seconds');
  if (!(a.warmup >= 0 && a.warmup <= 30)) throw new Error('--warmup must be in [0, 30] seconds');
  if (!(a.bigMiB >= 1 && a.bigMiB <= 200)) throw new Error('--big-mib must be in [1, 200]');
  if (!(a.interval >= 1 && a.interval <= 1000)) throw new Error('--interval must be in [1, 1000] ms');
  return a;
}

/**
 * Start options of both nodes. A 64 MiB payload plus its pubsub and message headers exceeds the
 * default maxMessageBytes (64 MiB), so it is raised; the telemetry lane's defaults (1 MiB bound,
 * drop-oldest) would drop every 64 MiB message outright, so the lane gets room for one message in
 * flight and one queued, with back-pressure (the publisher awaits drained()).
 */
function nodeOptions(a, mode) {
  const big = a.bigMiB * MiB;
  return {
    maxMessageBytes: big + 16 * MiB,
    lanes: { mode, telemetry: { highWaterMark: big + 32 * MiB, hardLimit: Math.max(4 * big, big + 64 * MiB), overflow: 'backpressure' } },
  };
}

async function pair(a, run) {
  const opts = nodeOptions(a, run.mode);
  const start = async (label, extra) => {
    const w = new Worker('pubsub-node.mjs', [JSON.stringify({ name: label, host: '127.0.0.1', port: 0, secret: SECRET, ...opts, ...extra })], label, {
      nodeFlags: run.nodeFlags,
      cpuProf: a.cpuProf,
    });
    const e = await w.started();
    w.id = e.node;
    return w;
  };
  const recv = await start('recv', {});
  let send;
  try {
    send = await start('send', { cluster: { strategy: 'static', hosts: [recv.id.address] } });
    await Promise.all([
      send.waitEvent((e) => e.event === 'up' && e.name === 'recv', 10_000, 'up(recv)'),
      recv.waitEvent((e) => e.event === 'up' && e.name === 'send', 10_000, 'up(send)'),
    ]);
  } catch (err) {
    await closeAll([recv, send]);
    throw err;
  }
  return { recv, send };
}

async function measure(a, run, log) {
  const { recv, send } = await pair(a, run);
  try {
    await recv.call('hol-recv');
    const sending = send.call('hol-send', { bigBytes: a.bigMiB * MiB, intervalMs: a.interval }, (a.warmup + a.duration) * 1000 + 120_000);
    sending.catch(() => {});
    await sleep(a.warmup * 1000);
    const mark = await recv.call('hol-mark');
    const c0 = await recv.call('hol-count');
    await Promise.all([recv.call('lag-start'), send.call('lag-start')]);
    await sleep(a.duration * 1000);
    const c1 = await recv.call('hol-count');
    const [receiverLoopDelay, senderLoopDelay] = await Promise.all([recv.call('lag-stop'), send.call('lag-stop')]);
    const samples = await recv.call('hol-samples', { from: mark });
    await send.call('hol-stop');
    const sender = await sending;
    const secs = (c1.t - c0.t) / 1000;
    const c = samples.summary;
    const out = {
      label: run.label,
      nodeFlags: run.nodeFlags.join(' '),
      laneMode: run.mode,
      telemetryMBps: round1((c1.bytes - c0.bytes) / secs / 1e6),
      telemetryMessagesInWindow: c1.msgs - c0.msgs,
      telemetryMessagesSent: sender.bigSent,
      controlSent: sender.controlSent,
      controlReceived: samples.all,
      controlSamples: c.n,
      controlP50Ms: round3(c.p50Us / 1000),
      controlP90Ms: round3(c.p90Us / 1000),
      controlP99Ms: round3(c.p99Us / 1000),
      controlMaxMs: round3(c.maxUs / 1000),
      senderRssMB: round1(sender.rss / 1e6),
      senderLoopDelay,
      receiverLoopDelay,
    };
    log(`  ${run.label.padEnd(42)} telemetry ${out.telemetryMBps} MB/s, control p50 ${out.controlP50Ms} ms, p99 ${out.controlP99Ms} ms`);
    return out;
  } finally {
    await closeAll([send, recv]);
  }
}

function report(r) {
  const row = (s) => [
    s.label,
    fmt(s.telemetryMBps),
    fmtInt(s.controlSamples),
    fmt(s.controlP50Ms, 2),
    fmt(s.controlP90Ms, 2),
    fmt(s.controlP99Ms, 2),
    fmt(s.controlMaxMs, 2),
    `${fmt(s.senderLoopDelay?.p99Ms, 1)} / ${fmt(s.senderLoopDelay?.maxMs, 1)}`,
    `${fmt(s.receiverLoopDelay?.p99Ms, 1)} / ${fmt(s.receiverLoopDelay?.maxMs, 1)}`,
  ];
  const runs = RUNS.filter((x) => r[x.key] && !r[x.key].error);
  const parts = [
    table(
      `Control channel one-way latency (ms) while the telemetry channel carries ${r.config.bigMiB} MiB payloads back to back, one node pair, a control message every ${r.config.intervalMs} ms, ${r.config.durationSec}s`,
      ['run', 'telemetry MB/s', 'control msgs', 'p50', 'p90', 'p99', 'max', 'sender loop delay p99/max', 'receiver loop delay p99/max'],
      runs.map((x) => row(r[x.key])),
    ),
  ];
  for (const x of RUNS) if (r[x.key]?.error) parts.push(`${x.label}: FAILED: ${r[x.key].error}`);
  if (r.priority && r.fifo && !r.priority.error && !r.fifo.error)
    parts.push(`control p99, FIFO over priority: ${fmt(ratio(r.fifo.controlP99Ms, r.priority.controlP99Ms), 1)}x (default flags)`);
  if (r.prioritySingleThreadedGc && r.fifoSingleThreadedGc && !r.prioritySingleThreadedGc.error && !r.fifoSingleThreadedGc.error)
    parts.push(
      `control p99, FIFO over priority: ${fmt(ratio(r.fifoSingleThreadedGc.controlP99Ms, r.prioritySingleThreadedGc.controlP99Ms), 1)}x (--single-threaded-gc)`,
    );
  parts.push(`Node options of both processes: ${JSON.stringify(r.config.nodeOptions)}`);
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
  for (const key of ['priority', 'prioritySingleThreadedGc']) {
    const s = r[key];
    if (!s || s.error) continue;
    out.push({ name: `control p99 <= 5 ms with isolation (${s.label})`, measured: `${fmt(s.controlP99Ms, 2)} ms`, pass: s.controlP99Ms <= 5 });
  }
  return out;
}

async function main() {
  const a = parseArgs(process.argv.slice(2));
  if (a.dist) setDist(resolve(a.dist));
  requireBuilt('bench:hol');
  const started = new Date();
  const result = {
    ...resultHeader('hol', started),
    config: {
      durationSec: a.duration,
      warmupSec: a.warmup,
      bigMiB: a.bigMiB,
      intervalMs: a.interval,
      runs: a.runs,
      nodeOptions: nodeOptions(a, '<mode>'),
      dist: relative(ROOT, getDist()) || getDist(),
    },
  };
  const t0 = performance.now();
  const log = (s) => console.error(`[hol ${((performance.now() - t0) / 1000).toFixed(1)}s] ${s}`);
  log(`host: ${result.host.cpus} CPUs, node ${process.version}, load ${result.host.loadAvgAtStart.join(' ')}`);
  log(`${a.bigMiB} MiB telemetry payloads back to back + a 16-byte control message every ${a.interval} ms; ${a.warmup}s + ${a.duration}s per run`);
  try {
    for (const run of RUNS) {
      if (!a.runs.includes(run.key)) continue;
      try {
        result[run.key] = await measure(a, run, log);
      } catch (err) {
        log(`${run.label} FAILED: ${err.stack ?? err}`);
        result[run.key] = { label: run.label, error: String(err.message ?? err).split('\n')[0] };
        process.exitCode = 1;
      }
    }
  } finally {
    killAll();
  }
  result.host.loadAvgAtEnd = os.loadavg().map(round1);
  result.elapsedSec = round1((performance.now() - t0) / 1000);
  result.targets = targets(result);
  console.log(report(result));
  console.log(
    `\nhost: ${result.host.cpus} x ${result.host.cpuModel}, ${result.host.node}; load avg ${result.host.loadAvgAtStart.join('/')} -> ${result.host.loadAvgAtEnd.join('/')}; ${result.elapsedSec}s`,
  );
  const file = a.out ?? join(ROOT, 'bench', 'results', `hol-${started.toISOString().replace(/:/g, '-').replace(/\..*$/, '')}.json`);
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(file, `${JSON.stringify(result, null, 2)}\n`);
  console.log(`results: ${relative(process.cwd(), file)}`);
}

main().catch((err) => {
  console.error(err.stack ?? err);
  killAll();
  process.exit(1);
});
