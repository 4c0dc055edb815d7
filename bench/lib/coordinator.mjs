// Coordinator side of the mesh, pubsub and hol benches: worker processes over IPC, broker
// daemons, table formatting (bench/mesh.mjs, bench/pubsub.mjs and bench/hol.mjs share it).
import { fork, spawn, spawnSync } from 'node:child_process';
import { appendFileSync, existsSync, readFileSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import os from 'node:os';
import { dirname, join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';

const HERE = dirname(fileURLToPath(import.meta.url));
export const LIB = HERE;
export const ROOT = join(HERE, '..', '..');
export const SECRET = 'foundation-bench-secret-not-for-production';
/** The build the Foundation workers import (BENCH_FOUNDATION_DIST); set with setDist(). */
let DIST = join(ROOT, 'dist');
export const getDist = () => DIST;
export const setDist = (d) => {
  DIST = d;
};

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
export const wallNow = () => performance.timeOrigin + performance.now();
/** Every process this bench started; all are killed on the way out, whatever happens. */
export const children = new Set();

export function killAll() {
  for (const c of children) {
    try {
      c.kill('SIGKILL');
    } catch {}
  }
}
process.on('exit', killAll);
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(sig, () => {
    killAll();
    process.exit(130);
  });
}

/**
 * Environment of the workers: FOUNDATION_* variables of the caller are dropped (they would
 * configure the benchmarked nodes), logs default to warn, BENCH_FOUNDATION_DIST picks the build.
 */
export function childEnv() {
  const env = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('FOUNDATION_')) env[k] = v;
  env.FOUNDATION_LOG_LEVEL = process.env.FOUNDATION_LOG_LEVEL ?? 'warn';
  env.BENCH_FOUNDATION_DIST = DIST;
  return env;
}

export function track(child) {
  children.add(child);
  child.once('exit', () => children.delete(child));
  return child;
}

/** A bench worker (bench/lib/*.mjs) over IPC: `call` commands, `waitEvent` for its events. */
export class Worker {
  constructor(script, args, label, { cpuProf = false, nodeFlags = [] } = {}) {
    this.label = label;
    this.events = [];
    this.waiters = [];
    this.pending = new Map();
    this.nextId = 1;
    this.tail = '';
    this.exited = false;
    // One directory per process: the main thread and the heartbeat worker thread each write a profile.
    const execArgv = [
      ...nodeFlags,
      ...(process.env.BENCH_NODE_FLAGS ? process.env.BENCH_NODE_FLAGS.split(' ') : []),
      ...(cpuProf ? ['--cpu-prof', '--cpu-prof-dir', join(ROOT, 'bench', 'results', 'prof', `${label}-${Date.now()}`)] : []),
    ];
    this.child = track(
      fork(join(LIB, script), args, {
        stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
        execArgv,
        env: childEnv(),
      }),
    );
    const keep = (d) => {
      this.tail = (this.tail + d).slice(-4000);
    };
    this.child.stdout.setEncoding('utf8').on('data', keep);
    if (process.env.BENCH_STDOUT_DIR) this.child.stdout.on('data', (d) => appendFileSync(join(process.env.BENCH_STDOUT_DIR, `${label}.out`), d));
    this.child.stderr.setEncoding('utf8').on('data', keep);
    this.child.on('message', (m) => this.onMessage(m));
    this.child.on('error', () => {});
    this.child.once('exit', (code, signal) => {
      this.exitedAt = wallNow();
      this.exited = true;
      this.exitInfo = { code, signal };
      const err = new Error(`${label} exited (code ${code}, signal ${signal})\n${this.tail}`);
      for (const p of this.pending.values()) p.reject(err);
      this.pending.clear();
      for (const w of this.waiters) w.reject(err);
      this.waiters = [];
    });
  }

  onMessage(m) {
    if (m?.event === undefined && m?.id !== undefined) {
      const p = this.pending.get(m.id);
      if (!p) return;
      this.pending.delete(m.id);
      if (m.ok) p.resolve(m.result);
      else p.reject(new Error(`${this.label}: ${m.error}`));
      return;
    }
    if (!m?.event) return;
    this.events.push(m);
    this.waiters = this.waiters.filter((w) => {
      if (!w.pred(m)) return true;
      w.resolve(m);
      return false;
    });
  }

