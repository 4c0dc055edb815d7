#!/usr/bin/env node
// Registry benchmark: time until a registration is visible on all of 5 nodes (p50, p99), local
// lookups per second, memory per 100k registrations, and memory across 1M register/unregister
// cycles. Each node is its own process on 127.0.0.1 (bench/lib/registry-node.mjs); this process
// only coordinates. Horde's published figure for visibility is ~250-300 ms (horde#223: its delta
// CRDT syncs on an interval); no Elixir peer runs here, so the ratio is to that figure.
// Then singleton failover on 3 node processes (bench/lib/failover.mjs): kill -9 and SIGSTOP of an
// 'available' singleton's host, kill -9 of a 'quorum' singleton's holder, against Akka Cluster
// Singleton's published 25-45 s and Horde's "detection plus a 300 ms sync".
//
//   npm run bench:registry            (node bench/registry.mjs [--names 1000] [--out file.json])
//   node bench/registry.mjs --only failover --reps 10 [--scenarios available-kill9,available-sigstop,
//                                          quorum-kill9-lease1000,quorum-kill9-lease2000]
//   node bench/registry.mjs --only failover --fresh   (a new 3-node cluster per repetition)
//   node bench/registry.mjs --only registry   (the 5-node part only)
import { fork } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { benchArgs } from './lib/args.mjs';
import { summarizeUs } from './lib/common.mjs';
import { runFailover, SCENARIOS } from './lib/failover.mjs';

const HERE = dirname(fileURLToPath(import.meta.url));
const NODE = join(HERE, 'lib', 'registry-node.mjs');
const args = process.argv.slice(2);
const opts = benchArgs(args, 'usage: node bench/registry.mjs [--names 1000] [--only registry,failover] [--reps 10] [--fresh] [--scenarios a,b] [--out file]', {
  names: { type: 'number', default: 1000 },
  out: { type: 'string', default: join(HERE, 'results', `registry-${new Date().toISOString().replace(/[:.]/g, '-').slice(0, 19)}.json`) },
  only: { type: 'list', default: ['registry', 'failover'] },
  reps: { type: 'number', default: 10 },
  fresh: { type: 'boolean', default: false },
  scenarios: { type: 'list', default: Object.keys(SCENARIOS) },
});
const NAMES = opts.names;
const OUT = opts.out;
const HORDE_VISIBILITY_MS = 250;
const ONLY = new Set(opts.only);
const REPS = opts.reps;
const FRESH = opts.fresh;
const FAILOVER_SCENARIOS = opts.scenarios;
for (const s of ONLY) if (s !== 'registry' && s !== 'failover') throw new Error(`--only: unknown section ${s} (registry, failover)`);
if (!(REPS >= 1)) throw new Error('--reps: a positive number');

const children = new Set();
process.on('exit', () => {
  for (const c of children) c.kill('SIGKILL');
});

