#!/usr/bin/env node
// Formation benchmark: how fast N Foundation nodes, each on its own lab host (a Linux network
// namespace), find each other with the `gossip` or the `mdns` strategy and form a full mesh.
// See bench/README.md, section "formation".
//
//   node bench/formation.mjs [--sizes 3,10,30] [--strategies gossip,mdns] [--runs 3] [--runs-large 3]
//                            [--timeout 20] [--budget 330] [--out file.json] [--dist DIR] [--verbose] [--events]
//                            [--cpu-prof] [--settle 500]
//
// Needs root (ip netns, iptables) and a build (dist/): `npm run bench:formation` builds first.
// The lab is test/helpers/netns.ts itself, loaded through tsx: every node runs inside a lab
// namespace, nothing is created in (or talks from) the root namespace, and the lab is torn down
// on every way out (finally, plus the harness's exit and signal hooks).
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { StringDecoder } from 'node:string_decoder';
import { fileURLToPath } from 'node:url';
import { tsImport } from 'tsx/esm/api';
import { benchArgs } from './lib/args.mjs';
import { getDist, requireBuilt, resultHeader, round1, setDist } from './lib/coordinator.mjs';

const HERE = dirname(fileURLToPath(import.meta.url));
const ROOT = join(HERE, '..');
const NODE_SCRIPT = join(HERE, 'lib', 'formation-node.mjs');
const STRATEGIES = ['gossip', 'mdns'];
const MESH_PORT = 7400;
const SECRET = 'bench';
/** Sizes from this one up use --runs-large. */
const LARGE = 30;
/**
 * libcluster's Gossip strategy (bitwalker/libcluster, lib/strategy/gossip.ex): one heartbeat at
 * init, then `Process.send_after(self(), :heartbeat, :rand.uniform(5_000))`, i.e. every 1-5000 ms
 * uniformly. A node that missed a peer's first heartbeat learns of it within 5 s, 2.5 s on average.
 * A documented figure: libcluster cannot be run here (no hex.pm), so it is not measured.
 */
const LIBCLUSTER = {
  boundMs: 5000,
  meanMs: 2500,
  source: 'bitwalker/libcluster lib/strategy/gossip.ex: heartbeat at init, then every :rand.uniform(5_000) ms',
  measured: false,
};
const TARGET = { n: 10, ms: 1000 };

// ---- arguments ------------------------------------------------------------------------------

function parseArgs(argv) {
  const a = benchArgs(
    argv,
    'usage: node bench/formation.mjs [--sizes 3,10,30] [--strategies gossip,mdns] [--runs 3] [--runs-large 3] [--timeout 20] [--budget 330] [--out file] [--dist DIR] [--verbose] [--events] [--cpu-prof] [--settle ms]',
    {
      sizes: { type: 'numbers', default: [3, 10, 30] },
      strategies: { type: 'list', default: STRATEGIES },
      runs: { type: 'number', default: 3 },
      'runs-large': { type: 'number', default: 3 },
      timeout: { type: 'number', default: 20 },
      budget: { type: 'number', default: 330 },
      out: { type: 'string' },
      dist: { type: 'string' },
      verbose: { type: 'boolean', default: false, short: 'v' },
      events: { type: 'boolean', default: false },
      'cpu-prof': { type: 'boolean', default: false },
      settle: { type: 'number', default: 500 },
    },
  );
  for (const n of a.sizes) if (!(Number.isInteger(n) && n >= 2 && n <= 100)) throw new Error(`--sizes: each size must be an integer in 2..100, got ${n}`);
  for (const s of a.strategies) if (!STRATEGIES.includes(s)) throw new Error(`--strategies: unknown "${s}" (known: ${STRATEGIES.join(', ')})`);
  for (const [k, x, max] of [
    ['--runs', a.runs, 20],
    ['--runs-large', a.runsLarge, 20],
  ])
    if (!(Number.isInteger(x) && x >= 1 && x <= max)) throw new Error(`${k} must be an integer in 1..${max}`);
  if (!(a.timeout >= 1 && a.timeout <= 120)) throw new Error('--timeout must be in [1, 120] seconds');
  if (!(a.budget >= 10 && a.budget <= 3600)) throw new Error('--budget must be in [10, 3600] seconds');
  if (!(Number.isInteger(a.settle) && a.settle >= 0 && a.settle <= 10_000)) throw new Error('--settle must be an integer in [0, 10000] ms');
  a.sizes = [...new Set(a.sizes)].sort((x, y) => x - y);
  return a;
}