  call(cmd, args = {}, timeoutMs = 30_000) {
    if (this.exited) return Promise.reject(new Error(`${this.label} has exited\n${this.tail}`));
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new Error(`${this.label}: "${cmd}" timed out after ${timeoutMs} ms\n${this.tail}`));
      }, timeoutMs);
      this.pending.set(id, {
        resolve: (v) => {
          clearTimeout(timer);
          resolve(v);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      });
      this.child.send({ id, cmd, ...args }, (err) => {
        if (err && this.pending.has(id)) this.pending.get(id).reject(new Error(`${this.label}: could not send "${cmd}": ${err.message}`));
      });
    });
  }

  /** First event (already received or future) matching `pred`. */
  waitEvent(pred, timeoutMs, what) {
    const seen = this.events.find(pred);
    if (seen) return Promise.resolve(seen);
    if (this.exited) return Promise.reject(new Error(`${this.label} exited before ${what}\n${this.tail}`));
    return new Promise((resolve, reject) => {
      const w = {
        pred,
        resolve: (e) => {
          clearTimeout(timer);
          resolve(e);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      };
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((x) => x !== w);
        reject(new Error(`${this.label}: no ${what} within ${timeoutMs} ms\n${this.tail}`));
      }, timeoutMs);
      this.waiters.push(w);
    });
  }

  async started() {
    const e = await this.waitEvent((e) => e.event === 'started' || e.event === 'start-failed', 15_000, 'start');
    if (e.event !== 'started') throw new Error(`${this.label} failed to start: ${e.message}`);
    return e;
  }

  signal(sig) {
    if (!this.exited) this.child.kill(sig);
  }

  /** Asks the worker to exit (so a --cpu-prof profile gets written), then kills it. */
  async close(graceMs = 1500) {
    if (this.exited) return;
    const gone = new Promise((r) => this.child.once('exit', r));
    try {
      this.child.send({ id: 0, cmd: 'exit' }, () => {});
    } catch {}
    await Promise.race([gone, sleep(graceMs)]);
    if (!this.exited) {
      this.child.kill('SIGKILL');
      await gone;
    }
  }
}

export async function closeAll(workers) {
  await Promise.all(workers.filter(Boolean).map((w) => w.close()));
}

// ---- broker daemons (nats-server, redis-server) ---------------------------------------------

/** The daemons the peers go through, each listening on 127.0.0.1 only. */
export const DAEMONS = {
  nats: { bin: 'nats-server', pkg: 'nats-server', args: (port) => ['-a', '127.0.0.1', '-p', String(port)] },
  // No persistence: a pub/sub broker, nothing to save.
  redis: { bin: 'redis-server', pkg: 'redis-server', args: (port) => ['--bind', '127.0.0.1', '--port', String(port), '--save', '', '--appendonly', 'no'] },
};

