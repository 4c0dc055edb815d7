// Singleton failover on 3 node processes on 127.0.0.1, the failover section of bench/registry.mjs.
// Each node is test/helpers/processes-proc.mjs (the script the multi-process tests drive: JSON
// commands on stdin, JSON events stamped with Date.now() on stdout), so the bench measures exactly
// what the tests assert. Each scenario forms one 3-node cluster; after each repetition the killed
// node comes back as a new incarnation (same name, new port), joins, declares the singleton again,
// and (quorum) sits out its one-lease quarantine before the next kill, so every repetition starts
// from 3 live voters. That is a long-lived cluster with tombstones of earlier incarnations, as in
// production, and it costs one node start per repetition instead of three (a node start is
// ~0.4 s of CPU; the machine is shared). `fresh: true` (--fresh) forms a new cluster instead.
//
// Scenarios (issue 9, "singleton failover after kill -9 and after SIGSTOP"):
// - 'available' singleton, kill -9 of its host: kill -> first `down` on a survivor (detection),
//   kill -> `started` on a survivor, and down -> started;
// - 'available' singleton, SIGSTOP of its host: the same three figures (detection is the failure
//   detector's, ~2 s by default; the target is down -> started <= 1 s);
// - 'quorum' singleton (clusterSize 3), kill -9 of its holder, with leaseMs 1000 and the default
//   2000: kill -> started, and the fencing tokens before and after (they must increase).
// All times are Date.now() of the coordinator (the kill) and of the node (its events): one clock,
// one machine, 1 ms resolution.
import { spawn } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = dirname(fileURLToPath(import.meta.url));
const PROC = join(HERE, '..', '..', 'test', 'helpers', 'processes-proc.mjs');
const SECRET = 'bench-failover-secret-0123456789abcdef';
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Published references (MISSION.md, "Bars"). */
export const AKKA_SINGLETON_FAILOVER_MS = [25_000, 45_000];
export const HORDE_SYNC_AFTER_DETECTION_MS = 300;

/** One node process: its stdout events, and waiters on them. */
class Proc {
  constructor(child, label) {
    this.child = child;
    this.label = label;
    this.events = [];
    this.waiters = [];
    this.stderr = '';
    this.exited = false;
    let buf = '';
    child.stdout.setEncoding('utf8').on('data', (d) => {
      buf += d;
      for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        let ev;
        try {
          ev = JSON.parse(line);
        } catch {
          continue;
        }
        this.events.push(ev);
        this.waiters = this.waiters.filter((w) => {
          if (!w.pred(ev)) return true;
          w.resolve(ev);
          return false;
        });
      }
    });
    child.stderr.setEncoding('utf8').on('data', (d) => {
      this.stderr = (this.stderr + d).slice(-4000);
    });
    child.on('exit', () => {
      this.exited = true;
    });
  }

  /** The first event (already seen, or from index `from` on) matching `pred`. */
  waitFor(pred, timeoutMs, what, from = 0) {
    const seen = this.events.slice(from).find(pred);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w.resolve !== done);
        reject(new Error(`${this.label}: no ${what} within ${timeoutMs} ms; stderr: ${this.stderr.slice(-500)}`));
      }, timeoutMs);
      const done = (e) => {
        clearTimeout(timer);
        resolve(e);
      };
      this.waiters.push({ pred, resolve: done });
    });
  }

  waitForNext(pred, timeoutMs, what) {
    return this.waitFor(pred, timeoutMs, what, this.events.length);
  }

  send(cmd) {
    if (!this.exited) this.child.stdin.write(`${JSON.stringify(cmd)}\n`);
  }

  async ask(cmd, event, timeoutMs = 10_000) {
    const next = this.waitForNext((e) => e.event === event || e.event === 'command-error', timeoutMs, event);
    this.send(cmd);
    const e = await next;
    if (e.event === 'command-error') throw new Error(`${this.label}: ${cmd.cmd} failed: ${e.message}`);
    return e;
  }

  kill(signal) {
    if (!this.exited) this.child.kill(signal);
  }
}