// ---- small helpers --------------------------------------------------------------------------

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const round2 = (x) => Math.round(x * 100) / 100;
const sum = (xs) => xs.reduce((s, x) => s + x, 0);
/** Median (lower middle for an even count, as in bench/mesh.mjs) of the defined values. */
function median(xs) {
  const s = xs.filter((x) => x !== undefined && x !== null && Number.isFinite(x)).sort((x, y) => x - y);
  return s.length ? s[Math.floor((s.length - 1) / 2)] : undefined;
}
/** Nearest-rank percentile (0..1) of the finite values. */
function pct(xs, q) {
  const s = xs.filter((x) => Number.isFinite(x)).sort((x, y) => x - y);
  return s.length ? s[Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1))] : undefined;
}
const spread = (xs) => ({ p50: pct(xs, 0.5), p90: pct(xs, 0.9), max: pct(xs, 1) });
function max(xs) {
  const s = xs.filter((x) => x !== undefined && x !== null && Number.isFinite(x));
  return s.length ? Math.max(...s) : undefined;
}
const fmt = (x, d = 0) => (x === undefined || x === null || !Number.isFinite(x) ? '-' : Number(x).toFixed(d));

/** Resolves when `pred()` is true (checked every 20 ms), false after `ms`. */
async function until(pred, ms) {
  const end = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > end) return false;
    await sleep(20);
  }
  return true;
}

// ---- one node -------------------------------------------------------------------------------

/** A Foundation node (bench/lib/formation-node.mjs) on a lab host, with its event lines parsed. */
class BenchNode {
  constructor(host, n, strategy, keepEvents = false, profDir = undefined) {
    this.host = host;
    this.name = host.name;
    this.expected = n - 1;
    this.ups = new Map(); // peer name -> first 'up' at
    this.current = new Set();
    this.completeAt = undefined;
    this.downs = [];
    this.dials = [];
    this.hsFails = [];
    this.failed = undefined;
    this.keepEvents = keepEvents;
    this.timeline = [];
    const topologies = strategy === 'gossip' ? { lan: { strategy: 'gossip', config: { secret: SECRET } } } : { lan: { strategy: 'mdns' } };
    const opts = { name: host.name, host: '0.0.0.0', advertiseHost: host.ip, port: MESH_PORT, secret: SECRET, topologies };
    const env = { BENCH_EXPECT_PEERS: String(n - 1), ...(getDist() === join(ROOT, 'dist') ? {} : { BENCH_FOUNDATION_DIST: getDist() }) };
    const execArgv = profDir ? ['--cpu-prof', '--cpu-prof-dir', join(profDir, host.name)] : [];
    this.profiled = execArgv.length > 0;
    this.proc = host.spawn([process.execPath, ...execArgv, NODE_SCRIPT, JSON.stringify(opts)], {
      stdin: 'pipe',
      env,
      bufferBytes: 64 * 1024,
      label: `node ${host.name}`,
    });
    this.proc.on('error', () => {});
    this.proc.stdin?.on('error', () => {});
    // Buffers, not setEncoding(): the harness's own output buffer listens to the same stream.
    const decoder = new StringDecoder('utf8');
    let buf = '';
    this.proc.stdout?.on('data', (d) => {
      buf += decoder.write(d);
      for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        let e;
        try {
          e = JSON.parse(line);
        } catch {
          continue;
        }
        this.onEvent(e);
      }
    });
    void this.proc.exited.then(({ code, signal }) => {
      this.exited = true;
      if (!this.failed && !this.killed) this.failed = `exited (code ${code}, signal ${signal})`;
    });
  }

  onEvent(e) {
    switch (e.event) {
      case 'loaded':
        this.processStart = e.processStart;
        this.loadedAt = e.at;
        break;
      case 'started':
        this.startedAt = e.at;
        this.cpuAtStartedMs = (e.cpuUs.user + e.cpuUs.system) / 1000;
        break;
      case 'complete':
        this.cpuAtCompleteMs = (e.cpuUs.user + e.cpuUs.system) / 1000;
        break;
      case 'start-failed':
        this.failed = `start failed: ${e.code ?? ''} ${e.message}`;
        break;
      case 'up': {
        const peer = e.member.name;
        if (!this.ups.has(peer)) this.ups.set(peer, e.at);
        this.current.add(peer);
        if (this.completeAt === undefined && this.current.size >= this.expected) this.completeAt = e.at;
        break;
      }
      case 'down':
        this.current.delete(e.member.name);
        this.downs.push({ at: e.at, peer: e.member.name, reason: e.reason });
        if (this.current.size < this.expected) this.completeAt = undefined;
        break;
      case 'dial':
        this.dials.push(e);
        break;
      case 'hs-fail':
        this.hsFails.push(e.reason);
        break;
      case 'stats':
        this.stats = e;
        break;
      default:
        return;
    }
    if (this.keepEvents && e.event !== 'stats') this.timeline.push(e);
  }

  /** The event timeline kept with --events, times relative to `origin`. */
  events(origin) {
    return this.timeline.map(({ at, event, member, peer, ms, ok, reason }) => {
      const o = { t: at - origin, event };
      if (member) o.peer = member.name;
      if (peer) o.peer = peer;
      if (ms !== undefined) o.ms = ms;
      if (ok !== undefined) o.ok = ok;
      if (reason) o.reason = reason;
      return o;
    });
  }

  send(cmd) {
    try {
      this.proc.stdin?.write(`${JSON.stringify(cmd)}\n`);
    } catch {}
  }

  kill() {
    this.killed = true;
    if (this.proc.exitCode === null && this.proc.signalCode === null) this.proc.kill('SIGKILL');
  }
}

