#!/usr/bin/env node
// node.config benchmark: setClusterWide latency (p50, p99) on 3 and 5 node processes on
// 127.0.0.1, one caller committing one small value after another (prepare to every member,
// validators, votes, commit, every acknowledgment: the promise resolves once every member
// applied it). Measured in the same run, from the same node, on the same (control) lane: a plain
// mesh.request round trip to one other node, and the message pattern of a two-phase commit
// without its logic (two rounds, each a request to every other member in parallel): the floor
// any two-phase commit over this mesh pays.
// Published peer figure: etcd's own benchmark of a 3-member cluster writing one key from one
// client, 90th percentile 21.4 ms (etcd.io/docs/v3.5/benchmarks/etcd-2-1-0-alpha-benchmarks;
// GCE n1-highcpu-2, fsync to SSD on every write; Foundation's config is in memory, no fsync,
// so the ratio says what durability costs more than who is faster).
//
//   npm run bench:config            (node bench/config-commit.mjs [--commits 500] [--out file.json])
import { fork } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { benchArgs } from './lib/args.mjs';
import { summarizeUs } from './lib/common.mjs';

const HERE = dirname(fileURLToPath(import.meta.url));
const NODE = join(HERE, 'lib', 'config-node.mjs');
const args = process.argv.slice(2);
const opts = benchArgs(args, 'usage: node bench/config-commit.mjs [--commits 500] [--out file]', {
  commits: { type: 'number', default: 500 },
  out: { type: 'string', default: join(HERE, 'results', `config-commit-${new Date().toISOString().replace(/[:.]/g, '-').slice(0, 19)}.json`) },
});
const COMMITS = opts.commits;
const WARMUP = 50;
const OUT = opts.out;
const ETCD_PUT_P90_MS = 21.4;

const children = new Set();
process.on('exit', () => {
  for (const c of children) c.kill('SIGKILL');
});

function start(name, hosts, cluster) {
  const child = fork(
    NODE,
    [
      JSON.stringify({
        name,
        clusterName: cluster,
        secret: 'bench-config-secret-0123456789abcdef',
        host: '127.0.0.1',
        ...(hosts.length ? { cluster: { strategy: 'static', hosts } } : {}),
      }),
    ],
    { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] },
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
async function until(cond, what, ms = 30_000) {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out: ${what}`);
    await sleep(50);
  }
}

const ms = (us) => +(us / 1000).toFixed(3);
const result = {
  date: new Date().toISOString(),
  machine: `${os.cpus().length} cores, ${Math.round(os.totalmem() / 2 ** 30)} GiB, ${os.cpus()[0]?.model}`,
  node: process.version,
  loadAverageBefore: os.loadavg().map((x) => +x.toFixed(2)),
  commits: COMMITS,
  clusters: [],
};

for (const n of [3, 5]) {
  const cluster = `bench-config-${process.pid}-${n}`;
  const first = start('k1', [], cluster);
  const firstAddress = await first.call('address');
  const nodes = [first];
  for (let i = 2; i <= n; i++) nodes.push(start(`k${i}`, [firstAddress], cluster));
  await until(async () => (await Promise.all(nodes.map((x) => x.call('members')))).every((m) => m === n - 1), `a ${n}-node mesh`);
  await until(async () => (await Promise.all(nodes.map((x) => x.call('ready')))).every(Boolean), `${n} nodes ready`);
  await first.call('commits', { n: WARMUP, path: 'bench.warmup' });
  await first.call('requests', { n: WARMUP * 4, to: 'k2' });
  // Blocks of each, interleaved, so all three see the same machine (the load moves under us).
  const commit = { samples: [], retried: 0 };
  const req = { samples: [] };
  const rounds = { samples: [] };
  const BLOCK = 50;
  for (let done = 0; done < COMMITS; done += BLOCK) {
    const k = Math.min(BLOCK, COMMITS - done);
    const cm = await first.call('commits', { n: k, path: 'bench.value' });
    commit.samples.push(...cm.samples);
    commit.retried += cm.retried;
    rounds.samples.push(...(await first.call('rounds', { n: k })).samples);
    req.samples.push(...(await first.call('requests', { n: k * 4, to: 'k2' })).samples);
  }
  const w = summarizeUs(rounds.samples);
  const c = summarizeUs(commit.samples);
  const r = summarizeUs(req.samples);
  const versions = await Promise.all(nodes.map((x) => x.call('version')));
  const entry = {
    nodes: n,
    commit: { samples: c.n, p50Ms: ms(c.p50Us), p90Ms: ms(c.p90Us), p99Ms: ms(c.p99Us), maxMs: ms(c.maxUs), retried: commit.retried },
    request: { samples: r.n, p50Ms: ms(r.p50Us), p99Ms: ms(r.p99Us) },
    twoRounds: { samples: w.n, p50Ms: ms(w.p50Us), p99Ms: ms(w.p99Us) },
    commitOverRequestP50: +(c.p50Us / r.p50Us).toFixed(1),
    commitOverTwoRoundsP50: +(c.p50Us / w.p50Us).toFixed(2),
    commitOverTwoRoundsP99: +(c.p99Us / w.p99Us).toFixed(2),
    etcdP90OverCommitP90: +(ETCD_PUT_P90_MS / (c.p90Us / 1000)).toFixed(1),
    versionsEqual: versions.every((v) => v === versions[0]),
  };
  result.clusters.push(entry);
  console.log(
    `${n} nodes: setClusterWide p50 ${entry.commit.p50Ms} ms, p90 ${entry.commit.p90Ms} ms, p99 ${entry.commit.p99Ms} ms (max ${entry.commit.maxMs}, ${c.n} commits, ${commit.retried} retried); ` +
      `mesh.request p50 ${entry.request.p50Ms} ms, p99 ${entry.request.p99Ms} ms -> commit = ${entry.commitOverRequestP50}x a request at p50; ` +
      `two rounds of parallel requests to every member p50 ${entry.twoRounds.p50Ms} ms, p99 ${entry.twoRounds.p99Ms} ms -> commit = ${entry.commitOverTwoRoundsP50}x at p50, ${entry.commitOverTwoRoundsP99}x at p99; ` +
      `etcd published p90 ${ETCD_PUT_P90_MS} ms (3 members, fsync) = ${entry.etcdP90OverCommitP90}x ours; versions equal on every node: ${entry.versionsEqual}`,
  );
  await Promise.all(nodes.map((x) => x.call('exit').catch(() => {})));
  for (const x of nodes) children.delete(x.child);
  await sleep(500);
}
result.loadAverageAfter = os.loadavg().map((x) => +x.toFixed(2));
console.log(`load average before ${result.loadAverageBefore.join(' ')}, after ${result.loadAverageAfter.join(' ')}`);
mkdirSync(dirname(OUT), { recursive: true });
writeFileSync(OUT, `${JSON.stringify(result, null, 2)}\n`);
console.log(`results: ${OUT}`);
process.exit(0);
