/**
 * `foundation demo`: a small local cluster of child processes (`foundation start`) on 127.0.0.1,
 * with a live view of what each node sees, until Ctrl-C.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { rmSync } from 'node:fs';
import { createInterface } from 'node:readline';
import type { ClusterJson } from './http.js';

/** What the demo takes from the command line around it. */
export interface DemoDeps {
  /** Path of the `foundation` command line script the children run (`start`). */
  cliPath: string;
  out(line: string): void;
  errLine(line: string): void;
  getJson<T>(address: string, path: string, timeoutMs: number): Promise<{ status: number; body: T }>;
}

interface DemoChild {
  name: string;
  proc: ChildProcess;
  pid: number;
  address: string;
  http: string;
  exited: boolean;
}

/** Where the demo's nodes listen: loopback only. */
export const DEMO_HOST = '127.0.0.1';
const CHILD_START_TIMEOUT_MS = 15_000;

function childEnv(secret: string): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('FOUNDATION_')) env[k] = v;
  env.FOUNDATION_SECRET = secret;
  env.FOUNDATION_EMIT_STARTED = '1';
  env.FOUNDATION_EXIT_WITH_PARENT = '1';
  return env;
}

function startDemoChild(
  deps: DemoDeps,
  name: string,
  args: string[],
  secret: string,
  onExit: (child: DemoChild, code: number | null, signal: NodeJS.Signals | null) => void,
): Promise<DemoChild> {
  const cli = deps.cliPath;
  const proc = spawn(process.execPath, [cli, 'start', ...args], {
    env: childEnv(secret),
    // stdin stays open: the child stops when it closes (we went away).
    stdio: ['pipe', 'pipe', 'pipe'],
    // Own process group: a terminal Ctrl-C reaches only us, and we stop the children in order.
    detached: true,
  });
  const tail: string[] = [];
  const remember = (line: string) => {
    tail.push(line);
    if (tail.length > 20) tail.shift();
  };
  return new Promise<DemoChild>((resolve, reject) => {
    let child: DemoChild | undefined;
    const timer = setTimeout(() => {
      reject(new Error(`${name} did not report started within ${CHILD_START_TIMEOUT_MS} ms\n${tail.join('\n')}`));
    }, CHILD_START_TIMEOUT_MS);
    createInterface({ input: proc.stdout as NodeJS.ReadableStream }).on('line', (line) => {
      if (line.startsWith('{')) {
        try {
          const ev = JSON.parse(line) as { event?: string; address?: string; http?: string | null; pid?: number };
          if (ev.event === 'started' && !child) {
            clearTimeout(timer);
            if (!ev.http || !ev.address) {
              reject(new Error(`${name} started without an admin server address: ${line}`));
              return;
            }
            child = { name, proc, pid: proc.pid ?? ev.pid ?? 0, address: ev.address, http: ev.http, exited: false };
            resolve(child);
            return;
          }
          if (ev.event) return;
        } catch {
          // not an event line: show it
        }
      }
      remember(line);
      deps.out(`[${name}] ${line}`);
    });
    createInterface({ input: proc.stderr as NodeJS.ReadableStream }).on('line', (line) => {
      remember(line);
      deps.errLine(`[${name}] ${line}`);
    });
    proc.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    proc.stdin?.on('error', () => {});
    proc.on('exit', (code, signal) => {
      clearTimeout(timer);
      if (child) {
        child.exited = true;
        onExit(child, code, signal);
      } else {
        reject(new Error(`${name} exited before it started (${signal ?? `code ${code}`})\n${tail.join('\n')}`));
      }
    });
  });
}

type DemoView = Map<string, Map<string, string>>; // observer -> member -> status

async function demoView(deps: DemoDeps, children: DemoChild[], timeoutMs: number): Promise<DemoView> {
  const view: DemoView = new Map();
  await Promise.all(
    children
      .filter((c) => !c.exited)
      .map(async (c) => {
        try {
          const res = await deps.getJson<ClusterJson>(c.http, '/cluster', timeoutMs);
          if (res.status !== 200) return;
          view.set(c.name, new Map(res.body.members.map((m) => [m.name, m.status])));
        } catch {
          // unreachable for now: absent from the view
        }
      }),
  );
  return view;
}