// ---- one run --------------------------------------------------------------------------------

// Kernel counters of each lab host (/proc/net/{snmp,netstat} read inside its namespace), as
// deltas over one run summed over the hosts: TCP connect attempts, SYN retransmissions, accept
// queue overflows, UDP receive-buffer drops. The lab is reused between runs, hence the deltas.
const NET_COUNTERS = [
  'Tcp.ActiveOpens',
  'Tcp.PassiveOpens',
  'Tcp.AttemptFails',
  'Tcp.EstabResets',
  'Tcp.RetransSegs',
  'Tcp.OutRsts',
  'TcpExt.ListenOverflows',
  'TcpExt.ListenDrops',
  'TcpExt.TCPSynRetrans',
  'TcpExt.TCPTimeouts',
  'TcpExt.TCPBacklogDrop',
  'Udp.InDatagrams',
  'Udp.OutDatagrams',
  'Udp.RcvbufErrors',
  'Udp.InErrors',
  'Udp.NoPorts',
];
async function readNetCounters(hosts) {
  return Promise.all(
    hosts.map(async (h) => {
      const r = await h.exec(['cat', '/proc/net/snmp', '/proc/net/netstat'], { timeoutMs: 10_000 });
      const m = {};
      const lines = r.stdout.split('\n');
      for (let i = 0; i + 1 < lines.length; i++) {
        const head = lines[i].split(/\s+/);
        const vals = lines[i + 1].split(/\s+/);
        if (head[0] !== vals[0] || !head[0]?.endsWith(':') || Number.isNaN(Number(vals[1]))) continue;
        const prefix = head[0].slice(0, -1);
        for (let j = 1; j < head.length; j++) m[`${prefix}.${head[j]}`] = Number(vals[j]);
        i++;
      }
      return m;
    }),
  );
}
function netDelta(before, after) {
  const out = {};
  for (const k of NET_COUNTERS) {
    let total = 0;
    for (let i = 0; i < after.length; i++) total += (after[i]?.[k] ?? 0) - (before?.[i]?.[k] ?? 0);
    out[k] = total;
  }
  return out;
}

/** Share (0..1) of the machine's CPU time that was busy during `ms`, from /proc/stat: the outside load just before a run. */
async function machineBusy(ms = 500) {
  const read = () => {
    const f = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
    const idle = (f[3] ?? 0) + (f[4] ?? 0);
    return { idle, total: f.reduce((x, y) => x + y, 0) };
  };
  try {
    const a = read();
    await sleep(ms);
    const b = read();
    return b.total > a.total ? round2(1 - (b.idle - a.idle) / (b.total - a.total)) : undefined;
  } catch {
    return undefined;
  }
}

