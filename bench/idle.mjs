#!/usr/bin/env node
// Idle-cost benchmark: CPU that quiet Foundation nodes spend doing nothing but staying members
// (heartbeats, timers, discovery upkeep). See docs/benchmarks.md, section "Idle cost".
//
//   node bench/idle.mjs [--sizes 1,10,30,50] [--window 30] [--settle 120] [--dist DIR] [--out file.json]
//                       [--cpu-prof] [--heartbeat-interval ms]
//
// For each size N it starts N real node processes (bench/lib/formation-node.mjs) on 127.0.0.1,
// each with the `static` strategy listing all N mesh ports, waits until every node sees N-1
// members up, lets them settle (120 s by default: V8 keeps optimizing the code of rarely run
// paths, the heartbeat's and the timers', on its compiler threads for a minute or two after start,
// which is start-up, not idling), then reads every process's user+system CPU time from
// /proc/<pid>/stat at the start and the end of a `--window` second window. Nothing is sent but
// what the nodes send on their own. It prints idle CPU in % of one core per node (median, mean,
// max) and the total, and says where the machine saturates: when the nodes together need more
// than the machine has, per-node figures stop meaning "cost" and start meaning "share".
//
// Traffic stays on 127.0.0.1 (the nodes bind and dial loopback only). Every process is
// SIGKILLed on the way out.
import { spawn } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { benchArgs } from './lib/args.mjs';

const HERE = dirname(fileURLToPath(import.meta.url));
const NODE_SCRIPT = join(HERE, 'lib', 'formation-node.mjs');
const HOST = '127.0.0.1';
const SECRET = 'bench-idle-secret-0123456789abcdef';
/** Clock ticks per second of /proc/<pid>/stat (USER_HZ; 100 on every Linux this runs on). */
const CLK_TCK = 100;
/** Nodes started at once; the next batch starts when these have. */
const START_BATCH = 5;
/** Targets of issue 7, item 10 (% of one core per node). */
const TARGET = { solo: 0.5, n10: 1.0 };

function parseArgs(argv) {
  const a = benchArgs(
    argv,
    'usage: node bench/idle.mjs [--sizes 1,10,30,50] [--window 30] [--settle 120] [--dist DIR] [--out file] [--cpu-prof] [--heartbeat-interval ms] [--base-port 17400]',
    {
      sizes: { type: 'numbers', default: [1, 10, 30, 50] },
      window: { type: 'number', default: 30 },
      settle: { type: 'number', default: 120 },
      dist: { type: 'string' },
      out: { type: 'string' },
      'cpu-prof': { type: 'boolean', default: false },
      'heartbeat-interval': { type: 'number' },
      'base-port': { type: 'number', default: 17400 },
    },
  );
  if (a.dist !== undefined) a.dist = resolve(a.dist);
  for (const n of a.sizes) if (!(Number.isInteger(n) && n >= 1 && n <= 100)) throw new Error(`--sizes: each size must be an integer in 1..100, got ${n}`);
  if (!(a.window >= 2 && a.window <= 600)) throw new Error('--window must be in [2, 600] seconds');
  if (!(a.settle >= 0 && a.settle <= 900)) throw new Error('--settle must be in [0, 900] seconds');
  if (!(Number.isInteger(a.basePort) && a.basePort >= 1024 && a.basePort + 2 * Math.max(...a.sizes) < 65536)) throw new Error('--base-port out of range');
  return a;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const round2 = (x) => Math.round(x * 100) / 100;
const pct = (xs, q) => {
  const s = [...xs].sort((x, y) => x - y);
  return s.length ? s[Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1))] : undefined;
};
async function until(pred, ms) {
  const end = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > end) return false;
    await sleep(50);
  }
  return true;
}

/** user+system CPU ticks of a process (all its threads), or undefined once it is gone. */
function cpuTicks(pid) {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the parenthesised command name: state is field 3, utime 14, stime 15.
    const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
    return Number(f[11]) + Number(f[12]);
  } catch {
    return undefined;
  }
}

/**
 * Per thread of a process: CPU ticks and voluntary context switches (each one a wake-up after
 * sleeping: what an idle process pays for). Keyed by thread id; the main thread's id is the pid.
 */
function threadCounters(pid) {
  const out = new Map();
  let tids = [];
  try {
    tids = readdirSync(`/proc/${pid}/task`);
  } catch {
    return out;
  }
  for (const tid of tids) {
    try {
      const st = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
      const f = st.slice(st.lastIndexOf(')') + 2).split(' ');
      const status = readFileSync(`/proc/${pid}/task/${tid}/status`, 'utf8');
      const vol = Number(/^voluntary_ctxt_switches:\s+(\d+)/m.exec(status)?.[1] ?? 0);
      out.set(tid, { ticks: Number(f[11]) + Number(f[12]), wakeups: vol });
    } catch {}
  }
  return out;
}