const live = new Set();
function killAll() {
  for (const p of live) {
    p.kill('SIGCONT');
    p.kill('SIGKILL');
  }
}
process.on('exit', killAll);

async function stopAll(procs) {
  killAll();
  await Promise.all(procs.map((p) => (p.exited ? undefined : new Promise((r) => p.child.once('exit', r)))));
  for (const p of procs) live.delete(p);
}

async function spawnNode(name, clusterName, hosts) {
  const opts = { name, clusterName, secret: SECRET, host: '127.0.0.1', ...(hosts.length ? { cluster: { strategy: 'static', hosts } } : {}) };
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('FOUNDATION_')));
  const child = spawn(process.execPath, [PROC, JSON.stringify(opts)], { stdio: ['pipe', 'pipe', 'pipe'], env: { ...env, FOUNDATION_LOG_LEVEL: 'error' } });
  const proc = new Proc(child, name);
  live.add(proc);
  const started = await proc.waitFor((e) => e.event === 'started', 20_000, 'start');
  proc.address = started.id.address;
  return { proc, address: proc.address };
}

const isUp = (name) => (e) => e.event === 'up' && e.member.name === name;
const isDown = (name) => (e) => e.event === 'down' && e.member.name === name;
const startedEvent = (name) => (e) => e.event === 'proc' && e.e.type === 'started' && e.e.name === name;

/** n1, then n2 and n3 together (dialling n1); resolves once every node has seen both others up. */
async function cluster3(clusterName) {
  const first = await spawnNode('n1', clusterName, []);
  const rest = await Promise.all(['n2', 'n3'].map((n) => spawnNode(n, clusterName, [first.address])));
  const procs = [first.proc, ...rest.map((r) => r.proc)];
  for (const p of procs) for (const q of procs) if (p !== q) await p.waitFor(isUp(q.label), 15_000, `${q.label} up`);
  return procs;
}

const running = async (p) => (await p.ask({ cmd: 'running' }, 'running')).local;

/** The one node running `name` (waits until exactly one does). */
async function singletonHost(procs, name) {
  const deadline = Date.now() + 15_000;
  for (;;) {
    const hosts = [];
    for (const p of procs) if ((await running(p)).includes(name)) hosts.push(p);
    if (hosts.length === 1) return hosts[0];
    if (Date.now() > deadline) throw new Error(`${name} runs on ${hosts.length} nodes`);
    await sleep(100);
  }
}

/** The singleton's declaration, as processes-proc.mjs takes it. */
const declaration = ({ consistency, leaseMs }) => ({
  cmd: 'singleton',
  name: consistency === 'quorum' ? 'ledger' : 'sched',
  ...(consistency === 'quorum' ? { consistency, clusterSize: 3, ...(leaseMs ? { leaseMs } : {}) } : {}),
});

/** A fresh 3-node cluster with the singleton declared on every node. */
async function formCluster(clusterName, sc) {
  const procs = await cluster3(clusterName);
  await Promise.all(procs.map((p) => p.ask(declaration(sc), 'declared')));
  // A new incarnation of a quorum voter sits out one lease before it votes (quarantine).
  return { procs, clusterName, readyAt: Date.now() + (sc.consistency === 'quorum' ? (sc.leaseMs ?? 2000) + 200 : 0) };
}

/** Starts a new incarnation of the killed node (same name, new port), dialling the survivors, and declares the singleton on it. */
async function rejoin({ procs, clusterName }, dead, sc) {
  const survivors = procs.filter((p) => p !== dead);
  const marks = survivors.map((p) => p.events.length);
  const { proc } = await spawnNode(
    dead.label,
    clusterName,
    survivors.map((p) => p.address),
  );
  await Promise.all(survivors.map((p, i) => p.waitFor(isUp(proc.label), 15_000, `${proc.label} up again`, marks[i])));
  for (const p of survivors) await proc.waitFor(isUp(p.label), 15_000, `${p.label} up`);
  await proc.ask(declaration(sc), 'declared');
  return {
    procs: procs.map((p) => (p === dead ? proc : p)),
    clusterName,
    readyAt: Date.now() + (sc.consistency === 'quorum' ? (sc.leaseMs ?? 2000) + 200 : 0),
  };
}