async function runOnce(lab, strategy, n, a, log) {
  const hosts = lab.hosts.slice(0, n);
  const netBefore = await readNetCounters(hosts);
  // Nothing of this bench runs now: what is busy is someone else.
  const busyBefore = await machineBusy();
  const loadAvg1 = round1(os.loadavg()[0]);
  const spawnAt = Date.now();
  const t0 = performance.now();
  // All at once: the nodes start concurrently, as a deploy would start them.
  const profDir = a.cpuProf ? join(HERE, 'results', 'prof', `formation-${strategy}-n${n}-${Date.now()}`) : undefined;
  // Profiling slows a process down: only the first and the last node are profiled.
  const nodes = hosts.map((h, i) => new BenchNode(h, n, strategy, a.events, i === 0 || i === n - 1 ? profDir : undefined));
  if (profDir) log(`    cpu profiles of h0 and h${n - 1}: ${relative(process.cwd(), profDir)}/`);
  const out = { strategy, n, ok: false, busyBefore, loadAvg1 };
  try {
    const startTimeoutMs = 15_000 + 500 * n;
    const allStarted = await until(() => nodes.every((x) => x.startedAt !== undefined) || nodes.some((x) => x.failed), startTimeoutMs);
    const bad = nodes.filter((x) => x.failed);
    if (bad.length || !allStarted) {
      const which = bad.length ? bad : nodes.filter((x) => x.startedAt === undefined);
      out.error = `${which.length} node(s) did not start within ${startTimeoutMs} ms: ${which.map((x) => `${x.name} ${x.failed ?? 'no started event'}`).join('; ')}`;
      out.output = which.slice(0, 2).map((x) => x.proc.output().slice(-3000));
      return out;
    }
    const lastStartedAt = max(nodes.map((x) => x.startedAt));
    const formed = await until(
      () => nodes.every((x) => x.completeAt !== undefined) || nodes.some((x) => x.failed),
      Math.max(0, lastStartedAt + a.timeout * 1000 - Date.now()),
    );
    const formedAt = formed && !nodes.some((x) => x.failed) ? max(nodes.map((x) => x.completeAt)) : undefined;
    // After the full mesh: keep watching for 'down' events (a node still missing a member at the
    // end fails the run; every down is counted), and let the steady-state CPU (heartbeats,
    // periodic discovery) show over a known window.
    if (formedAt !== undefined) await sleep(a.settle);
    // Diagnostics from every node, then the verdict.
    for (const x of nodes) x.send({ cmd: 'stats' });
    await until(() => nodes.every((x) => x.stats || x.exited), 3000);

    const firstStartedAt = Math.min(...nodes.map((x) => x.startedAt));
    out.ok = formedAt !== undefined && nodes.every((x) => x.completeAt !== undefined);
    out.spawnAt = spawnAt;
    out.fromLastStartedMs = formedAt !== undefined ? formedAt - lastStartedAt : undefined;
    out.fromFirstSpawnMs = formedAt !== undefined ? formedAt - spawnAt : undefined;
    out.fromFirstStartedMs = formedAt !== undefined ? formedAt - firstStartedAt : undefined;
    out.startSpreadMs = lastStartedAt - firstStartedAt;
    out.lastStartedAfterSpawnMs = lastStartedAt - spawnAt;
    if (!out.ok) {
      const missing = nodes
        .filter((x) => x.completeAt === undefined)
        .map((x) => ({
          node: x.name,
          up: x.current.size,
          missing: hosts
            .map((h) => h.name)
            .filter((m) => m !== x.name && !x.current.has(m))
            .slice(0, 8),
        }));
      out.error = nodes.some((x) => x.failed)
        ? `a node failed: ${nodes
            .filter((x) => x.failed)
            .map((x) => `${x.name} ${x.failed}`)
            .join('; ')}`
        : `no full mesh within ${a.timeout} s of the last start: ${missing.length} node(s) incomplete`;
      out.incomplete = missing.slice(0, 10);
      out.output = nodes
        .filter((x) => x.completeAt === undefined)
        .slice(0, 1)
        .map((x) => x.proc.output().slice(-3000));
    }
    out.diagnostics = diagnostics(nodes, spawnAt, formedAt);
    const net = netDelta(netBefore, await readNetCounters(hosts));
    out.diagnostics.kernel = net;
    out.diagnostics.tcpConnectsPerPair = round2(net['Tcp.ActiveOpens'] / ((n * (n - 1)) / 2));
    if (a.events) out.events = Object.fromEntries(nodes.map((x) => [x.name, x.events(spawnAt)]));
    out.elapsedSec = round1((performance.now() - t0) / 1000);
    return out;
  } finally {
    if (profDir) {
      // A clean exit writes the .cpuprofile files; SIGKILL after 5 s regardless.
      const profiled = nodes.filter((x) => x.profiled);
      for (const x of profiled) x.send({ cmd: 'exit' });
      await Promise.race([Promise.all(profiled.map((x) => x.proc.exited)), sleep(5000)]);
    }
    for (const x of nodes) x.kill();
    await Promise.race([Promise.all(nodes.map((x) => x.proc.exited)), sleep(5000)]);
    // Next run starts from cold neighbour caches, as a fresh deploy would.
    await Promise.all(hosts.map((h) => h.exec(['ip', 'neigh', 'flush', 'all'], { timeoutMs: 5000 })));
    if (a.verbose) log(`    run done in ${round1((performance.now() - t0) / 1000)} s`);
  }
}

