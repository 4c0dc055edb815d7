/**
 * Node processes for the multi-process tests of the layers above the mesh: each node runs a
 * driver script (test/helpers/layer-proc.mjs, processes-proc.mjs, ...) on the built library,
 * started with static peers on 127.0.0.1, driven by JSON commands on stdin, answering with JSON
 * events on stdout (`NodeProc`). One place for what every such test needs: start n nodes and
 * wait for the full mesh, ask a node something, poll until a condition holds, and kill everything
 * after each test (paused ones included).
 */
import { spawn } from 'node:child_process';
import { isUp, type NodeEvent, NodeProc } from './cluster.js';

export interface LayerClusterOptions {
  /** Absolute path of the driver script. */
  script: string;
  /** Shared secret of the test's nodes. */
  secret: string;
  /** Prefix of the cluster names (one fresh cluster per `start`). */
  prefix: string;
  /** Log level of the nodes. Default `warn`. */
  logLevel?: string;
}

export class LayerCluster {
  /** Every node started, in order (the killed ones included until `killAll`). */
  procs: NodeProc[] = [];
  private run = 0;

  constructor(private readonly opts: LayerClusterOptions) {}

  /** Starts one node of cluster `clusterName`, dialing `hosts`; resolves once it printed `started`. */
  async startNode(name: string, clusterName: string, hosts: string[], extra: Record<string, unknown> = {}): Promise<{ proc: NodeProc; address: string }> {
    const opts = {
      name,
      clusterName,
      secret: this.opts.secret,
      host: '127.0.0.1',
      ...(hosts.length ? { cluster: { strategy: 'static', hosts } } : {}),
      ...extra,
    };
    const child = spawn(process.execPath, [this.opts.script, JSON.stringify(opts)], {
      stdio: ['pipe', 'pipe', 'pipe'],
      // FOUNDATION_TEST_LOG_LEVEL overrides the level for a run that hunts a failure.
      env: { ...process.env, FOUNDATION_LOG_LEVEL: process.env.FOUNDATION_TEST_LOG_LEVEL ?? this.opts.logLevel ?? 'warn' },
    });
    const proc = new NodeProc(child, name);
    this.procs.push(proc);
    const started = await proc.waitFor((e) => e.event === 'started', 15_000, 'start');
    return { proc, address: (started.id as { address: string }).address };
  }

  /** A cluster name that no earlier test of this process used. */
  freshClusterName(): string {
    return `${this.opts.prefix}-${process.pid}-${++this.run}`;
  }

  /**
   * Starts nodes `<namePrefix>1..n` of a fresh cluster, each with the start options `extra` too,
   * and waits until every one sees every other up.
   */
  async start(n: number, namePrefix: string, extra: Record<string, unknown> = {}): Promise<{ procs: NodeProc[]; addresses: string[]; clusterName: string }> {
    const clusterName = this.freshClusterName();
    const procs: NodeProc[] = [];
    const addresses: string[] = [];
    for (let i = 1; i <= n; i++) {
      const { proc, address } = await this.startNode(`${namePrefix}${i}`, clusterName, addresses, extra);
      procs.push(proc);
      addresses.push(address);
    }
    for (const p of procs) {
      for (let i = 1; i <= n; i++) if (`${namePrefix}${i}` !== p.label) await p.waitFor(isUp(`${namePrefix}${i}`), 15_000, `${namePrefix}${i} up`);
    }
    return { procs, addresses, clusterName };
  }

  /** Kills every node (resuming paused ones first, so they die now) and waits for the exits. */
  async killAll(): Promise<void> {
    for (const p of this.procs) {
      if (p.exited) continue;
      p.child.kill('SIGCONT');
      p.kill('SIGKILL');
    }
    await Promise.all(this.procs.map((p) => (p.exited ? undefined : new Promise((r) => p.child.once('exit', r)))));
    this.procs = [];
  }
}

/** Sends `cmd` and resolves with the next `reply` event (or one of them); a `command-error` rejects with its message. */
export async function ask(p: NodeProc, cmd: Record<string, unknown>, reply: string | string[], timeoutMs = 20_000): Promise<NodeEvent> {
  const replies = Array.isArray(reply) ? reply : [reply];
  const next = p.waitForNext((e) => replies.includes(e.event) || e.event === 'command-error', timeoutMs, replies.join('|'));
  p.send(cmd);
  const e = await next;
  if (e.event === 'command-error') throw new Error(`${p.label} ${String(cmd.cmd)}: ${String(e.message)}`);
  return e;
}

/** Polls `cond` every `everyMs` until it holds; rejects naming `what` after `timeoutMs`. */
export async function until(cond: () => Promise<boolean> | boolean, what: string, timeoutMs = 10_000, everyMs = 20): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}