function allSeeAllUp(children: DemoChild[], view: DemoView): boolean {
  return children.every((observer) => {
    const seen = view.get(observer.name);
    return seen !== undefined && children.every((c) => c === observer || seen.get(c.name) === 'up');
  });
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/**
 * Runs the demo cluster until Ctrl-C; `deps` are the command line's own output and HTTP helpers.
 * The caller has checked the flags (`--base-port` leaves room for 2 × `--nodes` ports).
 */
export async function runDemo(flags: { nodes: number; basePort: number; verbose?: boolean }, deps: DemoDeps): Promise<void> {
  const { out, errLine } = deps;
  const n = flags.nodes;
  const secret = randomBytes(24).toString('base64url');
  const children: DemoChild[] = [];
  let shuttingDown = false;
  let resolveDone: () => void = () => {};
  const done = new Promise<void>((resolve) => {
    resolveDone = resolve;
  });

  const onExit = (child: DemoChild, code: number | null, signal: NodeJS.Signals | null) => {
    if (!shuttingDown) out(`${new Date().toISOString().slice(11, 19)} ${child.name} (pid ${child.pid}) exited (${signal ?? `code ${code}`})`);
  };

  const killAll = (signal: NodeJS.Signals) => {
    for (const c of children) {
      if (!c.exited) {
        try {
          c.proc.kill(signal);
        } catch {
          // already gone
        }
      }
    }
  };

  // Each demo is its own cluster: two demos on one machine never merge. Its nodes register in a
  // directory of their own under the temp dir (Mortal mode's local strategy), removed on exit.
  const clusterName = `demo-${randomBytes(3).toString('hex')}`;
  const { defaultLocalDir } = await import('../discovery/local.js');
  const localDir = defaultLocalDir(clusterName);
  const removeLocalDir = () => {
    try {
      rmSync(localDir, { recursive: true, force: true });
    } catch (err) {
      errLine(`foundation demo: could not remove ${localDir}: ${(err as Error).message}`);
    }
  };

  const stopAll = async (exitCode: number) => {
    shuttingDown = true;
    const alive = children.filter((c) => !c.exited);
    if (alive.length > 0) out(`stopping ${alive.length} node(s)...`);
    const exits = alive.map((c) => new Promise<void>((resolve) => (c.exited ? resolve() : c.proc.once('exit', () => resolve()))));
    killAll('SIGTERM');
    const all = Promise.all(exits);
    let timer: NodeJS.Timeout | undefined;
    const timedOut = await Promise.race([
      all.then(() => false),
      new Promise<boolean>((resolve) => {
        timer = setTimeout(() => resolve(true), 5000);
      }),
    ]);
    clearTimeout(timer);
    if (timedOut) {
      errLine('some nodes did not stop within 5 s: killing them');
      killAll('SIGKILL');
      await all;
    }
    removeLocalDir();
    out('demo stopped');
    process.exitCode = exitCode;
    resolveDone();
  };

  let signals = 0;
  const onSignal = () => {
    signals++;
    if (signals > 1) {
      killAll('SIGKILL');
      removeLocalDir();
      process.exit(1);
    }
    void stopAll(0);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  const childArgs = (i: number): string[] => {
    const meshPort = flags.basePort > 0 ? flags.basePort + i : 0;
    const httpPort = flags.basePort > 0 ? flags.basePort + n + i : 0;
    const args = [
      '--name',
      `node-${i + 1}`,
      '--host',
      DEMO_HOST,
      '--port',
      String(meshPort),
      '--http',
      `${DEMO_HOST}:${httpPort}`,
      '--cluster-name',
      clusterName,
      // Mortal mode: the nodes find each other with no addresses given (local strategy on this
      // host, plus mdns or gossip, which stay on 127.0.0.1 because the nodes bind it).
      '--cluster',
      'true',
      '--log-level',
      flags.verbose ? 'info' : 'error',
    ];
    return args;
  };

  out(`foundation demo: starting ${n} node(s) on ${DEMO_HOST} (Ctrl-C to stop)`);
  out(`  cluster "${clusterName}", registered in ${localDir} (removed on exit)`);
  const startedAt = Date.now();
  try {
    const results = await Promise.allSettled(Array.from({ length: n }, (_, k) => startDemoChild(deps, `node-${k + 1}`, childArgs(k), secret, onExit)));
    for (const r of results) if (r.status === 'fulfilled') children.push(r.value);
    const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) throw failed.reason;
  } catch (err) {
    if (shuttingDown) return done;
    errLine(`foundation demo: ${(err as Error).message}`);
    await stopAll(1);
    return done;
  }
  children.sort((a, b) => a.name.localeCompare(b.name, undefined, { numeric: true }));
  for (const c of children) out(`${c.name}  pid ${c.pid}  mesh ${c.address}  http http://${c.http}`);

  // Wait until every node sees every other one up.
  let lastWaitNote = Date.now();
  let view: DemoView = new Map();
  while (!shuttingDown) {
    view = await demoView(deps, children, 1000);
    if (allSeeAllUp(children, view)) break;
    if (children.some((c) => c.exited)) {
      errLine('foundation demo: a node exited before the cluster formed');
      await stopAll(1);
      return done;
    }
    if (Date.now() - lastWaitNote > 5000) {
      lastWaitNote = Date.now();
      out(`still waiting for all ${n} nodes to see each other up...`);
    }
    await sleep(100);
  }
  if (shuttingDown) return done;
  const firstHttp = children[0]?.http ?? '';
  out(`ready: all ${n} nodes see each other up (${((Date.now() - startedAt) / 1000).toFixed(1)} s)`);
  out(`  try: foundation status --http ${firstHttp}   |   curl http://${firstHttp}/metrics`);
  if (children.length > 1) out(`  try: kill -9 ${children[children.length - 1]?.pid} and watch the others notice`);

  // Report membership changes until stopped.
  void (async () => {
    let previous = view;
    while (!shuttingDown) {
      await sleep(1000);
      if (shuttingDown) break;
      const current = await demoView(deps, children, 1000);
      if (shuttingDown) break;
      const stamp = new Date().toISOString().slice(11, 19);
      for (const observer of children) {
        const before = previous.get(observer.name);
        const after = current.get(observer.name);
        if (!after) {
          if (before && !observer.exited) out(`${stamp} ${observer.name}: admin server not answering`);
          continue;
        }
        const names = new Set([...(before?.keys() ?? []), ...after.keys()]);
        for (const name of [...names].sort()) {
          const was = before?.get(name);
          const now = after.get(name);
          if (was !== now) out(`${stamp} ${observer.name} sees ${name}: ${was ?? 'unknown'} -> ${now ?? 'forgotten'}`);
        }
      }
      previous = current;
    }
  })();
  return done;
}