/**
 * Wake-ups per second and CPU % of the main thread and of the busiest other thread (the
 * heartbeat worker, in an idle node), and wake-ups of all threads together, over the window.
 */
function threadRates(pid, before, after, seconds) {
  const rows = [];
  for (const [tid, a] of after) {
    const b = before.get(tid) ?? { ticks: 0, wakeups: 0 };
    rows.push({ tid, wakeups: (a.wakeups - b.wakeups) / seconds, cpu: ((a.ticks - b.ticks) / CLK_TCK / seconds) * 100 });
  }
  const main = rows.find((r) => r.tid === String(pid));
  const other = rows.filter((r) => r !== main).sort((x, y) => y.wakeups - x.wakeups)[0];
  return {
    mainWakeups: main?.wakeups ?? 0,
    mainCpu: main?.cpu ?? 0,
    workerWakeups: other?.wakeups ?? 0,
    workerCpu: other?.cpu ?? 0,
    allWakeups: rows.reduce((s, r) => s + r.wakeups, 0),
  };
}

/** Whole-machine busy and total jiffies, from /proc/stat. */
function machineTicks() {
  const f = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
  const idle = (f[3] ?? 0) + (f[4] ?? 0);
  const total = f.reduce((x, y) => x + y, 0);
  return { busy: total - idle, total };
}

class Node {
  constructor(i, n, a, profDir) {
    this.name = `idle${String(i).padStart(2, '0')}`;
    this.ups = new Set();
    this.downs = [];
    this.complete = n === 1;
    const hosts = Array.from({ length: n }, (_, j) => `${HOST}:${a.basePort + j}`);
    const opts = {
      name: this.name,
      host: HOST,
      port: a.basePort + i,
      secret: SECRET,
      topologies: { lan: { strategy: 'static', config: { hosts } } },
      ...(a.heartbeatInterval ? { failureDetector: { heartbeatIntervalMs: a.heartbeatInterval } } : {}),
    };
    const env = { ...process.env, BENCH_EXPECT_PEERS: String(n - 1), ...(a.dist ? { BENCH_FOUNDATION_DIST: a.dist } : {}) };
    const execArgv = profDir ? ['--cpu-prof', '--cpu-prof-dir', profDir] : [];
    this.proc = spawn(process.execPath, [...execArgv, NODE_SCRIPT, JSON.stringify(opts)], { stdio: ['pipe', 'pipe', 'pipe'], env });
    this.pid = this.proc.pid;
    this.stderr = '';
    this.proc.stderr.on('data', (d) => {
      if (this.stderr.length < 20_000) this.stderr += String(d);
    });
    this.proc.stdin.on('error', () => {});
    let buf = '';
    this.proc.stdout.on('data', (d) => {
      buf += String(d);
      for (let k = buf.indexOf('\n'); k >= 0; k = buf.indexOf('\n')) {
        const line = buf.slice(0, k);
        buf = buf.slice(k + 1);
        try {
          this.onEvent(JSON.parse(line));
        } catch {}
      }
    });
    this.exited = false;
    this.proc.on('exit', (code, signal) => {
      this.exited = true;
      if (!this.killed) this.failed = `exited (code ${code}, signal ${signal})`;
    });
  }

  onEvent(e) {
    if (e.event === 'started') this.started = true;
    else if (e.event === 'start-failed') this.failed = `start failed: ${e.code} ${e.message}`;
    else if (e.event === 'complete') this.complete = true;
    else if (e.event === 'up') this.ups.add(e.member.name);
    else if (e.event === 'down') {
      this.ups.delete(e.member.name);
      this.downs.push({ at: e.at, peer: e.member.name, reason: e.reason });
    } else if (e.event === 'stats') this.stats = e;
  }

  send(cmd) {
    try {
      this.proc.stdin.write(`${JSON.stringify(cmd)}\n`);
    } catch {}
  }

  /** Ends the process; with --cpu-prof it exits cleanly so that the profile is written. */
  async stop(graceful) {
    this.killed = true;
    if (this.exited) return;
    if (graceful) {
      this.send({ cmd: 'exit' });
      if (await until(() => this.exited, 5000)) return;
    }
    this.proc.kill('SIGKILL');
    await until(() => this.exited, 2000);
  }
}

const all = new Set();
const killAll = () => {
  for (const x of all) if (!x.exited) x.proc.kill('SIGKILL');
};
process.on('exit', killAll);
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => {
    killAll();
    process.exit(130);
  });
}

