#!/usr/bin/env node
// Service mesh benchmark (node.services):
// 1. `discover` calls per second, in this process: two nodes linked over 127.0.0.1, N instances
//    registered on one, discovered on the other (healthy only, and with a version range), next
//    to the registry select beneath it (`registry.select('service:<name>:*')`), the peer measured
//    in the same run: the ratio is the cost of shaping entries into records.
// 2. `services.call` against a plain `mesh.request` between two node processes: the same 100-byte
//    echo, sequential round trips, blocks of the two interleaved so both see the same machine;
//    p50/p99 of each and their ratio.
//
//   npm run bench:services    (node bench/services.mjs [--calls 20000] [--instances 10,100,1000] [--out file.json])
import { fork } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { benchArgs } from './lib/args.mjs';
import { payload, serve, summarizeUs } from './lib/common.mjs';

const HERE = dirname(fileURLToPath(import.meta.url));
const args = process.argv.slice(2);
const flags = benchArgs(args, 'usage: node bench/services.mjs [--calls 20000] [--instances 10,100,1000] [--out file]', {
  calls: { type: 'number', default: 20_000 },
  instances: { type: 'numbers', default: [10, 100, 1000] },
  out: { type: 'string', default: join(HERE, 'results', `services-${new Date().toISOString().replace(/[:.]/g, '-').slice(0, 19)}.json`) },
  // A node process this bench starts (its start options as JSON).
  child: { type: 'string' },
});
const silent = { debug() {}, info() {}, warn() {}, error() {}, child: () => silent };
const SECRET = 'bench-services-secret-0123456789abc';

// ---- child: one node process (--child <start options>) ---------------------------------------------
if (flags.child !== undefined) {
  const { Foundation } = await import('../dist/index.js');
  const node = await Foundation.start({ ...JSON.parse(flags.child), logger: silent });
  const body = payload(100);
  node.mesh.handle('bench.echo', (p) => p);
  serve({
    address: () => node.id.address,
    members: () => node.cluster.members().length,
    register: async () => {
      await node.services.register('echo', { id: `e-${node.id.name}`, handlers: { echo: (p) => p } });
      return true;
    },
    instances: () => node.services.discover({ name: 'echo', healthy: true }).length,
    // One block of sequential round trips of one kind; samples in ms.
    block: async ({ kind, to, n }) => {
      const once = kind === 'call' ? () => node.services.call('echo', 'echo', body, { retries: 0 }) : () => node.mesh.request(to, 'bench.echo', body);
      const samples = new Array(n);
      for (let i = 0; i < n; i++) {
        const t = performance.now();
        await once();
        samples[i] = performance.now() - t;
      }
      return samples;
    },
  });
} else {
  await main();
}

