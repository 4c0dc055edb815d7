#!/usr/bin/env node
// Mesh benchmark: Foundation vs NATS vs raw TCP on loopback, one sender process and one
// receiver process per measurement; this process only coordinates (see bench/README.md).
//
//   node bench/mesh.mjs [--only throughput,latency,hol,detection] [--duration 5] [--warmup 1]
//                       [--requests 20000] [--out file.json] [--cpu-prof] [--dist DIR]
//
// Needs a build (dist/): `npm run bench:mesh` builds first. `--dist DIR` benchmarks another
// build of the library (a directory holding index.js), e.g. a baseline built from another commit.
import { spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
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
  round3,
  SECRET,
  setDist,
  sleep,
  startDaemon,
  table,
  Worker,
  wallNow,
} from './lib/coordinator.mjs';

const HERE = dirname(fileURLToPath(import.meta.url));
const SECTIONS = ['throughput', 'latency', 'hol', 'detection'];

// ---- arguments ------------------------------------------------------------------------------

function parseArgs(argv) {
  const a = benchArgs(
    argv,
    'usage: node bench/mesh.mjs [--only throughput,latency,hol,detection] [--duration 5] [--warmup 1] [--requests 20000] [--out file] [--cpu-prof] [--dist DIR]',
    {
      only: { type: 'list', default: SECTIONS },
      duration: { type: 'number', default: 5 },
      warmup: { type: 'number', default: 1 },
      requests: { type: 'number', default: 20000 },
      out: { type: 'string' },
      'cpu-prof': { type: 'boolean', default: false },
      dist: { type: 'string' },
    },
  );
  a.latencyWarmup = 2000;
  for (const s of a.only) if (!SECTIONS.includes(s)) throw new Error(`--only: unknown section "${s}" (sections: ${SECTIONS.join(', ')})`);
  if (!(a.duration > 0 && a.duration <= 60)) throw new Error('--duration must be in (0, 60] seconds');
  if (!(a.warmup >= 0 && a.warmup <= 10)) throw new Error('--warmup must be in [0, 10] seconds');
  if (!(Number.isInteger(a.requests) && a.requests > 0 && a.requests <= 1e6)) throw new Error('--requests must be an integer in 1..1e6');
  return a;
}

// ---- child processes: bench/lib/coordinator.mjs (workers over IPC, daemons, tables) ----------

/** `nodeFlags`: Node/V8 command-line flags of the worker process (e.g. a GC setting). */
async function startFoundation(label, opts, a, nodeFlags = []) {
  const w = new Worker('foundation-node.mjs', [JSON.stringify({ name: label, host: '127.0.0.1', port: 0, secret: SECRET, ...opts })], label, {
    cpuProf: a.cpuProf,
    nodeFlags,
  });
  const e = await w.started();
  w.id = e.node;
  return w;
}