async function runSize(n, a, log) {
  const m0 = machineTicks();
  await sleep(1000);
  const m1 = machineTicks();
  const busyBefore = round2((m1.busy - m0.busy) / (m1.total - m0.total));
  const profDir = a.cpuProf ? join(HERE, 'results', 'prof', `idle-n${n}-${Date.now()}`) : undefined;
  if (profDir) mkdirSync(profDir, { recursive: true });
  // Only the first node is profiled: profiling costs CPU of its own.
  // Started in batches: how fast a cluster forms is bench/formation's business, and 50 processes
  // loading at once on a small, shared machine can take longer than their start-up timeouts.
  const nodes = [];
  const out = { n, ok: false, busyBefore };
  try {
    for (let i = 0; i < n; i += START_BATCH) {
      const batch = [];
      for (let j = i; j < Math.min(n, i + START_BATCH); j++) batch.push(new Node(j, n, a, j === 0 ? profDir : undefined));
      for (const x of batch) {
        nodes.push(x);
        all.add(x);
      }
      await until(() => batch.every((x) => x.started || x.failed), 60_000);
      if (batch.some((x) => x.failed)) break;
    }
    const formed = nodes.length === n && (await until(() => nodes.every((x) => x.started && x.complete) || nodes.some((x) => x.failed), 60_000 + 2000 * n));
    if (!formed || nodes.some((x) => x.failed)) {
      const bad = nodes.filter((x) => x.failed || !x.complete);
      out.error = `${bad.length} node(s) did not form: ${bad
        .slice(0, 5)
        .map((x) => `${x.name} ${x.failed ?? `${x.ups.size}/${n - 1} up`}`)
        .join('; ')}`;
      out.stderr = bad[0]?.stderr.slice(-2000);
      return out;
    }
    log(`  N=${n}: formed; settling ${a.settle} s, measuring ${a.window} s`);
    await sleep(a.settle * 1000);
    const downsBefore = nodes.reduce((s, x) => s + x.downs.length, 0);
    const t0 = process.hrtime.bigint();
    const c0 = nodes.map((x) => cpuTicks(x.pid));
    const th0 = nodes.map((x) => threadCounters(x.pid));
    const mm0 = machineTicks();
    await sleep(a.window * 1000);
    const c1 = nodes.map((x) => cpuTicks(x.pid));
    const th1 = nodes.map((x) => threadCounters(x.pid));
    const mm1 = machineTicks();
    const wallS = Number(process.hrtime.bigint() - t0) / 1e9;
    const perNode = nodes.map((_, i) => (c0[i] === undefined || c1[i] === undefined ? undefined : ((c1[i] - c0[i]) / CLK_TCK / wallS) * 100));
    // The profiled node (--cpu-prof) pays for its profiler: leave it out of the figures.
    const measured = (i) => !(profDir && i === 0);
    const vals = perNode.filter((x, i) => x !== undefined && measured(i));
    const threads = nodes.map((x, i) => threadRates(x.pid, th0[i], th1[i], wallS)).filter((_, i) => measured(i));
    const med = (k) =>
      round2(
        pct(
          threads.map((t) => t[k]),
          0.5,
        ) ?? 0,
      );
    const downs = nodes.reduce((s, x) => s + x.downs.length, 0) - downsBefore;
    // Why members went down since the nodes started (formation included; an idle cluster should see none).
    const downReasons = {};
    for (const x of nodes) for (const d of x.downs) downReasons[d.reason] = (downReasons[d.reason] ?? 0) + 1;
    for (const x of nodes) x.send({ cmd: 'stats' });
    await until(() => nodes.every((x) => x.stats || x.exited), 3000);
    const hbDropped = nodes.reduce((s, x) => s + (x.stats?.mesh?.heartbeatPacketsDropped ?? 0), 0);
    const machineBusy = round2((mm1.busy - mm0.busy) / (mm1.total - mm0.total));
    const total = vals.reduce((s, x) => s + x, 0);
    const cores = os.cpus().length;
    Object.assign(out, {
      ok: vals.length === (profDir ? n - 1 : n),
      windowS: round2(wallS),
      cpuPctPerNode: {
        median: round2(pct(vals, 0.5)),
        mean: round2(total / Math.max(1, vals.length)),
        min: round2(Math.min(...vals)),
        max: round2(Math.max(...vals)),
      },
      cpuPctTotal: round2(total),
      machineBusy,
      // The nodes together used (nearly) all of the machine: per-node figures are shares, not
      // costs. (A busy machine alone is not that: other load is reported as machineBusy.)
      saturated: total >= cores * 100 * 0.9,
      // Medians over the nodes: wake-ups per second (voluntary context switches) and CPU % per thread.
      threads: {
        mainWakeupsPerS: med('mainWakeups'),
        mainCpuPct: med('mainCpu'),
        workerWakeupsPerS: med('workerWakeups'),
        workerCpuPct: med('workerCpu'),
        allWakeupsPerS: med('allWakeups'),
      },
      downsDuringWindow: downs,
      downReasons,
      heartbeatPacketsDropped: hbDropped,
      perNode: perNode.map((x) => (x === undefined ? null : round2(x))),
    });
    if (profDir) out.profDir = relative(process.cwd(), profDir);
    return out;
  } finally {
    await Promise.all(nodes.map((x, i) => x.stop(Boolean(profDir) && i === 0)));
    for (const x of nodes) all.delete(x);
  }
}