/** Where the time and the work went, aggregated over the nodes of one run. */
function diagnostics(nodes, spawnAt, formedAt) {
  const d = {};
  const startedAt = new Map(nodes.map((x) => [x.name, x.startedAt]));
  // Discovery vs connection, per ordered pair (a dials b because its strategy reported b):
  //   discovery lag = a's first dial to b started - the later of a's and b's 'started'
  //   connect       = duration of that first dial (TCP connect + handshake; a lost tie-break included)
  //   dial -> up    = a sees b up - a's first dial to b started (whichever link made it)
  const nameOf = new Map(nodes.map((x) => [`${x.host.ip}:${MESH_PORT}`, x.name]));
  const lag = [];
  const connect = [];
  const toUp = [];
  for (const x of nodes) {
    const first = new Map();
    for (const e of x.dials) {
      const peer = nameOf.get(e.peer);
      if (!peer || first.has(peer)) continue;
      first.set(peer, e.at - e.ms);
      lag.push(e.at - e.ms - Math.max(x.startedAt, startedAt.get(peer)));
      connect.push(e.ms);
    }
    for (const [peer, at] of first) if (x.ups.has(peer)) toUp.push(x.ups.get(peer) - at);
  }
  d.discoveryLagMs = spread(lag);
  d.firstDialMs = spread(connect);
  d.dialToUpMs = spread(toUp);
  // Share of the machine the nodes used between the first spawn and the full mesh (each node's
  // CPU counted up to its own completion): near 1 means the run was CPU-bound.
  if (formedAt !== undefined) {
    const cpuMs = sum(nodes.map((x) => x.cpuAtCompleteMs ?? 0));
    d.cpuShareOfMachine = round2(cpuMs / ((formedAt - spawnAt) * os.cpus().length));
  }
  // Per ordered pair (a sees b up): time after the later of the two had started.
  const pairs = [];
  for (const x of nodes) for (const [peer, at] of x.ups) if (startedAt.has(peer)) pairs.push(at - Math.max(x.startedAt, startedAt.get(peer)));
  d.pairUpAfterBothStartedMs = {
    median: median(pairs),
    max: max(pairs),
    upBeforeOwnStarted: nodes.reduce((s, x) => s + [...x.ups.values()].filter((at) => at < x.startedAt).length, 0),
  };
  d.processStartAfterSpawnMs = { median: median(nodes.map((x) => x.processStart - spawnAt)), max: max(nodes.map((x) => x.processStart - spawnAt)) };
  d.moduleLoadMs = { median: median(nodes.map((x) => x.loadedAt - x.processStart)), max: max(nodes.map((x) => x.loadedAt - x.processStart)) };
  d.foundationStartMs = { median: median(nodes.map((x) => x.startedAt - x.loadedAt)), max: max(nodes.map((x) => x.startedAt - x.loadedAt)) };
  d.cpuMsAtStarted = { median: round1(median(nodes.map((x) => x.cpuAtStartedMs))), total: round1(sum(nodes.map((x) => x.cpuAtStartedMs ?? 0))) };
  const st = nodes.map((x) => x.stats).filter(Boolean);
  const cpu = st.map((s) => (s.cpuUs.user + s.cpuUs.system) / 1000);
  d.cpuMsAtEnd = { median: round1(median(cpu)), total: round1(sum(cpu)) };
  // CPU a node spent between its own 'started' and seeing everyone up: the formation work.
  const forming = nodes.filter((x) => x.cpuAtCompleteMs !== undefined).map((x) => x.cpuAtCompleteMs - x.cpuAtStartedMs);
  d.cpuMsStartedToComplete = { median: round1(median(forming)), max: round1(max(forming)), total: round1(sum(forming)) };
  // After completion (settle window + stats): heartbeats and periodic discovery only, as % of one core.
  const steady = nodes
    .filter((x) => x.stats && x.cpuAtCompleteMs !== undefined && x.stats.at > x.completeAt)
    .map((x) => (((x.stats.cpuUs.user + x.stats.cpuUs.system) / 1000 - x.cpuAtCompleteMs) / (x.stats.at - x.completeAt)) * 100);
  d.cpuPercentAfterComplete = { median: round1(median(steady)), total: round1(sum(steady)) };
  d.statsFrom = st.length;
  const dialMs = nodes.flatMap((x) => x.dials.map((e) => e.ms));
  d.discoveryDials = {
    total: dialMs.length,
    failed: sum(nodes.map((x) => x.dials.filter((e) => !e.ok).length)),
    medianMs: median(dialMs),
    maxMs: max(dialMs),
    errors: topCounts(nodes.flatMap((x) => x.dials.filter((e) => !e.ok).map((e) => String(e.error ?? '').replace(/\d+\.\d+\.\d+\.\d+(:\d+)?/g, '<addr>')))),
  };
  const logCount = (key) => sum(st.map((s) => s.logCounts?.[key] ?? 0));
  d.links = {
    ideal: nodes.length * (nodes.length - 1),
    opened: sum(st.map((s) => s.mesh.linksOpened)),
    closed: sum(st.map((s) => s.mesh.linksClosed)),
    tieBreakLosses: logCount('debug: handshake ended: link not needed'),
    transitiveConnectFailed: logCount('debug: transitive connect failed'),
  };
  d.handshakeFailures = {};
  for (const s of st) for (const [k, v] of Object.entries(s.mesh.handshakeFailures ?? {})) d.handshakeFailures[k] = (d.handshakeFailures[k] ?? 0) + v;
  d.controlMessagesSent = sum(st.map((s) => s.mesh.lanes?.control?.messagesSent ?? 0));
  d.downs = nodes.reduce((s, x) => s + x.downs.length, 0);
  d.downReasons = topCounts(nodes.flatMap((x) => x.downs.map((e) => e.reason)));
  d.loopLagMaxMs = max(st.map((s) => s.health?.loopLag?.maxMs));
  d.loopLagP99MsMedian = median(st.map((s) => s.health?.loopLag?.p99Ms));
  // Strategy packet counters, summed over the nodes (numbers only; nested objects flattened one level).
  const strat = {};
  for (const s of st) {
    for (const t of s.strategy ?? []) {
      for (const [k, v] of Object.entries(t.stats ?? {})) {
        if (typeof v === 'number') strat[k] = (strat[k] ?? 0) + v;
        else if (v && typeof v === 'object')
          for (const [k2, v2] of Object.entries(v)) if (typeof v2 === 'number' && v2) strat[`${k}.${k2}`] = (strat[`${k}.${k2}`] ?? 0) + v2;
      }
    }
  }
  d.strategyCounters = strat;
  const warns = {};
  for (const s of st) for (const [k, v] of Object.entries(s.logCounts ?? {})) if (k.startsWith('warn') || k.startsWith('error')) warns[k] = (warns[k] ?? 0) + v;
  d.warnings = warns;
  return d;
}

