/**
 * node.config across hosts (network namespaces): a 2|1 partition (iptables). A cluster-wide set
 * on either side aborts, the unreachable member(s) named in the votes, and nothing changes on
 * any host; after the heal every host has the same version and values, no divergence was
 * repaired (there was none), and the next set commits everywhere.
 */
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isDown, isUp, type NodeEvent, type NodeProc } from '../helpers/cluster.js';
import { startLabCluster } from '../helpers/lab-cluster.js';
import { createHosts, type NetLab, netnsGate } from '../helpers/netns.js';

const PROC = fileURLToPath(new URL('../helpers/layer-proc.mjs', import.meta.url));
const gate = netnsGate({ what: 'cluster config partition tests (network namespaces)' });
const PORT = 7420;

async function ask(p: NodeProc, cmd: Record<string, unknown>, reply: string[], timeoutMs = 20_000): Promise<NodeEvent> {
  const next = p.waitForNext((e) => reply.includes(e.event) || e.event === 'command-error', timeoutMs, reply.join('|'));
  p.send(cmd);
  const e = await next;
  if (e.event === 'command-error') throw new Error(`${p.label} ${String(cmd.cmd)}: ${String(e.message)}`);
  return e;
}

const setCw = (p: NodeProc, path: string, value: unknown) =>
  ask(p, { cmd: 'config-set-cw', path, value, timeoutMs: 4000 }, ['config-committed', 'config-aborted']);
const state = (p: NodeProc) =>
  ask(p, { cmd: 'config-state' }, ['config-state']) as Promise<
    NodeEvent & { version: number; entries: unknown; stats: { divergences: { behind: number; conflict: number } } }
  >;

describe.skipIf(gate.skip)('cluster config across hosts (network namespaces)', () => {
  let lab: NetLab;
  const procs: NodeProc[] = [];

  beforeAll(async () => {
    lab = await createHosts(3);
    procs.push(
      ...(await startLabCluster(lab, { script: PROC, port: PORT, secret: 'lab-config-secret-0123456789abcdef', env: { FOUNDATION_LOG_LEVEL: 'warn' } })),
    );
  });

  afterAll(async () => {
    await lab?.teardown();
  });

  it('a set during a 2|1 partition aborts on both sides naming the unreachable members; nothing diverges after the heal', async () => {
    const [p0, p1, p2] = procs as [NodeProc, NodeProc, NodeProc];
    const h2 = lab.hosts[2];
    const first = await setCw(p0, 'limits.rps', 100);
    expect(first.event, JSON.stringify(first)).toBe('config-committed');

    const downs = [
      p0.waitForNext(isDown('h2'), 8000),
      p1.waitForNext(isDown('h2'), 8000),
      p2.waitForNext(isDown('h0'), 8000),
      p2.waitForNext(isDown('h1'), 8000),
    ];
    await lab.partition(h2 as never);
    await Promise.all(downs);

    const majority = await setCw(p0, 'limits.rps', 200);
    expect(majority.event).toBe('config-aborted');
    expect(majority.code).toBe('FOUNDATION_CONFIG_ABORTED');
    expect(majority.votes).toContainEqual(expect.objectContaining({ node: 'h2', vote: 'none', code: 'unreachable' }));
    const minority = await setCw(p2, 'limits.rps', 300);
    expect(minority.event).toBe('config-aborted');
    const unreachable = (minority.votes as Array<{ node: string; code?: string }>).filter((v) => v.code === 'unreachable').map((v) => v.node);
    expect(unreachable.sort()).toEqual(['h0', 'h1']);
    for (const p of procs) expect((await ask(p, { cmd: 'config-get', path: 'limits.rps' }, ['config-value'])).value, p.label).toBe(100);

    const ups = [p0.waitForNext(isUp('h2'), 15_000), p2.waitForNext(isUp('h0'), 15_000), p2.waitForNext(isUp('h1'), 15_000)];
    await lab.heal(h2 as never);
    await Promise.all(ups);
    // Two digest periods: a divergence, had there been one, would be found and counted by now.
    await new Promise((r) => setTimeout(r, 4500));
    const states = await Promise.all(procs.map(state));
    for (const s of states) {
      expect(s.version).toBe(1);
      expect(s.entries).toEqual([['limits.rps', 100]]);
      expect(s.stats.divergences).toEqual({ behind: 0, conflict: 0 });
    }
    const after = await setCw(p2, 'limits.rps', 400);
    expect(after.event, JSON.stringify(after)).toBe('config-committed');
    for (const p of [p0, p1, p2])
      expect(await ask(p, { cmd: 'config-get', path: 'limits.rps' }, ['config-value']), p.label).toMatchObject({ value: 400, version: 2 });
  }, 120_000);
});