/** A receiver and a sender that dials it; resolves once both see the other up. */
async function foundationPair(a, extra = {}, nodeFlags = []) {
  const recv = await startFoundation('recv', extra, a, nodeFlags);
  let send;
  try {
    send = await startFoundation('send', { ...extra, cluster: { strategy: 'static', hosts: [recv.id.address] } }, a, nodeFlags);
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

/**
 * Two Moleculer 0.14 brokers (bench/lib/moleculer-peer.mjs) on the TCP transporter, each told the
 * other's address (UDP discovery off: nothing leaves loopback); resolves once both see the other.
 */
async function moleculerPair() {
  const [portA, portB] = [await freePort(), await freePort()];
  const spec = (nodeID, port, peerID, peerPort) => JSON.stringify({ nodeID, port, peers: [`127.0.0.1:${peerPort}/${peerID}`] });
  const recv = new Worker('moleculer-peer.mjs', [spec('mol-recv', portA, 'mol-send', portB)], 'moleculer-recv');
  const send = new Worker('moleculer-peer.mjs', [spec('mol-send', portB, 'mol-recv', portA)], 'moleculer-send');
  try {
    await Promise.all([recv.started(), send.started()]);
    await Promise.all([recv.call('ready', {}, 20_000), send.call('ready', {}, 20_000)]);
  } catch (err) {
    await closeAll([send, recv]);
    throw err;
  }
  return { recv, send };
}

// ---- sections -------------------------------------------------------------------------------

/** Receiver-side rate over the measurement window: counts read at warm-up end and at the end. */
async function measureRate(recv, sendCall, a) {
  const warmMs = a.warmup * 1000;
  const durMs = a.duration * 1000;
  const sending = sendCall(warmMs + durMs + 300);
  sending.catch(() => {});
  await sleep(warmMs);
  const c0 = await recv.call('count');
  await sleep(durMs);
  const c1 = await recv.call('count');
  const sender = await sending;
  const secs = (c1.t - c0.t) / 1000;
  const msgs = c1.msgs - c0.msgs;
  const recvRss = await recv.call('rss');
  return {
    msgsPerSec: Math.round(msgs / secs),
    mbPerSec: round1((c1.bytes - c0.bytes) / secs / 1e6),
    windowSec: round3(secs),
    receivedInWindow: msgs,
    totalSent: sender.sent,
    backpressureWaits: sender.waits,
    senderMaxRssMB: round1(sender.maxRss / 1e6),
    receiverRssMB: round1(recvRss / 1e6),
  };
}

async function throughput(a, log) {
  const size = 100;
  const out = {};
  log(`throughput: ${size}-byte messages, ${a.warmup}s warm-up + ${a.duration}s measured`);

  // (a) Foundation.
  {
    const { recv, send } = await foundationPair(a);
    try {
      out.foundation = await measureRate(recv, (ms) => send.call('tp-send', { peer: 'recv', size, ms, lane: 'events' }, ms + 30_000), a);
    } finally {
      await closeAll([send, recv]);
    }
    log(`  foundation ${fmtInt(out.foundation.msgsPerSec)} msg/s`);
  }

  // (b) NATS.
  {
    const server = await startDaemon('nats');
    let sub;
    let pub;
    try {
      sub = new Worker('nats-peer.mjs', [server.url], 'nats-sub');
      pub = new Worker('nats-peer.mjs', [server.url], 'nats-pub');
      await Promise.all([sub.started(), pub.started()]);
      await sub.call('sub');
      out.nats = await measureRate(sub, (ms) => pub.call('tp-send', { size, ms }, ms + 30_000), a);
    } finally {
      await closeAll([pub, sub]);
      await server.close();
    }
    log(`  nats       ${fmtInt(out.nats.msgsPerSec)} msg/s`);
  }

  // (c) Raw TCP.
  {
    let recv;
    let send;
    try {
      recv = new Worker('tcp-peer.mjs', [], 'tcp-sink');
      send = new Worker('tcp-peer.mjs', [], 'tcp-send');
      await Promise.all([recv.started(), send.started()]);
      const port = await recv.call('listen', { mode: 'sink' });
      out.raw = await measureRate(recv, (ms) => send.call('tp-send', { port, size, ms }, ms + 30_000), a);
    } finally {
      await closeAll([send, recv]);
    }
    log(`  raw tcp    ${fmtInt(out.raw.msgsPerSec)} msg/s`);
  }

  // (d) Redis pub/sub.
  {
    const server = await startDaemon('redis');
    let sub;
    let pub;
    try {
      sub = new Worker('redis-peer.mjs', [String(server.port)], 'redis-sub');
      pub = new Worker('redis-peer.mjs', [String(server.port)], 'redis-pub');
      await Promise.all([sub.started(), pub.started()]);
      await sub.call('sub');
      out.redis = await measureRate(sub, (ms) => pub.call('tp-send', { size, ms }, ms + 30_000), a);
    } finally {
      await closeAll([pub, sub]);
      await server.close();
    }
    log(`  redis      ${fmtInt(out.redis.msgsPerSec)} msg/s`);
  }

  // (e) Moleculer events over its TCP transporter.
  {
    const { recv, send } = await moleculerPair();
    try {
      out.moleculer = await measureRate(recv, (ms) => send.call('tp-send', { size, ms }, ms + 30_000), a);
    } finally {
      await closeAll([send, recv]);
    }
    log(`  moleculer  ${fmtInt(out.moleculer.msgsPerSec)} msg/s`);
  }

  out.ratios = {
    foundationOverNats: ratio(out.foundation?.msgsPerSec, out.nats?.msgsPerSec),
    foundationOverRedis: ratio(out.foundation?.msgsPerSec, out.redis?.msgsPerSec),
    foundationOverMoleculer: ratio(out.foundation?.msgsPerSec, out.moleculer?.msgsPerSec),
    foundationOverRaw: ratio(out.foundation?.msgsPerSec, out.raw?.msgsPerSec),
  };
  return out;
}

/**
 * The three request/response peers stay up side by side and take turns, in rounds of
 * requests/ROUNDS each (rotating the order), so a burst of load on the shared machine hits all
 * of them alike instead of whichever happened to run then. Samples of all rounds are merged.
 */
const LATENCY_ROUNDS = 5;

async function latency(a, log) {
  const size = 100;
  const timeout = 120_000;
  const perRound = Math.ceil(a.requests / LATENCY_ROUNDS);
  const reWarm = Math.min(200, a.latencyWarmup);
  const out = { rounds: LATENCY_ROUNDS, requestsPerRound: perRound, warmupFirstRound: a.latencyWarmup, warmupLaterRounds: reWarm };
  log(`latency: ${size}-byte request/response, one outstanding, ${LATENCY_ROUNDS} interleaved rounds of ${perRound} (+ warm-up)`);
  const workers = [];
  let server;
  let redis;
  try {
    const { recv, send } = await foundationPair(a);
    workers.push(recv, send);
    const echo = new Worker('tcp-peer.mjs', [], 'tcp-echo');
    const client = new Worker('tcp-peer.mjs', [], 'tcp-client');
    workers.push(echo, client);
    server = await startDaemon('nats');
    const resp = new Worker('nats-peer.mjs', [server.url], 'nats-responder');
    const req = new Worker('nats-peer.mjs', [server.url], 'nats-requester');
    workers.push(resp, req);
    redis = await startDaemon('redis');
    const redisResp = new Worker('redis-peer.mjs', [String(redis.port)], 'redis-responder');
    const redisReq = new Worker('redis-peer.mjs', [String(redis.port)], 'redis-requester');
    workers.push(redisResp, redisReq);
    await Promise.all([echo.started(), client.started(), resp.started(), req.started(), redisResp.started(), redisReq.started()]);
    const port = await echo.call('listen', { mode: 'echo' });
    await resp.call('sub');
    await redisResp.call('sub');
    const mol = await moleculerPair();
    workers.push(mol.recv, mol.send);
    const peers = [
      ['foundation', (warmup) => send.call('latency', { size, warmup, n: perRound, peer: 'recv', lane: 'events', raw: true }, timeout)],
      ['raw', (warmup) => client.call('latency', { size, warmup, n: perRound, port, raw: true }, timeout)],
      ['nats', (warmup) => req.call('latency', { size, warmup, n: perRound, raw: true }, timeout)],
      ['redis', (warmup) => redisReq.call('latency', { size, warmup, n: perRound, raw: true }, timeout)],
      ['moleculer', (warmup) => mol.send.call('latency', { size, warmup, n: perRound, raw: true }, timeout)],
    ];
    Object.assign(out, await latencyRounds(peers, a.latencyWarmup, reWarm, (s) => log(`  ${s}`)));
    // The same rounds with every process of the section on CPU 0: no cross-CPU wake-up per
    // message, so what is left is each peer's own per-message work (see docs/guides/tuning.md).
    const pids = [...workers.map((w) => w.child.pid), server.pid, redis.pid];
    if (setAffinity(pids, '0')) {
      try {
        log('  the same with every process on CPU 0:');
        out.oneCpu = await latencyRounds(peers, reWarm, reWarm, (s) => log(`  ${s}`));
      } finally {
        setAffinity(pids, `0-${os.cpus().length - 1}`);
      }
      out.oneCpu.ratios = latencyRatios(out.oneCpu);
    } else {
      log('  taskset (util-linux) not available: skipping the one-CPU rounds');
    }
  } finally {
    await closeAll(workers);
    await server?.close();
    await redis?.close();
  }
  out.ratios = latencyRatios(out);
  return out;
}

/**
 * Runs LATENCY_ROUNDS rounds; in each, every peer takes its turn (rotating the order) so a burst
 * of load on the shared machine hits all of them alike. Returns per-peer summaries of the merged
 * samples, with the p50 of each round.
 */
async function latencyRounds(peers, firstWarmup, laterWarmup, log) {
  const samples = Object.fromEntries(peers.map(([name]) => [name, []]));
  const roundP50 = Object.fromEntries(peers.map(([name]) => [name, []]));
  for (let r = 0; r < LATENCY_ROUNDS; r++) {
    for (let k = 0; k < peers.length; k++) {
      const [name, run] = peers[(r + k) % peers.length];
      const s = await run(r === 0 ? firstWarmup : laterWarmup);
      roundP50[name].push(summarizeUs(s).p50Us);
      samples[name].push(...s);
    }
    log(`round ${r + 1}: p50 ${peers.map(([name]) => `${name} ${roundP50[name][r]} µs`).join(', ')}`);
  }
  const out = {};
  for (const name of Object.keys(samples)) out[name] = { ...summarizeUs(samples[name]), roundP50Us: roundP50[name] };
  return out;
}

function latencyRatios(l) {
  return {
    p50FoundationOverRaw: ratio(l.foundation?.p50Us, l.raw?.p50Us),
    p50FoundationOverNats: ratio(l.foundation?.p50Us, l.nats?.p50Us),
    p50FoundationOverRedis: ratio(l.foundation?.p50Us, l.redis?.p50Us),
    p50FoundationOverMoleculer: ratio(l.foundation?.p50Us, l.moleculer?.p50Us),
    p99FoundationOverRaw: ratio(l.foundation?.p99Us, l.raw?.p99Us),
    p99FoundationOverNats: ratio(l.foundation?.p99Us, l.nats?.p99Us),
    p99FoundationOverRedis: ratio(l.foundation?.p99Us, l.redis?.p99Us),
    p99FoundationOverMoleculer: ratio(l.foundation?.p99Us, l.moleculer?.p99Us),
  };
}

/** Sets the CPU affinity of every thread of each process (`taskset -a`); false if taskset fails. */
function setAffinity(pids, cpus) {
  for (const pid of pids) {
    const r = spawnSync('taskset', ['-a', '-p', '-c', cpus, String(pid)], { encoding: 'utf8' });
    if (r.status !== 0) return false;
  }
  return true;
}

/**
 * Runs of the head-of-line section: lane scheduling and the Node flags of both processes.
 * `--single-threaded-gc` is the documented setting for hosts with 2 cores or fewer per node
 * (docs/guides/tuning.md): V8's parallel GC helpers (4 threads whatever the core count) then
 * stop competing with the two processes' main threads.
 */
const HOL_RUNS = [
  { key: 'priority', mode: 'priority', nodeFlags: [], label: 'priority (default)' },
  { key: 'prioritySingleThreadedGc', mode: 'priority', nodeFlags: ['--single-threaded-gc'], label: 'priority, --single-threaded-gc' },
  { key: 'fifo', mode: 'fifo', nodeFlags: [], label: 'fifo (no priority)' },
];

async function hol(a, log) {
  const bulkBytes = 1024 * 1024;
  const intervalMs = 5;
  const out = { bulkMessageBytes: bulkBytes, controlIntervalMs: intervalMs };
  log(`head-of-line: 1 MiB messages on 'bulk' + a 100-byte 'control' request every ${intervalMs} ms, ${a.warmup}s + ${a.duration}s`);
  for (const { key, mode, nodeFlags, label } of HOL_RUNS) {
    const { recv, send } = await foundationPair(a, { lanes: { mode } }, nodeFlags);
    try {
      const warmMs = a.warmup * 1000;
      const durMs = a.duration * 1000;
      const running = send.call('hol', { peer: 'recv', warmupMs: warmMs, ms: durMs, bulkBytes, intervalMs, size: 100 }, warmMs + durMs + 60_000);
      running.catch(() => {});
      await sleep(warmMs);
      const c0 = await recv.call('count');
      await recv.call('lag-start');
      await sleep(durMs);
      const c1 = await recv.call('count');
      const receiverLoopDelay = await recv.call('lag-stop');
      const r = await running;
      const secs = (c1.t - c0.t) / 1000;
      const c = r.control;
      out[key] = {
        nodeFlags: nodeFlags.join(' '),
        bulkMBps: round1((c1.bytes - c0.bytes) / secs / 1e6),
        bulkMessagesPerSec: Math.round((c1.msgs - c0.msgs) / secs),
        controlRequests: c.n,
        controlTimeouts: r.timeouts,
        controlP50Ms: ms3(c.p50Us),
        controlP90Ms: ms3(c.p90Us),
        controlP99Ms: ms3(c.p99Us),
        controlMaxMs: ms3(c.maxUs),
        senderRssMB: round1(r.rss / 1e6),
        senderLoopDelay: r.senderLoopDelay,
        receiverLoopDelay,
      };
    } finally {
      await closeAll([send, recv]);
    }
    log(`  ${label.padEnd(30)} bulk ${out[key].bulkMBps} MB/s, control p99 ${out[key].controlP99Ms} ms`);
  }
  return out;
}

async function detection(a, log) {
  const kills = 5;
  const stops = 3;
  const out = { failureDetector: 'defaults (heartbeat 250 ms, phi 8, acceptable pause 1000 ms)' };
  log(`failure detection: kill -9 x${kills} (expect connection-closed), SIGSTOP x${stops} (expect heartbeat-timeout)`);
  const survivor = await startFoundation('survivor', {}, a);
  const peers = [];
  try {
    const round = async (i, sig, settleMs) => {
      const name = `peer-${sig === 'SIGKILL' ? 'k' : 's'}${i}`;
      const peer = await startFoundation(name, { cluster: { strategy: 'static', hosts: [survivor.id.address] } }, a);
      peers.push(peer);
      await Promise.all([
        survivor.waitEvent((e) => e.event === 'up' && e.name === name, 10_000, `up(${name})`),
        peer.waitEvent((e) => e.event === 'up' && e.name === 'survivor', 10_000, 'up(survivor)'),
      ]);
      // Let heartbeats run for a while, as they would in a long-lived cluster.
      await sleep(settleMs);
      const downP = survivor.waitEvent((e) => e.event === 'down' && e.name === name, 15_000, `down(${name})`);
      const t0 = wallNow();
      peer.signal(sig);
      const down = await downP;
      const ms = down.at - t0;
      peer.signal('SIGKILL');
      await peer.close();
      // For kill -9: when this process saw the peer's exit (SIGCHLD), i.e. the OS's share of the time.
      const exitMs = sig === 'SIGKILL' ? round3(peer.exitedAt - t0) : undefined;
      return { ms: round3(ms), reason: down.reason, exitMs };
    };
    const killRuns = [];
    for (let i = 0; i < kills; i++) killRuns.push(await round(i, 'SIGKILL', 300));
    out.kill = summarizeRuns(killRuns, 'connection-closed');
    log(
      `  kill -9  median ${out.kill.medianMs} ms, max ${out.kill.maxMs} ms (${out.kill.reasons}); parent saw exit after ${out.kill.processExitSeenByParentMs.join(' ')} ms`,
    );
    const stopRuns = [];
    for (let i = 0; i < stops; i++) stopRuns.push(await round(i, 'SIGSTOP', 1500));
    out.stop = summarizeRuns(stopRuns, 'heartbeat-timeout');
    log(`  SIGSTOP  median ${out.stop.medianMs} ms, max ${out.stop.maxMs} ms (${out.stop.reasons})`);
  } finally {
    for (const p of peers) p.signal('SIGKILL');
    await closeAll([...peers, survivor]);
  }
  return out;
}

function summarizeRuns(runs, expected) {
  const ms = runs.map((r) => r.ms).sort((x, y) => x - y);
  const reasons = [...new Set(runs.map((r) => r.reason))].join(',');
  const exits = runs.map((r) => r.exitMs).filter((x) => x !== undefined);
  return {
    runs: runs.length,
    samplesMs: runs.map((r) => r.ms),
    ...(exits.length ? { processExitSeenByParentMs: exits } : {}),
    medianMs: ms[Math.floor((ms.length - 1) / 2)],
    maxMs: ms[ms.length - 1],
    reasons,
    allExpectedReason: runs.every((r) => r.reason === expected),
    expectedReason: expected,
  };
}

// ---- formatting -----------------------------------------------------------------------------

const ms3 = (us) => (us === undefined ? undefined : round3(us / 1000));

function report(r) {
  const parts = [];
  const t = r.throughput;
  if (t && !t.error) {
    parts.push(
      table(
        `1. Throughput, ${t.payloadBytes}-byte messages, one sender process -> one receiver process (received msgs/s over ${r.config.durationSec}s)`,
        ['peer', 'msgs/s', 'MB/s payload', 'sender max RSS MB', 'back-pressure waits'],
        [
          ['Foundation mesh.send (events lane)', t.foundation],
          ['NATS pub/sub via nats-server', t.nats],
          ['Redis pub/sub via redis-server', t.redis],
          ['Moleculer emit (TCP transporter)', t.moleculer],
          ['raw TCP, batched length-prefixed', t.raw],
        ].map(([name, x]) => [name, fmtInt(x?.msgsPerSec), fmt(x?.mbPerSec), fmt(x?.senderMaxRssMB), fmtInt(x?.backpressureWaits)]),
      ),
      `Foundation/peer: NATS ${fmt(t.ratios.foundationOverNats, 2)}x, Redis ${fmt(t.ratios.foundationOverRedis, 2)}x, ` +
        `Moleculer ${fmt(t.ratios.foundationOverMoleculer, 2)}x, raw TCP ${fmt(t.ratios.foundationOverRaw, 2)}x`,
    );
  } else if (t?.error) parts.push(`\n1. Throughput: FAILED: ${t.error}`);

  const l = r.latency;
  if (l && !l.error) {
    const row = (name, s) => [
      name,
      fmt(s?.p50Us),
      fmt(s?.p90Us),
      fmt(s?.p99Us),
      fmt(s?.p999Us),
      fmt(s?.maxUs),
      fmt(s?.meanUs),
      (s?.roundP50Us ?? []).map((x) => fmt(x, 0)).join(' '),
    ];
    const ratios = (x) =>
      `Foundation/peer p50: raw TCP ${fmt(x.ratios.p50FoundationOverRaw, 2)}x, NATS ${fmt(x.ratios.p50FoundationOverNats, 2)}x, ` +
      `Redis ${fmt(x.ratios.p50FoundationOverRedis, 2)}x, Moleculer ${fmt(x.ratios.p50FoundationOverMoleculer, 2)}x   ` +
      `p99: raw TCP ${fmt(x.ratios.p99FoundationOverRaw, 2)}x, NATS ${fmt(x.ratios.p99FoundationOverNats, 2)}x, ` +
      `Redis ${fmt(x.ratios.p99FoundationOverRedis, 2)}x, Moleculer ${fmt(x.ratios.p99FoundationOverMoleculer, 2)}x`;
    const rows = (x) => [
      row('Foundation mesh.request (echo)', x.foundation),
      row('raw TCP ping-pong', x.raw),
      row('NATS request/reply', x.nats),
      row('Redis pub/sub ping-pong', x.redis),
      row('Moleculer call (TCP transporter)', x.moleculer),
    ];
    const header = ['peer', 'p50', 'p90', 'p99', 'p99.9', 'max', 'mean', 'p50 per round'];
    const what = `${l.payloadBytes}-byte payload, one outstanding, ${l.rounds} interleaved rounds x ${l.requestsPerRound} requests (µs)`;
    parts.push(table(`2. Request/response latency, ${what}, processes where the scheduler puts them`, header, rows(l)), ratios(l));
    if (l.oneCpu)
      parts.push(table('2b. The same with every process on CPU 0 (taskset): no cross-CPU wake-up per message', header, rows(l.oneCpu)), ratios(l.oneCpu));
  } else if (l?.error) parts.push(`\n2. Latency: FAILED: ${l.error}`);

  const h = r.hol;
  if (h && !h.error) {
    const row = (name, s) => [
      name,
      fmt(s?.bulkMBps),
      fmtInt(s?.controlRequests),
      fmt(s?.controlP50Ms, 2),
      fmt(s?.controlP90Ms, 2),
      fmt(s?.controlP99Ms, 2),
      fmt(s?.controlMaxMs, 2),
      fmtInt(s?.controlTimeouts),
      `${fmt(s?.senderLoopDelay?.p99Ms, 1)} / ${fmt(s?.senderLoopDelay?.maxMs, 1)}`,
      `${fmt(s?.receiverLoopDelay?.p99Ms, 1)} / ${fmt(s?.receiverLoopDelay?.maxMs, 1)}`,
    ];
    parts.push(
      table(
        '3. Head-of-line: control-lane request RTT while the same link carries 1 MiB bulk messages (ms)',
        ['lane scheduling', 'bulk MB/s', 'requests', 'p50', 'p90', 'p99', 'max', 'timeouts', 'sender loop delay p99/max', 'receiver loop delay p99/max'],
        HOL_RUNS.map((x) => row(x.label, h[x.key])),
      ),
    );
  } else if (h?.error) parts.push(`\n3. Head-of-line: FAILED: ${h.error}`);

  const d = r.detection;
  if (d && !d.error) {
    const med = (xs) => (xs?.length ? [...xs].sort((x, y) => x - y)[Math.floor((xs.length - 1) / 2)] : undefined);
    const row = (name, s) => [
      name,
      s?.runs,
      fmt(s?.medianMs, 1),
      fmt(s?.maxMs, 1),
      (s?.samplesMs ?? []).map((x) => fmt(x, 1)).join(' '),
      s?.reasons,
      fmt(med(s?.processExitSeenByParentMs), 1),
    ];
    parts.push(
      table(
        `4. Failure detection: signal to the peer process -> survivor's 'down' event (ms), ${d.failureDetector}`,
        ['fault', 'runs', 'median', 'max', 'samples', 'reason', 'parent saw exit (median)'],
        [row('kill -9', d.kill), row('SIGSTOP', d.stop)],
      ),
    );
  } else if (d?.error) parts.push(`\n4. Failure detection: FAILED: ${d.error}`);

  if (r.targets.length) {
    parts.push(
      table(
        'Targets',
        ['target', 'measured', 'result'],
        r.targets.map((x) => [x.name, x.measured, x.pass ? 'PASS' : 'MISS']),
      ),
    );
  }
  return parts.join('\n');
}

function targets(r) {
  const out = [];
  const add = (name, measured, pass) => out.push({ name, measured, pass });
  const t = r.throughput;
  if (t && !t.error) {
    add('Foundation >= 1,000,000 msg/s', `${fmtInt(t.foundation.msgsPerSec)} msg/s`, t.foundation.msgsPerSec >= 1e6);
    add('Foundation >= 2.5x NATS', `${fmt(t.ratios.foundationOverNats, 2)}x`, t.ratios.foundationOverNats >= 2.5);
  }
  const l = r.latency;
  if (l && !l.error) {
    add('request p50 <= 60 µs (scheduler placement)', `${fmt(l.foundation.p50Us)} µs`, l.foundation.p50Us <= 60);
    if (l.oneCpu) add('request p50 <= 60 µs (both processes on one CPU)', `${fmt(l.oneCpu.foundation.p50Us)} µs`, l.oneCpu.foundation.p50Us <= 60);
  }
  const h = r.hol;
  if (h && !h.error) {
    add('bulk >= 500 MB/s during HoL test (priority)', `${fmt(h.priority.bulkMBps)} MB/s`, h.priority.bulkMBps >= 500);
    add('control p99 <= 5 ms under bulk (priority, default flags)', `${fmt(h.priority.controlP99Ms, 2)} ms`, h.priority.controlP99Ms <= 5);
    const tuned = h.prioritySingleThreadedGc;
    add('control p99 <= 5 ms under bulk (priority, --single-threaded-gc)', `${fmt(tuned.controlP99Ms, 2)} ms`, tuned.controlP99Ms <= 5);
  }
  const d = r.detection;
  if (d && !d.error) {
    add("kill -9 -> 'down' (connection-closed)", `${fmt(d.kill.medianMs)} ms median`, d.kill.allExpectedReason);
    add("SIGSTOP -> 'down' (heartbeat-timeout)", `${fmt(d.stop.medianMs)} ms median`, d.stop.allExpectedReason);
  }
  return out;
}

// ---- main -----------------------------------------------------------------------------------

async function main() {
  const a = parseArgs(process.argv.slice(2));
  if (a.dist) setDist(resolve(a.dist));
  requireBuilt('bench:mesh');
  const started = new Date();
  const result = {
    ...resultHeader('mesh', started, {
      natsServer: daemonVersion('nats'),
      redisServer: daemonVersion('redis'),
      moleculer: packageVersion('moleculer'),
    }),
    config: {
      sections: a.only,
      durationSec: a.duration,
      warmupSec: a.warmup,
      requests: a.requests,
      latencyWarmup: a.latencyWarmup,
      cpuProf: a.cpuProf,
      dist: relative(ROOT, getDist()) || getDist(),
    },
  };
  const log = (s) => console.error(`[bench ${((performance.now() - t0) / 1000).toFixed(1)}s] ${s}`);
  const t0 = performance.now();
  log(`host: ${result.host.cpus} CPUs, node ${process.version}, load ${result.host.loadAvgAtStart.join(' ')}`);
  const run = async (name, fn, extra) => {
    if (!a.only.includes(name)) return;
    try {
      result[name] = { ...extra, ...(await fn(a, log)) };
    } catch (err) {
      log(`${name} FAILED: ${err.stack ?? err}`);
      result[name] = { error: String(err.message ?? err).split('\n')[0] };
      process.exitCode = 1;
    }
  };
  try {
    await run('throughput', throughput, { payloadBytes: 100 });
    await run('latency', latency, { payloadBytes: 100 });
    await run('hol', hol);
    await run('detection', detection);
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
  const file = a.out ?? join(HERE, 'results', `mesh-${started.toISOString().replace(/:/g, '-').replace(/\..*$/, '')}.json`);
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(file, `${JSON.stringify(result, null, 2)}\n`);
  console.log(`results: ${relative(process.cwd(), file)}`);
}

main().catch((err) => {
  console.error(err.stack ?? err);
  killAll();
  process.exit(1);
});