function topCounts(xs) {
  const m = {};
  for (const x of xs) m[x] = (m[x] ?? 0) + 1;
  return Object.fromEntries(
    Object.entries(m)
      .sort((p, q) => q[1] - p[1])
      .slice(0, 6),
  );
}

// ---- summary and report ---------------------------------------------------------------------

function summarize(runs, strategy, n) {
  const rs = runs.filter((r) => r.strategy === strategy && r.n === n);
  const ok = rs.filter((r) => r.ok);
  const pick = (f) => ok.map(f);
  const s = {
    strategy,
    n,
    runs: rs.length,
    formed: ok.length,
    fromLastStartedMs: {
      samples: pick((r) => r.fromLastStartedMs),
      median: median(pick((r) => r.fromLastStartedMs)),
      max: max(pick((r) => r.fromLastStartedMs)),
    },
    fromFirstSpawnMs: { samples: pick((r) => r.fromFirstSpawnMs), median: median(pick((r) => r.fromFirstSpawnMs)), max: max(pick((r) => r.fromFirstSpawnMs)) },
    startSpreadMsMedian: median(rs.map((r) => r.startSpreadMs)),
    lastStartedAfterSpawnMsMedian: median(rs.map((r) => r.lastStartedAfterSpawnMs)),
    pairUpMsMedian: median(ok.map((r) => r.diagnostics?.pairUpAfterBothStartedMs?.median)),
    discoveryLagMs: { p50Median: median(rs.map((r) => r.diagnostics?.discoveryLagMs?.p50)), max: max(rs.map((r) => r.diagnostics?.discoveryLagMs?.max)) },
    firstDialMs: { p50Median: median(rs.map((r) => r.diagnostics?.firstDialMs?.p50)), max: max(rs.map((r) => r.diagnostics?.firstDialMs?.max)) },
    dialToUpMsMax: max(rs.map((r) => r.diagnostics?.dialToUpMs?.max)),
    tcpConnectsPerPairMedian: median(rs.map((r) => r.diagnostics?.tcpConnectsPerPair)),
    tieBreakLossesMedian: median(rs.map((r) => r.diagnostics?.links?.tieBreakLosses)),
    handshakeTimeouts: sum(rs.map((r) => r.diagnostics?.handshakeFailures?.timeout ?? 0)),
    cpuShareMedian: median(ok.map((r) => r.diagnostics?.cpuShareOfMachine)),
    cpuMsPerNodeAtStartedMedian: median(rs.map((r) => r.diagnostics?.cpuMsAtStarted?.median)),
    cpuMsPerNodeFormingMedian: median(rs.map((r) => r.diagnostics?.cpuMsStartedToComplete?.median)),
    downs: sum(rs.map((r) => r.diagnostics?.downs ?? 0)),
    busyBefore: rs.map((r) => r.busyBefore),
  };
  const m = s.fromLastStartedMs.median;
  s.vsLibcluster =
    m === undefined
      ? undefined
      : {
          ofBound: round2(m / LIBCLUSTER.boundMs),
          ofMean: round2(m / LIBCLUSTER.meanMs),
          speedupVsBound: m > 0 ? round1(LIBCLUSTER.boundMs / m) : undefined,
          speedupVsMean: m > 0 ? round1(LIBCLUSTER.meanMs / m) : undefined,
        };
  return s;
}

function table(title, header, rows) {
  const widths = header.map((h, i) => Math.max(String(h).length, ...rows.map((r) => String(r[i] ?? '').length)));
  const line = (cells) => cells.map((c, i) => (i === 0 ? String(c ?? '').padEnd(widths[i]) : String(c ?? '').padStart(widths[i]))).join('  ');
  return [`\n${title}`, line(header), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)].join('\n');
}