async function main() {
  const a = parseArgs(process.argv.slice(2));
  const log = (s) => console.log(s);
  const started = new Date();
  const cores = os.cpus().length;
  log(`idle bench: sizes ${a.sizes.join(', ')}, window ${a.window} s, settle ${a.settle} s, ${cores} cores (${os.cpus()[0]?.model ?? '?'})`);
  const runs = [];
  for (const n of a.sizes) {
    const r = await runSize(n, a, log);
    runs.push(r);
    if (!r.ok) log(`  N=${n}: FAILED ${r.error ?? ''}`);
    else {
      const p = r.cpuPctPerNode;
      log(
        `  N=${String(n).padStart(2)}: per node median ${p.median.toFixed(2)}% (mean ${p.mean.toFixed(2)}, max ${p.max.toFixed(2)}) of a core; all nodes ${r.cpuPctTotal.toFixed(1)}% ` +
          `(machine busy ${(r.machineBusy * 100).toFixed(0)}%, busy before ${(r.busyBefore * 100).toFixed(0)}%)${r.saturated ? '  SATURATED' : ''}; downs ${r.downsDuringWindow} ${JSON.stringify(r.downReasons)}`,
      );
      const t = r.threads;
      log(
        `        wake-ups/s per node: main ${t.mainWakeupsPerS} (${t.mainCpuPct}%), heartbeat worker ${t.workerWakeupsPerS} (${t.workerCpuPct}%), all threads ${t.allWakeupsPerS}`,
      );
    }
    await sleep(1000);
  }
  const firstSaturated = runs.find((r) => r.saturated)?.n;
  const solo = runs.find((r) => r.n === 1 && r.ok);
  const ten = runs.find((r) => r.n === 10 && r.ok);
  // Growth per peer from the two smallest measured sizes that did not saturate.
  const fine = runs.filter((r) => r.ok && !r.saturated).sort((x, y) => x.n - y.n);
  const perPeer =
    fine.length >= 2 ? round2((fine[fine.length - 1].cpuPctPerNode.mean - fine[0].cpuPctPerNode.mean) / (fine[fine.length - 1].n - fine[0].n)) : undefined;
  log('');
  log(`per extra peer: ${perPeer === undefined ? '-' : `${perPeer.toFixed(3)}% of a core per node`}`);
  log(
    `saturation: ${firstSaturated === undefined ? `none up to N=${Math.max(...a.sizes)}` : `from N=${firstSaturated} (the nodes need more than ${cores} cores)`}`,
  );
  if (solo) log(`target solo <= ${TARGET.solo}%: ${solo.cpuPctPerNode.median <= TARGET.solo ? 'met' : 'NOT met'} (${solo.cpuPctPerNode.median}%)`);
  if (ten) log(`target N=10 <= ${TARGET.n10}% per node: ${ten.cpuPctPerNode.median <= TARGET.n10 ? 'met' : 'NOT met'} (${ten.cpuPctPerNode.median}%)`);

  const result = {
    bench: 'idle',
    date: started.toISOString(),
    machine: { cpus: cores, cpuModel: os.cpus()[0]?.model, node: process.version, loadAvg1Before: os.loadavg()[0] },
    args: { sizes: a.sizes, windowS: a.window, settleS: a.settle, dist: a.dist, heartbeatIntervalMs: a.heartbeatInterval },
    target: TARGET,
    perPeerPct: perPeer,
    saturatesAt: firstSaturated ?? null,
    runs,
  };
  const file = a.out ?? join(HERE, 'results', `idle-${started.toISOString().replace(/:/g, '-').replace(/\..*$/, '')}.json`);
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(file, `${JSON.stringify(result, null, 2)}\n`);
  log(`results: ${relative(process.cwd(), file)}`);
  process.exitCode = runs.every((r) => r.ok) ? 0 : 1;
}

main().catch((err) => {
  console.error(err);
  killAll();
  process.exit(1);
});
