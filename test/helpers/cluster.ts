/** Spawns Foundation nodes as real OS processes (test/helpers/node-proc.mjs) and watches their events. */
import { type ChildProcess, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const NODE_PROC = fileURLToPath(new URL('./node-proc.mjs', import.meta.url));
const MESH_PROC = fileURLToPath(new URL('./mesh-proc.mjs', import.meta.url));

export interface NodeEvent {
  at: number;
  event: string;
  [k: string]: unknown;
}

export class NodeProc {
  readonly events: NodeEvent[] = [];
  stderr = '';
  exited = false;
  private waiters: Array<{ pred: (e: NodeEvent) => boolean; resolve: (e: NodeEvent) => void }> = [];

  constructor(
    readonly child: ChildProcess,
    readonly label: string,
  ) {
    let buf = '';
    child.stdout?.setEncoding('utf8').on('data', (d: string) => {
      buf += d;
      for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        let ev: NodeEvent;
        try {
          ev = JSON.parse(line) as NodeEvent;
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
    child.stderr?.setEncoding('utf8').on('data', (d: string) => {
      this.stderr += d;
    });
    child.on('exit', () => {
      this.exited = true;
    });
  }

  /** Resolves with the first event (already seen or future) matching `pred`. */
  waitFor(pred: (e: NodeEvent) => boolean, timeoutMs = 5000, what = 'event'): Promise<NodeEvent> {
    const seen = this.events.find(pred);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w.resolve !== done);
        reject(
          new Error(
            `${this.label}: timed out after ${timeoutMs} ms waiting for ${what}\nevents: ${JSON.stringify(this.events.slice(-10))}\nstderr: ${this.stderr.slice(-2000)}`,
          ),
        );
      }, timeoutMs);
      const done = (e: NodeEvent) => {
        clearTimeout(timer);
        resolve(e);
      };
      this.waiters.push({ pred, resolve: done });
    });
  }

  /** Waits for the next event matching `pred` that arrives after now. */
  waitForNext(pred: (e: NodeEvent) => boolean, timeoutMs = 5000, what = 'event'): Promise<NodeEvent> {
    const after = this.events.length;
    return this.waitFor((e) => this.events.indexOf(e) >= after && pred(e), timeoutMs, what);
  }

  send(cmd: Record<string, unknown>): void {
    this.child.stdin?.write(`${JSON.stringify(cmd)}\n`);
  }

  async members(): Promise<Array<{ name: string; status: string; incarnation: number; rttMs: number | null; loopLagMs: number }>> {
    const p = this.waitForNext((e) => e.event === 'members', 3000, 'members');
    this.send({ cmd: 'members' });
    return (await p).members as never;
  }

  kill(signal: NodeJS.Signals = 'SIGKILL'): void {
    if (!this.exited) this.child.kill(signal);
  }
}

export class TestCluster {
  readonly nodes: NodeProc[] = [];

  async start(
    label: string,
    opts: Record<string, unknown>,
    env: Record<string, string> = {},
  ): Promise<{ proc: NodeProc; id: { name: string; address: string; incarnation: number } }> {
    const child = spawn(process.execPath, [NODE_PROC, JSON.stringify(opts)], {
      stdio: ['pipe', 'pipe', 'pipe'],
      env: { ...process.env, FOUNDATION_LOG_LEVEL: 'info', ...env },
    });
    const proc = new NodeProc(child, label);
    this.nodes.push(proc);
    const started = await proc.waitFor((e) => e.event === 'started' || e.event === 'start-failed', 10_000, 'start');
    if (started.event !== 'started') throw new Error(`${label} failed to start: ${JSON.stringify(started)}`);
    return { proc, id: started.id as never };
  }

  /** Starts a bare mesh (no discovery) driven through the internal interface: test/helpers/mesh-proc.mjs. */
  async startMesh(
    label: string,
    opts: { name: string; port?: number; secret?: string; peers?: string[]; helloOnUp?: boolean },
  ): Promise<{ proc: NodeProc; id: { name: string; address: string; incarnation: number } }> {
    const child = spawn(process.execPath, ['--import', 'tsx', MESH_PROC, JSON.stringify(opts)], {
      stdio: ['pipe', 'pipe', 'pipe'],
      env: { ...process.env, FOUNDATION_LOG_LEVEL: 'info' },
    });
    const proc = new NodeProc(child, label);
    this.nodes.push(proc);
    const started = await proc.waitFor((e) => e.event === 'started', 15_000, 'start');
    return { proc, id: started.id as never };
  }

  async stopAll(): Promise<void> {
    for (const n of this.nodes) {
      if (n.exited) continue;
      n.child.kill('SIGCONT');
      n.kill('SIGKILL');
    }
    await Promise.all(this.nodes.map((n) => (n.exited ? undefined : new Promise((r) => n.child.once('exit', r)))));
    this.nodes.length = 0;
  }
}

export const isUp = (name: string) => (e: NodeEvent) => e.event === 'up' && (e.member as { name: string }).name === name;
export const isDown = (name: string) => (e: NodeEvent) => e.event === 'down' && (e.member as { name: string }).name === name;