function report(r) {
  const parts = [];
  parts.push(
    table(
      'Formation: time to a full mesh (every node has seen all N-1 others up), ms; median / max over the formed runs',
      [
        'strategy',
        'N',
        'formed',
        'from last start med',
        'max',
        'from first spawn med',
        'max',
        'start spread med',
        'x libcluster mean (2.5 s)',
        'x bound (5 s)',
        'samples (from last start)',
      ],
      r.summary.map((s) => [
        s.strategy,
        s.n,
        `${s.formed}/${s.runs}`,
        fmt(s.fromLastStartedMs.median),
        fmt(s.fromLastStartedMs.max),
        fmt(s.fromFirstSpawnMs.median),
        fmt(s.fromFirstSpawnMs.max),
        fmt(s.startSpreadMsMedian),
        s.vsLibcluster ? `${fmt(s.vsLibcluster.ofMean, 2)} (${fmt(s.vsLibcluster.speedupVsMean, 1)}x faster)` : '-',
        s.vsLibcluster ? `${fmt(s.vsLibcluster.ofBound, 2)}` : '-',
        s.fromLastStartedMs.samples.join(' '),
      ]),
    ),
  );
  parts.push(
    table(
      'Where the time went: ms (p50 = median over runs of the per-run p50; max = over all runs)',
      [
        'strategy',
        'N',
        'spawn -> last started',
        'discovery lag p50/max',
        'first dial p50/max',
        'dial -> up max',
        'TCP connects per pair',
        'tie-break losses',
        'hs timeouts',
        'CPU ms/node start / forming',
        'CPU share',
        'downs',
        'machine busy before each run',
      ],
      r.summary.map((s) => [
        s.strategy,
        s.n,
        fmt(s.lastStartedAfterSpawnMsMedian),
        `${fmt(s.discoveryLagMs.p50Median)} / ${fmt(s.discoveryLagMs.max)}`,
        `${fmt(s.firstDialMs.p50Median)} / ${fmt(s.firstDialMs.max)}`,
        fmt(s.dialToUpMsMax),
        fmt(s.tcpConnectsPerPairMedian, 2),
        fmt(s.tieBreakLossesMedian),
        s.handshakeTimeouts,
        `${fmt(s.cpuMsPerNodeAtStartedMedian)} / ${fmt(s.cpuMsPerNodeFormingMedian)}`,
        fmt(s.cpuShareMedian, 2),
        s.downs,
        s.busyBefore.map((x) => (x === undefined ? '-' : `${Math.round(x * 100)}%`)).join(' '),
      ]),
    ),
    '  discovery lag: strategy report -> first dial, after both nodes started; first dial: TCP connect + handshake of that dial;\n' +
      '  CPU share: CPU of all nodes / (cores x wall) from first spawn to full mesh (near 1 = CPU-bound); machine busy: CPU used by\n' +
      '  others in the 0.5 s before the run (/proc/stat); details per run in the JSON.',
  );
  parts.push(
    `\nReference (documented, NOT measured in this run): libcluster Gossip heartbeats every :rand.uniform(5_000) ms,` +
      `\nso a node learns a peer whose first heartbeat it missed within 5 s (2.5 s on average). Source: ${LIBCLUSTER.source}.` +
      '\n"x libcluster" = our median from the last start / that figure (below 1 = faster).',
  );
  if (r.targets.length)
    parts.push(
      table(
        'Targets',
        ['target', 'measured', 'result'],
        r.targets.map((t) => [t.name, t.measured, t.pass ? 'PASS' : 'MISS']),
      ),
    );
  const failed = r.runs.filter((x) => !x.ok);
  if (failed.length) parts.push(`\nFailed runs:\n${failed.map((x) => `  ${x.strategy} N=${x.n} run ${x.run}: ${x.error}`).join('\n')}`);
  if (r.skipped.length)
    parts.push(`\nSkipped (time budget ${r.config.budgetSec} s): ${r.skipped.map((x) => `${x.strategy} N=${x.n} run ${x.run}`).join(', ')}`);
  return parts.join('\n');
}

function targets(r) {
  const out = [];
  for (const s of r.summary.filter((x) => x.n === TARGET.n)) {
    const worst = s.formed === s.runs ? s.fromLastStartedMs.max : undefined;
    out.push({
      name: `${s.strategy}: full mesh of ${TARGET.n} <= ${TARGET.ms} ms after the last start (every run)`,
      measured: worst === undefined ? `${s.formed}/${s.runs} runs formed` : `max ${worst} ms, median ${s.fromLastStartedMs.median} ms`,
      pass: worst !== undefined && worst <= TARGET.ms,
    });
  }
  return out;
}

// ---- main -----------------------------------------------------------------------------------

