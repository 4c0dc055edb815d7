/**
 * End-to-end tests of the `foundation` binary. They run the BUILT CLI (`dist/surfaces/cli.js`):
 * run `npm run build` first (`npm test` does). Everything listens on 127.0.0.1 only.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { dirname, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const CLI = resolve(root, 'dist/surfaces/cli.js');
const FOUNDATION_BUILT = existsSync(resolve(root, 'dist/foundation.js'));

interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Environment without any FOUNDATION_* variable of the developer's shell. */
function cleanEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('FOUNDATION_')) env[k] = v;
  return { ...env, ...extra };
}

function run(args: string[], timeoutMs = 10_000, env: Record<string, string> = {}): Promise<RunResult> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: cleanEnv(env) });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (c: string) => {
      stdout += c;
    });
    child.stderr.setEncoding('utf8').on('data', (c: string) => {
      stderr += c;
    });
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`foundation ${args.join(' ')} did not exit within ${timeoutMs} ms\n${stdout}\n${stderr}`));
    }, timeoutMs);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolvePromise({ code, signal, stdout, stderr });
    });
  });
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

async function waitFor(cond: () => boolean, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (cond()) return true;
    await new Promise((r) => setTimeout(r, 50));
  }
  return cond();
}

/** A 127.0.0.1 port nobody listens on (bound, then released). */
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as { port: number };
  await new Promise<void>((r) => server.close(() => r()));
  return port;
}

interface DemoNode {
  name: string;
  pid: number;
  mesh: string;
  http: string;
}

interface Demo {
  proc: ChildProcess;
  nodes: DemoNode[];
  output: string[];
  ready: Promise<number>;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

const leftovers = new Set<number>();

function startDemo(args: string[]): Demo {
  const proc = spawn(process.execPath, [CLI, 'demo', ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: cleanEnv() });
  if (proc.pid) leftovers.add(proc.pid);
  const nodes: DemoNode[] = [];
  const output: string[] = [];
  const started = Date.now();
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) => proc.on('exit', (code, signal) => r({ code, signal })));
  const ready = new Promise<number>((resolvePromise, reject) => {
    createInterface({ input: proc.stdout as NodeJS.ReadableStream }).on('line', (line) => {
      output.push(line);
      const m = /^(node-\d+)\s+pid (\d+)\s+mesh (\S+)\s+http http:\/\/(\S+)$/.exec(line);
      if (m) {
        const node = { name: m[1] ?? '', pid: Number(m[2]), mesh: m[3] ?? '', http: m[4] ?? '' };
        nodes.push(node);
        leftovers.add(node.pid);
      }
      if (/^ready:/.test(line)) resolvePromise(Date.now() - started);
    });
    createInterface({ input: proc.stderr as NodeJS.ReadableStream }).on('line', (line) => output.push(`stderr: ${line}`));
    void exited.then(({ code, signal }) => reject(new Error(`demo exited before ready (${signal ?? code})\n${output.join('\n')}`)));
  });
  ready.catch(() => {});
  return { proc, nodes, output, ready, exited };
}

afterAll(() => {
  for (const pid of leftovers) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // gone, as it should be
    }
  }
});

describe('foundation CLI: usage', () => {
  it('is built', () => {
    expect(existsSync(CLI), `${CLI} is missing: run "npm run build" first`).toBe(true);
  });

  it('unknown command and unknown flag: exit 2', async () => {
    const cmd = await run(['frobnicate']);
    expect(cmd.code).toBe(2);
    expect(cmd.stderr).toMatch(/unknown command 'frobnicate'/);
    const flag = await run(['status', '--http', '127.0.0.1:1', '--bogus']);
    expect(flag.code).toBe(2);
    expect(flag.stderr).toMatch(/unknown option '--bogus'/);
  });

  it('invalid port: exit 2 naming the flag (and the env variable)', async () => {
    const bad = await run(['start', '--name', 'a', '--port', '70000']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/--port/);
    const env = await run(['start', '--name', 'a'], 10_000, { FOUNDATION_PORT: 'x' });
    expect(env.code).toBe(2);
    expect(env.stderr).toMatch(/--port.*FOUNDATION_PORT/);
  });

  it('status of an unreachable node: exit 1 with a clear message', async () => {
    const port = await closedPort();
    const res = await run(['status', '--http', `127.0.0.1:${port}`]);
    expect(res.code).toBe(1);
    expect(res.stderr).toMatch(new RegExp(`cannot reach the admin server at http://127\\.0\\.0\\.1:${port}`));
  });
});

