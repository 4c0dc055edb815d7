/**
 * A Foundation node on every host of a network-namespace lab, each listing all hosts as its
 * static peers, started and waited for until every node sees every other one up.
 */
import { isUp, NodeProc } from './cluster.js';
import type { NetLab } from './netns.js';

export interface LabClusterOptions {
  /** The node script to run (test/helpers/node-proc.mjs or layer-proc.mjs). */
  script: string;
  /** Mesh port, the same on every host. */
  port: number;
  secret: string;
  /** Extra environment of every node. */
  env?: Record<string, string>;
  /** Extra start options of every node (merged over the lab's name, addresses and static peers). */
  nodeOptions?: Record<string, unknown>;
}

export async function startLabCluster(lab: NetLab, opts: LabClusterOptions): Promise<NodeProc[]> {
  const all = lab.hosts.map((h) => `${h.ip}:${opts.port}`);
  const procs: NodeProc[] = [];
  for (const h of lab.hosts) {
    const nodeOpts = {
      name: h.name,
      host: '0.0.0.0',
      advertiseHost: h.ip,
      port: opts.port,
      secret: opts.secret,
      cluster: { strategy: 'static', hosts: all },
      ...opts.nodeOptions,
    };
    const child = h.spawn([process.execPath, opts.script, JSON.stringify(nodeOpts)], { stdin: 'pipe', label: h.name, ...(opts.env ? { env: opts.env } : {}) });
    procs.push(new NodeProc(child, h.name));
  }
  const names = lab.hosts.map((h) => h.name);
  await Promise.all(procs.flatMap((p, i) => names.filter((_, j) => j !== i).map((n) => p.waitFor(isUp(n), 10_000, `${n} up on ${p.label}`))));
  return procs;
}