async function main() {
  const a = parseArgs(process.argv.slice(2));
  if (a.dist) setDist(resolve(a.dist));
  requireBuilt('bench:formation');
  // The nodes get this process's environment (the harness adds to it): FOUNDATION_* variables
  // of the caller would configure the benchmarked nodes, so they go.
  for (const k of Object.keys(process.env)) if (k.startsWith('FOUNDATION_')) delete process.env[k];

  const netns = await tsImport('../test/helpers/netns.ts', import.meta.url);
  const avail = netns.netnsAvailable();
  if (!avail.ok) {
    console.error(`network namespaces are not usable here: ${avail.why}`);
    process.exit(2);
  }

  const t0 = performance.now();
  const log = (s) => console.error(`[formation ${((performance.now() - t0) / 1000).toFixed(1)}s] ${s}`);
  // Hard stop, whatever hangs: process.exit runs the harness's 'exit' hook, which tears the lab down.
  const watchdog = setTimeout(
    () => {
      console.error(`formation bench: still running ${a.budget + 180} s after start; aborting (the lab is torn down on exit)`);
      process.exit(1);
    },
    (a.budget + 180) * 1000,
  );
  watchdog.unref();

  const started = new Date();
  const result = {
    ...resultHeader('formation', started),
    config: {
      sizes: a.sizes,
      strategies: a.strategies,
      runs: a.runs,
      runsLarge: a.runsLarge,
      largeFrom: LARGE,
      timeoutSec: a.timeout,
      budgetSec: a.budget,
      settleMs: a.settle,
      meshPort: MESH_PORT,
      nodeOptions: {
        name: 'h<i>',
        host: '0.0.0.0',
        advertiseHost: '<lab host ip>',
        port: MESH_PORT,
        secret: SECRET,
        gossip: { lan: { strategy: 'gossip', config: { secret: SECRET } } },
        mdns: { lan: { strategy: 'mdns' } },
      },
      dist: relative(ROOT, getDist()) || getDist(),
    },
    reference: { libclusterGossip: LIBCLUSTER, target: TARGET },
    runs: [],
    skipped: [],
  };
  log(`host: ${result.host.cpus} CPUs, node ${process.version}, load ${result.host.loadAvgAtStart.join(' ')}`);

  const maxN = Math.max(...a.sizes);
  log(`creating a lab of ${maxN} hosts (+ the bridge namespace)`);
  const lab = await netns.createHosts(maxN, { prefix: 'fdnb-' });
  try {
    result.lab = { subnet: lab.subnet, hosts: maxN, createdInSec: round1((performance.now() - t0) / 1000) };
    log(`lab ${lab.runid} ready: ${lab.subnet}`);
    // Run order: by size; within a size, the strategies alternate run by run, so a burst of
    // outside load does not land on one strategy only. The largest size comes last and is the
    // one cut short when the time budget runs out.
    const runTime = new Map();
    for (const n of a.sizes) {
      const runs = n >= LARGE ? a.runsLarge : a.runs;
      for (let run = 1; run <= runs; run++) {
        for (const strategy of a.strategies) {
          const key = `${strategy}/${n}`;
          const estimate = runTime.get(key) ?? 2 + n * 0.5;
          const elapsed = (performance.now() - t0) / 1000;
          if (elapsed + estimate > a.budget) {
            result.skipped.push({ strategy, n, run });
            log(`skip ${strategy} N=${n} run ${run}: ${round1(elapsed)} s + ~${round1(estimate)} s would pass the ${a.budget} s budget`);
            continue;
          }
          const rs = performance.now();
          let r;
          try {
            r = await runOnce(lab, strategy, n, a, log);
          } catch (err) {
            r = { strategy, n, ok: false, error: String(err?.stack ?? err) };
          }
          r.run = run;
          runTime.set(key, Math.max(runTime.get(key) ?? 0, (performance.now() - rs) / 1000));
          result.runs.push(r);
          if (r.ok) {
            const dg = r.diagnostics;
            log(
              `${strategy.padEnd(6)} N=${String(n).padStart(2)} run ${run}: full mesh ${r.fromLastStartedMs} ms after the last start, ${r.fromFirstSpawnMs} ms after the first spawn` +
                ` (start spread ${r.startSpreadMs} ms; dials ${dg.discoveryDials.total}/${dg.discoveryDials.failed} failed, max ${dg.discoveryDials.maxMs} ms; tie-break losses ${dg.links.tieBreakLosses}; downs ${dg.downs})`,
            );
          } else {
            process.exitCode = 1;
            log(`${strategy.padEnd(6)} N=${String(n).padStart(2)} run ${run}: FAILED: ${r.error}`);
            if (a.verbose && r.output) for (const o of r.output) console.error(o);
          }
          await sleep(300);
        }
      }
    }
  } finally {
    log('tearing the lab down');
    await lab.teardown();
  }

  result.summary = [];
  for (const n of a.sizes) for (const strategy of a.strategies) result.summary.push(summarize(result.runs, strategy, n));
  result.host.loadAvgAtEnd = os.loadavg().map(round1);
  result.elapsedSec = round1((performance.now() - t0) / 1000);
  result.targets = targets(result);
  console.log(report(result));
  console.log(
    `\nhost: ${result.host.cpus} x ${result.host.cpuModel}, ${result.host.node}; load avg ${result.host.loadAvgAtStart.join('/')} -> ${result.host.loadAvgAtEnd.join('/')}; ${result.elapsedSec}s`,
  );
  const file = a.out ?? join(HERE, 'results', `formation-${started.toISOString().replace(/:/g, '-').replace(/\..*$/, '')}.json`);
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(file, `${JSON.stringify(result, null, 2)}\n`);
  console.log(`results: ${relative(process.cwd(), file)}`);
  clearTimeout(watchdog);
}

main().catch((err) => {
  console.error(err?.stack ?? err);
  // The harness's 'exit' hook tears down a lab that is still up.
  process.exit(1);
});