function start(name, hosts) {
  const child = fork(
    NODE,
    [
      JSON.stringify({
        name,
        clusterName: `bench-registry-${process.pid}`,
        secret: 'bench-registry-secret-0123456789abc',
        host: '127.0.0.1',
        ...(hosts.length ? { cluster: { strategy: 'static', hosts } } : {}),
      }),
    ],
    {
      execArgv: ['--expose-gc'],
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    },
  );
  children.add(child);
  let id = 0;
  const waiting = new Map();
  child.on('message', (m) => {
    const w = waiting.get(m.id);
    if (!w) return;
    waiting.delete(m.id);
    if (m.ok) w.resolve(m.result);
    else w.reject(new Error(m.error));
  });
  const call = (cmd, fields = {}) =>
    new Promise((resolve, reject) => {
      const n = ++id;
      waiting.set(n, { resolve, reject });
      child.send({ id: n, cmd, ...fields });
    });
  return { name, call, child };
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
async function until(cond, what, ms = 20_000) {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out: ${what}`);
    await sleep(50);
  }
}

const result = {
  date: new Date().toISOString(),
  machine: `${os.cpus().length} cores, ${Math.round(os.totalmem() / 2 ** 30)} GiB, ${os.cpus()[0]?.model}`,
  node: process.version,
};

process.on('SIGINT', () => process.exit(130));
const nodes = [];
if (ONLY.has('registry')) {
  // ---- visibility on 5 nodes ----------------------------------------------------------------------
  const first = start('r1', []);
  const firstAddress = await first.call('address');
  nodes.push(first);
  for (let i = 2; i <= 5; i++) nodes.push(start(`r${i}`, [firstAddress]));
  await until(async () => (await Promise.all(nodes.map((n) => n.call('members')))).every((m) => m === 4), 'a 5-node mesh');
  for (const n of nodes) await n.call('watch');
  // One registration every 2 ms from r1: each is timed on the 4 others, from its stamp to its event.
  await first.call('register-burst', { prefix: 'vis', n: NAMES, everyMs: 2 });
  await until(async () => (await Promise.all(nodes.slice(1).map((n) => n.call('count')))).every((c) => c >= NAMES), 'every name on every node');
  const delays = (await Promise.all(nodes.slice(1).map((n) => n.call('delays')))).flat();
  const vis = summarizeUs(delays);
  result.visibility = { names: NAMES, observers: 4, samples: vis.n, p50Ms: vis.p50Us / 1000, p99Ms: vis.p99Us / 1000, maxMs: vis.maxUs / 1000 };
  console.log(
    `visibility on all of 5 nodes (${NAMES} names, one every 2 ms, ${vis.n} samples): p50 ${(vis.p50Us / 1000).toFixed(3)} ms, p99 ${(vis.p99Us / 1000).toFixed(3)} ms, max ${(vis.maxUs / 1000).toFixed(1)} ms`,
  );
  console.log(`  Horde (published, horde#223): ~${HORDE_VISIBILITY_MS} ms -> ${(HORDE_VISIBILITY_MS / (vis.p99Us / 1000)).toFixed(0)}x faster at p99`);

  // ---- memory per 100k registrations, lookups -----------------------------------------------------
  const owner = nodes[1];
  const peer = nodes[2];
  const before = { owner: (await owner.call('memory')).heapUsed, peer: (await peer.call('memory')).heapUsed };
  await owner.call('bulk', { n: 100_000 });
  await until(async () => (await peer.call('count')) >= 100_000 + NAMES, 'the peer to hold 100k more', 60_000);
  const after = { owner: (await owner.call('memory')).heapUsed, peer: (await peer.call('memory')).heapUsed };
  result.memoryPer100k = { ownerMB: +((after.owner - before.owner) / 2 ** 20).toFixed(1), peerMB: +((after.peer - before.peer) / 2 ** 20).toFixed(1) };
  console.log(`memory for 100k registrations (heap, after GC): owner +${result.memoryPer100k.ownerMB} MB, each peer +${result.memoryPer100k.peerMB} MB`);
  const lookups = await peer.call('lookups', { names: 100_000, rounds: 20 });
  result.lookupsPerSec = lookups.perSec;
  console.log(`local lookups: ${(lookups.perSec / 1e6).toFixed(1)} M/s (100k names, all found: ${lookups.found === 2_000_000})`);

  // ---- churn ---------------------------------------------------------------------------------------
  // Two rounds of 1M register/unregister cycles (1,000 names reused). The first round may grow
  // buffers to their working size (link queues, maps); memory is flat when the second round adds
  // nothing on top of the first.
  const heaps = async () => ({ owner: (await owner.call('memory')).heapUsed, peer: (await peer.call('memory')).heapUsed });
  const churnStart = await heaps();
  const t0 = Date.now();
  await owner.call('churn', { cycles: 1_000_000 });
  await sleep(3000); // digests settle
  const afterFirst = await heaps();
  await owner.call('churn', { cycles: 1_000_000 });
  await sleep(3000);
  const afterSecond = await heaps();
  const mb = (x) => +(x / 2 ** 20).toFixed(2);
  result.churn = {
    cycles: 2_000_000,
    seconds: (Date.now() - t0 - 6000) / 1000,
    firstRoundMB: { owner: mb(afterFirst.owner - churnStart.owner), peer: mb(afterFirst.peer - churnStart.peer) },
    secondRoundMB: { owner: mb(afterSecond.owner - afterFirst.owner), peer: mb(afterSecond.peer - afterFirst.peer) },
  };
  const sign = (x) => `${x >= 0 ? '+' : ''}${x}`;
  console.log(
    `churn: 2 x 1M register/unregister cycles in ${result.churn.seconds.toFixed(1)} s; heap after GC, first round: owner ${sign(result.churn.firstRoundMB.owner)} MB, peer ${sign(result.churn.firstRoundMB.peer)} MB; second round: owner ${sign(result.churn.secondRoundMB.owner)} MB, peer ${sign(result.churn.secondRoundMB.peer)} MB`,
  );

  for (const n of nodes) n.child.kill('SIGKILL');
}

// ---- singleton failover on 3 nodes ---------------------------------------------------------------
if (ONLY.has('failover')) {
  result.failoverLoadavgBefore = os.loadavg();
  result.failover = await runFailover({ reps: REPS, scenarios: FAILOVER_SCENARIOS, fresh: FRESH });
  result.failoverLoadavgAfter = os.loadavg();
}

mkdirSync(dirname(OUT), { recursive: true });
writeFileSync(OUT, `${JSON.stringify(result, null, 2)}\n`);
console.log(`results: ${OUT}`);
process.exit(0);