describe.skipIf(!FOUNDATION_BUILT)('foundation CLI: start (skipped: dist/foundation.js is not built yet)', () => {
  it('logs each member change once (the CLI line, without the mesh duplicate)', { timeout: 30_000 }, async () => {
    const env = cleanEnv({ FOUNDATION_SECRET: 'cli-test-secret-of-at-least-32-bytes', FOUNDATION_EMIT_STARTED: '1' });
    const cluster = `cli-log-${process.pid}`;
    const spawnNode = (args: string[]) => {
      const proc = spawn(process.execPath, [CLI, 'start', '--cluster-name', cluster, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env });
      if (proc.pid) leftovers.add(proc.pid);
      let stderr = '';
      proc.stderr.setEncoding('utf8').on('data', (c: string) => {
        stderr += c;
      });
      const started = new Promise<{ address: string }>((resolvePromise, reject) => {
        createInterface({ input: proc.stdout }).on('line', (line) => {
          if (line.includes('"started"')) resolvePromise(JSON.parse(line) as { address: string });
        });
        proc.on('exit', (code) => reject(new Error(`exited (${code}) before starting:\n${stderr}`)));
      });
      started.catch(() => {});
      const exited = new Promise<void>((r) => proc.on('exit', () => r()));
      return { proc, started, exited, stderr: () => stderr };
    };
    const a = spawnNode(['--name', 'log-a']);
    const { address } = await a.started;
    const b = spawnNode(['--name', 'log-b', '--static', address]);
    await b.started;
    try {
      expect(await waitFor(() => /member up/.test(b.stderr()) && /member up/.test(a.stderr()), 10_000), `${a.stderr()}\n${b.stderr()}`).toBe(true);
      b.proc.kill('SIGTERM');
      await b.exited;
      // a sees b leave (one line), then stops too: every line either node wrote is in by its exit.
      expect(await waitFor(() => /member down/.test(a.stderr()), 10_000), a.stderr()).toBe(true);
      a.proc.kill('SIGTERM');
      await a.exited;
      for (const [node, text, other] of [
        [a, a.stderr(), 'log-b'],
        [b, b.stderr(), 'log-a'],
      ] as const) {
        void node;
        expect(text.match(/member up/g), text).toHaveLength(1);
        expect(text).toMatch(new RegExp(`INFO\\s+member up\\s+member=${other} address=127\\.0\\.0\\.1:\\d+`));
      }
      expect(a.stderr().match(/member down/g), a.stderr()).toHaveLength(1);
    } finally {
      for (const n of [a, b]) if (n.proc.exitCode === null && n.proc.signalCode === null) n.proc.kill('SIGKILL');
    }
  });
});

describe.skipIf(!FOUNDATION_BUILT)('foundation CLI: demo (skipped: dist/foundation.js is not built yet)', () => {
  it('demo --nodes 3 forms a cluster, status sees it, SIGINT stops every child', { timeout: 40_000 }, async () => {
    const demo = startDemo(['--nodes', '3']);
    try {
      const readyMs = await Promise.race([
        demo.ready,
        new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`no ready line within 10 s\n${demo.output.join('\n')}`)), 10_000)),
      ]);
      expect(readyMs).toBeLessThan(10_000);
      expect(demo.nodes.map((n) => n.name).sort()).toEqual(['node-1', 'node-2', 'node-3']);
      for (const n of demo.nodes) {
        expect(n.mesh).toMatch(/^127\.0\.0\.1:\d+$/);
        expect(n.http).toMatch(/^127\.0\.0\.1:\d+$/);
      }

      const first = demo.nodes.find((n) => n.name === 'node-1') as DemoNode;
      const status = await run(['status', '--http', first.http, '--json']);
      expect(status.code, status.stderr).toBe(0);
      const parsed = JSON.parse(status.stdout) as {
        cluster: { self: { name: string }; members: { name: string; status: string }[] };
        health: { status: string };
      };
      expect(parsed.cluster.self.name).toBe('node-1');
      expect(
        parsed.cluster.members
          .filter((m) => m.status === 'up')
          .map((m) => m.name)
          .sort(),
      ).toEqual(['node-2', 'node-3']);

      const table = await run(['status', '--http', first.http]);
      expect(table.code).toBe(0);
      expect(table.stdout).toMatch(/^node-2\s+127\.0\.0\.1:\d+\s+up\b/m);

      // The form the demo prints (`http http://127.0.0.1:<port>`) is accepted as is, with or without a trailing slash.
      for (const url of [`http://${first.http}`, `http://${first.http}/`]) {
        const byUrl = await run(['status', '--http', url]);
        expect(byUrl.code, byUrl.stderr).toBe(0);
        expect(byUrl.stdout).toMatch(/^node node-1 \(127\.0\.0\.1:\d+\), health ok/m);
      }
      const https = await run(['status', '--http', `https://${first.http}`]);
      expect(https.code).toBe(2);
      expect(https.stderr).toMatch(/Expected <port>, <host:port> or <http:\/\/host:port>/);

      // Mortal mode registers the nodes in a directory of the demo's own under the temp dir.
      const dirLine = demo.output.find((l) => /registered in /.test(l)) ?? '';
      const localDir = /registered in (.+) \(removed on exit\)$/.exec(dirLine)?.[1] ?? '';
      expect(localDir, demo.output.join('\n')).toMatch(/demo-[0-9a-f]{6}$/);
      expect(existsSync(localDir)).toBe(true);

      demo.proc.kill('SIGINT');
      const exit = await Promise.race([
        demo.exited,
        new Promise<never>((_, reject) => setTimeout(() => reject(new Error('demo did not stop within 10 s')), 10_000)),
      ]);
      expect(exit).toEqual({ code: 0, signal: null });
      for (const n of demo.nodes) expect(isAlive(n.pid), `${n.name} (pid ${n.pid}) still running`).toBe(false);
      // No empty directory left behind per run.
      expect(existsSync(localDir), `${localDir} was left behind`).toBe(false);
    } finally {
      if (demo.proc.exitCode === null && demo.proc.signalCode === null) demo.proc.kill('SIGKILL');
    }
  });

  it('children stop by themselves when the demo process is killed outright', { timeout: 40_000 }, async () => {
    const demo = startDemo(['--nodes', '2']);
    await demo.ready;
    expect(demo.nodes).toHaveLength(2);
    demo.proc.kill('SIGKILL');
    await demo.exited;
    const gone = await waitFor(() => demo.nodes.every((n) => !isAlive(n.pid)), 10_000);
    expect(gone, `still running: ${demo.nodes.filter((n) => isAlive(n.pid)).map((n) => n.pid)}`).toBe(true);
    // A demo killed outright cannot remove its registration directory: this test does.
    const localDir = /registered in (.+) \(removed on exit\)$/.exec(demo.output.find((l) => /registered in /.test(l)) ?? '')?.[1];
    if (localDir?.match(/demo-[0-9a-f]{6}$/)) rmSync(localDir, { recursive: true, force: true });
  });
});