/**
 * One repetition on a formed cluster: finds the singleton's host, kills it with `signal`, and
 * returns { sample, host } (times in ms from the kill). The host is SIGKILLed before returning.
 */
async function repetition({ procs, readyAt }, sc) {
  const { name } = declaration(sc);
  const host = await singletonHost(procs, name);
  const rest = procs.filter((p) => p !== host);
  let tokenBefore;
  if (sc.consistency === 'quorum') tokenBefore = (await rest[0].ask({ cmd: 'call', id: 1, name, msg: 'get', timeoutMs: 5000 }, 'reply')).value?.token;
  // Heartbeat history for the failure detector (a SIGSTOPped host is only detected by silence;
  // a killed one by its closed connections), and every voter out of its quarantine.
  await sleep(Math.max(sc.signal === 'SIGSTOP' ? 600 : 300, readyAt - Date.now()));
  const downs = rest.map((p) => p.waitForNext(isDown(host.label), 20_000, `${host.label} down`));
  const restarted = Promise.race(rest.map((p) => p.waitForNext(startedEvent(name), 20_000, `${name} started`)));
  const killedAt = Date.now();
  host.kill(sc.signal);
  try {
    const started = await restarted;
    // Detection: the first survivor to see the host down (the other is not waited for beyond 5 s).
    const seen = await Promise.all(downs.map((d) => Promise.race([d, sleep(5000).then(() => null)])));
    const downAt = Math.min(...seen.filter(Boolean).map((e) => e.at));
    const sample = {
      detectMs: Number.isFinite(downAt) ? downAt - killedAt : null,
      startedMs: started.at - killedAt,
      afterDetectionMs: Number.isFinite(downAt) ? started.at - downAt : null,
      from: host.label,
      to: rest.find((p) => p.events.includes(started))?.label,
    };
    if (sc.consistency === 'quorum') {
      sample.tokenBefore = tokenBefore;
      sample.tokenAfter = started.e.fencingToken ?? (await rest[0].ask({ cmd: 'call', id: 2, name, msg: 'get', timeoutMs: 5000 }, 'reply')).value?.token;
    }
    return { sample, host };
  } finally {
    host.kill('SIGCONT');
    host.kill('SIGKILL');
    if (!host.exited) await new Promise((r) => host.child.once('exit', r));
    live.delete(host);
  }
}

/** p50 (lower middle), p90 (nearest rank), max, min of numbers. */
function stats(xs) {
  const s = xs.filter((x) => typeof x === 'number').sort((a, b) => a - b);
  if (!s.length) return null;
  const rank = (q) => s[Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1))];
  return { n: s.length, p50: rank(0.5), p90: rank(0.9), max: s[s.length - 1], min: s[0] };
}

const fmt = (st) => (st ? `p50 ${st.p50} ms, p90 ${st.p90} ms, max ${st.max} ms` : 'no samples');
const akka = (ms) => `Akka 25-45 s: ${(AKKA_SINGLETON_FAILOVER_MS[0] / ms).toFixed(0)}-${(AKKA_SINGLETON_FAILOVER_MS[1] / ms).toFixed(0)}x faster`;
const horde = (ms) =>
  `Horde detection + ${HORDE_SYNC_AFTER_DETECTION_MS} ms: ${ms <= 0 ? 'n/a' : `${(HORDE_SYNC_AFTER_DETECTION_MS / ms).toFixed(1)}x`} (after detection)`;

export const SCENARIOS = {
  'available-kill9': { signal: 'SIGKILL', consistency: 'available', what: "'available' singleton, kill -9 of its host" },
  'available-sigstop': { signal: 'SIGSTOP', consistency: 'available', what: "'available' singleton, SIGSTOP of its host" },
  'quorum-kill9-lease1000': {
    signal: 'SIGKILL',
    consistency: 'quorum',
    leaseMs: 1000,
    what: "'quorum' singleton (clusterSize 3, leaseMs 1000), kill -9 of its holder",
  },
  'quorum-kill9-lease2000': {
    signal: 'SIGKILL',
    consistency: 'quorum',
    what: "'quorum' singleton (clusterSize 3, leaseMs 2000 = default), kill -9 of its holder",
  },
};