export function findDaemon(bin) {
  for (const dir of ['/usr/sbin', '/usr/bin', '/usr/local/bin']) if (existsSync(join(dir, bin))) return join(dir, bin);
  const r = spawnSync('sh', ['-c', `command -v ${bin}`], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() : undefined;
}

export function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen({ host: '127.0.0.1', port: 0 }, () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

export function canConnect(port) {
  return new Promise((resolve) => {
    const s = connect({ host: '127.0.0.1', port }, () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

/** Starts `kind` (a DAEMONS key) on a free port; resolves once it accepts connections. */
export async function startDaemon(kind) {
  const d = DAEMONS[kind];
  const bin = findDaemon(d.bin);
  if (!bin) throw new Error(`${d.bin} not found (looked in /usr/sbin, /usr/bin, /usr/local/bin, PATH; Debian package ${d.pkg})`);
  for (let attempt = 0; attempt < 3; attempt++) {
    const port = await freePort();
    const child = track(spawn(bin, d.args(port), { stdio: ['ignore', 'pipe', 'pipe'] }));
    let tail = '';
    const keep = (data) => {
      tail = (tail + data).slice(-2000);
    };
    child.stdout.setEncoding('utf8').on('data', keep);
    child.stderr.setEncoding('utf8').on('data', keep);
    let exited = false;
    child.once('exit', () => {
      exited = true;
    });
    const deadline = Date.now() + 5000;
    while (!exited && Date.now() < deadline) {
      if (await canConnect(port)) {
        const close = async () => {
          if (exited) return;
          const gone = new Promise((r) => child.once('exit', r));
          child.kill('SIGKILL');
          await gone;
        };
        return { port, url: `127.0.0.1:${port}`, close, bin, pid: child.pid };
      }
      await sleep(50);
    }
    if (!exited) child.kill('SIGKILL');
    if (attempt === 2) throw new Error(`${d.bin} did not start on ${port}:\n${tail}`);
  }
}

export function daemonVersion(kind) {
  const bin = findDaemon(DAEMONS[kind].bin);
  if (!bin) return undefined;
  const r = spawnSync(bin, ['--version'], { encoding: 'utf8' });
  const text = (r.stdout || r.stderr || '').trim().split('\n')[0];
  // redis-server prints "Redis server v=7.0.15 sha=... malloc=... bits=64 build=...".
  return text.replace(/^Redis server v=(\S+).*$/, 'redis-server v$1') || undefined;
}

// ---- formatting ---------------------------------------------------------------------------

export const round1 = (x) => Math.round(x * 10) / 10;
export const round3 = (x) => Math.round(x * 1000) / 1000;
export const ratio = (x, y) => (x && y ? Math.round((x / y) * 100) / 100 : undefined);
export const fmtInt = (x) => (x === undefined || x === null ? '-' : Math.round(x).toLocaleString('en-US'));
export const fmt = (x, d = 1) => (x === undefined || x === null ? '-' : Number(x).toFixed(d));

export function table(title, header, rows) {
  const widths = header.map((h, i) => Math.max(String(h).length, ...rows.map((r) => String(r[i] ?? '').length)));
  const line = (cells) => cells.map((c, i) => (i === 0 ? String(c ?? '').padEnd(widths[i]) : String(c ?? '').padStart(widths[i]))).join('  ');
  return [`\n${title}`, line(header), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)].join('\n');
}

/** Installed version of a (dev) dependency, e.g. a peer's client library. */
export function packageVersion(name) {
  try {
    return JSON.parse(readFileSync(join(ROOT, 'node_modules', name, 'package.json'), 'utf8')).version;
  } catch {
    return undefined;
  }
}

export function gitHead() {
  const r = spawnSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: ROOT, encoding: 'utf8' });
  if (r.status !== 0) return undefined;
  const dirty = spawnSync('git', ['status', '--porcelain', '--', 'src'], { cwd: ROOT, encoding: 'utf8' });
  return r.stdout.trim() + (dirty.stdout?.trim() ? '+dirty-src' : '');
}

/** Exits with code 2, saying how to build, when the library under test (`getDist()`) is not built. */
export function requireBuilt(npmScript) {
  const entry = join(getDist(), 'index.js');
  if (existsSync(entry)) return;
  console.error(`${entry} is missing: run \`npm run build\` first (or \`npm run ${npmScript}\`).`);
  process.exit(2);
}

/**
 * What every results file of a bench starts with: the bench, when, the package and commit
 * measured, the command line, and the host (`extraHost`: the peers' versions, say).
 */
export function resultHeader(bench, started, extraHost = {}) {
  const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8'));
  return {
    bench,
    date: started.toISOString(),
    package: `${pkg.name}@${pkg.version}`,
    gitCommit: gitHead(),
    command: `node bench/${bench}.mjs ${process.argv.slice(2).join(' ')}`.trim(),
    host: {
      platform: `${os.platform()} ${os.release()}`,
      cpus: os.cpus().length,
      cpuModel: os.cpus()[0]?.model,
      memoryGB: round1(os.totalmem() / 1e9),
      node: process.version,
      ...extraHost,
      loadAvgAtStart: os.loadavg().map(round1),
    },
  };
}