async function main() {
  const CALLS = flags.calls;
  const SIZES = flags.instances;
  const OUT = flags.out;
  const result = {
    date: new Date().toISOString(),
    command: `node bench/services.mjs ${args.join(' ')}`.trim(),
    machine: `${os.cpus().length} cores, ${Math.round(os.totalmem() / 2 ** 30)} GiB, ${os.cpus()[0]?.model}`,
    node: process.version,
    loadAverageAtStart: os.loadavg().map((x) => +x.toFixed(2)),
  };
  console.log(`services bench, ${result.machine}, Node ${result.node}, load average ${result.loadAverageAtStart.join(' ')}`);
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  async function until(cond, what, ms = 30_000) {
    const end = Date.now() + ms;
    while (!(await cond())) {
      if (Date.now() > end) throw new Error(`timed out: ${what}`);
      await sleep(20);
    }
  }

  // ---- 1. discover per second, in this process -------------------------------------------------------
  const { Foundation } = await import('../dist/index.js');
  const clusterName = `bench-services-${process.pid}`;
  const owner = await Foundation.start({ name: 'owner', clusterName, secret: SECRET, host: '127.0.0.1', logger: silent });
  const reader = await Foundation.start({
    name: 'reader',
    clusterName,
    secret: SECRET,
    host: '127.0.0.1',
    logger: silent,
    cluster: { strategy: 'static', hosts: [owner.id.address] },
  });
  await until(() => reader.cluster.members().length === 1, 'the two in-process nodes linked');
  // Other names in the registry too (a select scans every name): 1,000 plain registrations.
  for (let i = 0; i < 1000; i++) owner.registry.register(`room:${i}`, { i });
  /** Calls `fn` for about `ms` and returns calls per second. */
  const rate = (fn, ms = 1500) => {
    for (let i = 0; i < 200; i++) fn(); // warm-up
    let n = 0;
    const t0 = performance.now();
    let t = t0;
    while (t - t0 < ms) {
      for (let i = 0; i < 50; i++) fn();
      n += 50;
      t = performance.now();
    }
    return Math.round(n / ((t - t0) / 1000));
  };
  result.discover = [];
  let registered = 0;
  for (const size of SIZES) {
    for (; registered < size; registered++)
      await owner.services.register('users', { id: `u${String(registered).padStart(5, '0')}`, version: `1.${registered % 10}.0`, tags: ['eu'] });
    await until(() => reader.services.discover({ name: 'users' }).length === size, `${size} instances on the reader`);
    const selectRate = rate(() => reader.registry.select('service:users:*'));
    const healthyRate = rate(() => reader.services.discover({ name: 'users', healthy: true }));
    const rangeRate = rate(() => reader.services.discover({ name: 'users', healthy: true, version: '^1.5' }));
    const pickRate = rate(() => reader.services.pick('users', { strategy: 'least-rtt' }));
    const row = {
      instances: size,
      otherNames: 1000,
      selectPerSec: selectRate,
      discoverPerSec: healthyRate,
      discoverRangePerSec: rangeRate,
      pickPerSec: pickRate,
    };
    result.discover.push(row);
    console.log(
      `discover, ${size} instances (+1,000 other names): ${healthyRate.toLocaleString('en')}/s healthy, ${rangeRate.toLocaleString('en')}/s with a version range, ` +
        `pick (least-rtt) ${pickRate.toLocaleString('en')}/s; registry.select beneath ${selectRate.toLocaleString('en')}/s -> discover at ${(healthyRate / selectRate).toFixed(2)}x the select`,
    );
  }
  await reader.stop();
  await owner.stop();

  // ---- 2. services.call against mesh.request, two processes ------------------------------------------
  const children = new Set();
  process.on('exit', () => {
    for (const c of children) c.kill('SIGKILL');
  });
  function start(name, hosts) {
    const opts = {
      name,
      clusterName: `${clusterName}-call`,
      secret: SECRET,
      host: '127.0.0.1',
      ...(hosts.length ? { cluster: { strategy: 'static', hosts } } : {}),
    };
    const child = fork(fileURLToPath(import.meta.url), ['--child', JSON.stringify(opts)], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
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
  const server = start('server', []);
  const client = start('client', [await server.call('address')]);
  await until(async () => (await client.call('members')) === 1, 'the two node processes linked');
  await server.call('register');
  await until(async () => (await client.call('instances')) === 1, 'the echo instance on the client');
  const BLOCK = 1000;
  // Warm-up of both paths.
  await client.call('block', { kind: 'call', n: 2000 });
  await client.call('block', { kind: 'request', to: 'server', n: 2000 });
  const samples = { call: [], request: [] };
  for (let done = 0; done < CALLS; done += BLOCK) {
    for (const kind of done % (2 * BLOCK) === 0 ? ['call', 'request'] : ['request', 'call'])
      samples[kind].push(...(await client.call('block', { kind, to: 'server', n: Math.min(BLOCK, CALLS - done) })));
  }
  const call = summarizeUs(samples.call);
  const request = summarizeUs(samples.request);
  result.call = {
    payloadBytes: 100,
    roundTrips: CALLS,
    servicesCall: { p50Us: call.p50Us, p99Us: call.p99Us, meanUs: call.meanUs },
    meshRequest: { p50Us: request.p50Us, p99Us: request.p99Us, meanUs: request.meanUs },
    ratioP50: +(call.p50Us / request.p50Us).toFixed(2),
    ratioP99: +(call.p99Us / request.p99Us).toFixed(2),
  };
  console.log(
    `services.call, 100-byte echo between two processes, ${CALLS} sequential round trips each: p50 ${call.p50Us} us, p99 ${call.p99Us} us; ` +
      `mesh.request: p50 ${request.p50Us} us, p99 ${request.p99Us} us -> call/request ${result.call.ratioP50}x at p50, ${result.call.ratioP99}x at p99`,
  );
  result.loadAverageAtEnd = os.loadavg().map((x) => +x.toFixed(2));
  console.log(`load average at the end: ${result.loadAverageAtEnd.join(' ')}`);
  mkdirSync(dirname(OUT), { recursive: true });
  writeFileSync(OUT, `${JSON.stringify(result, null, 2)}\n`);
  console.log(`results: ${OUT}`);
  for (const c of children) c.kill('SIGKILL');
  process.exit(0);
}