/**
 * Runs the scenarios, `reps` kills each; prints as it goes; returns the JSON section. A
 * repetition that fails (a timeout) is recorded with its error and the next one starts from a
 * fresh cluster.
 */
export async function runFailover({ reps = 10, scenarios = Object.keys(SCENARIOS), fresh = false, log = console.log } = {}) {
  const result = { reps, clusterPerRepetition: fresh, scenarios: {} };
  for (const key of scenarios) {
    const sc = SCENARIOS[key];
    if (!sc) throw new Error(`unknown failover scenario ${key} (known: ${Object.keys(SCENARIOS).join(', ')})`);
    const samples = [];
    const errors = [];
    const t0 = Date.now();
    let formed = 0;
    let c = null;
    for (let i = 0; i < reps; i++) {
      try {
        if (!c) c = await formCluster(`bench-failover-${process.pid}-${key}-${++formed}`, sc);
        const { sample, host } = await repetition(c, sc);
        samples.push(sample);
        if (i + 1 < reps) {
          if (fresh) {
            await stopAll(c.procs);
            c = null;
          } else c = await rejoin(c, host, sc);
        }
      } catch (err) {
        errors.push(String(err?.message ?? err).slice(0, 500));
        if (c) await stopAll(c.procs);
        c = null; // the next repetition starts from a fresh cluster
      }
    }
    if (c) await stopAll(c.procs);
    const r = {
      what: sc.what,
      clustersFormed: formed,
      seconds: (Date.now() - t0) / 1000,
      killToStartedMs: stats(samples.map((s) => s.startedMs)),
      killToDownMs: stats(samples.map((s) => s.detectMs)),
      downToStartedMs: stats(samples.map((s) => s.afterDetectionMs)),
      samples,
      errors,
    };
    if (sc.consistency === 'quorum') {
      r.leaseMs = sc.leaseMs ?? 2000;
      r.tokensIncreased = samples.filter((s) => typeof s.tokenBefore === 'number' && s.tokenAfter > s.tokenBefore).length;
      r.tokens = samples.map((s) => [s.tokenBefore, s.tokenAfter]);
      // Across the run too: every activation's token above the one before it.
      r.tokensIncreaseAcrossRun = samples.every((s, i) => i === 0 || s.tokenAfter > samples[i - 1].tokenAfter);
    }
    result.scenarios[key] = r;
    log(`${sc.what}: ${samples.length}/${reps} repetitions (${r.seconds.toFixed(0)} s)${errors.length ? `, ${errors.length} failed: ${errors[0]}` : ''}`);
    if (!r.killToStartedMs) continue;
    log(`  kill -> started on a survivor: ${fmt(r.killToStartedMs)}   [${akka(r.killToStartedMs.p50)} at p50]`);
    log(`  kill -> down (detection):      ${fmt(r.killToDownMs)}`);
    log(`  down -> started:               ${fmt(r.downToStartedMs)}   [${r.downToStartedMs ? horde(r.downToStartedMs.p50) : ''} at p50]`);
    if (sc.consistency === 'quorum') log(`  (Horde has no at-most-one mode: waiting out the holder's lease is what the fencing guarantee costs)`);
    if (sc.signal === 'SIGSTOP' && r.downToStartedMs)
      log(`  target down -> started <= 1000 ms: ${r.downToStartedMs.max <= 1000 ? 'met' : 'MISSED'} (max ${r.downToStartedMs.max} ms)`);
    if (sc.consistency === 'quorum')
      log(
        `  fencing tokens increased in ${r.tokensIncreased}/${samples.length} failovers, and across the run: ${r.tokensIncreaseAcrossRun ? 'yes' : 'NO'} (lease ${r.leaseMs} ms; a successor waits out the lease)`,
      );
  }
  return result;
}
