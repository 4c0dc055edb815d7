/**
 * The internal interface is what a replicating layer needs: a small replicated key-value store
 * (test/helpers/replicated-kv.ts), built on that interface alone, on 3 real processes.
 * Run after `npm run build`.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { isUp, type NodeProc, TestCluster } from '../helpers/cluster.js';

async function dump(p: NodeProc): Promise<{ entries: Record<string, unknown>; resyncs: Record<string, number> }> {
  const ev = p.waitForNext((e) => e.event === 'kv', 3000, 'kv dump');
  p.send({ cmd: 'kvDump' });
  return (await ev) as never;
}

/** Polls every node until all hold `expected`, or fails with what they hold. */
async function converge(nodes: NodeProc[], expected: Record<string, unknown>, timeoutMs = 8000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown[] = [];
  while (Date.now() < deadline) {
    last = await Promise.all(nodes.map(async (n) => (await dump(n)).entries));
    if (last.every((e) => JSON.stringify(sortKeys(e as Record<string, unknown>)) === JSON.stringify(sortKeys(expected)))) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  expect(last).toEqual(nodes.map(() => expected));
}

function sortKeys(o: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(o).sort(([a], [b]) => (a < b ? -1 : 1)));
}

describe('a replicated key-value store on the internal interface (multi-process)', () => {
  const cluster = new TestCluster();
  afterEach(() => cluster.stopAll());

  it('converges on every node, and a restarted node (new incarnation) resyncs', async () => {
    const a = await cluster.startMesh('a', { name: 'a' });
    const b = await cluster.startMesh('b', { name: 'b', peers: [a.id.address] });
    // a's store starts before anyone is up, b's once a is up, c's late: all three sync paths.
    a.proc.send({ cmd: 'kvStart' });
    await b.proc.waitFor(isUp('a'), 8000, 'a up on b');
    b.proc.send({ cmd: 'kvStart' });
    a.proc.send({ cmd: 'kvSet', key: 'x', value: 1 });
    b.proc.send({ cmd: 'kvSet', key: 'y', value: 'from-b' });
    const c = await cluster.startMesh('c', { name: 'c', peers: [b.id.address] });
    await c.proc.waitFor(isUp('a'), 8000, 'a up on c (transitive)');
    await c.proc.waitFor(isUp('b'), 8000, 'b up on c');
    c.proc.send({ cmd: 'kvStart' });
    c.proc.send({ cmd: 'kvSet', key: 'z', value: [1, 2, 3] });
    // Concurrent writes to one key: last writer (Lamport clock, then name) wins everywhere.
    for (const [n, p] of [a, b, c].entries()) p.proc.send({ cmd: 'kvSet', key: 'shared', value: `v${n}` });
    await new Promise((r) => setTimeout(r, 300));
    const firstDump = await dump(a.proc);
    const shared = firstDump.entries.shared;
    await converge([a.proc, b.proc, c.proc], { x: 1, y: 'from-b', z: [1, 2, 3], shared });

    // c restarts: a new incarnation with an empty store. It gets everything back by resync.
    c.proc.kill('SIGKILL');
    await a.proc.waitFor((e) => e.event === 'down' && (e.member as { name: string }).name === 'c', 5000, 'c down');
    a.proc.send({ cmd: 'kvSet', key: 'while-c-was-away', value: true });
    const c2 = await cluster.startMesh('c2', { name: 'c', peers: [a.id.address] });
    await c2.proc.waitFor(isUp('a'), 8000, 'a up on c2');
    c2.proc.send({ cmd: 'kvStart' });
    await converge([a.proc, b.proc, c2.proc], { x: 1, y: 'from-b', z: [1, 2, 3], shared, 'while-c-was-away': true });
    // And its writes after the restart reach everyone.
    c2.proc.send({ cmd: 'kvSet', key: 'after-restart', value: 'c2' });
    await converge([a.proc, b.proc, c2.proc], { x: 1, y: 'from-b', z: [1, 2, 3], shared, 'while-c-was-away': true, 'after-restart': 'c2' });
  });

  it('resyncs a peer whose link was replaced', async () => {
    const b = await cluster.startMesh('b', { name: 'b' });
    const a = await cluster.startMesh('a', { name: 'a', peers: [b.id.address] });
    await a.proc.waitFor(isUp('b'), 8000, 'b up');
    a.proc.send({ cmd: 'kvStart' });
    b.proc.send({ cmd: 'kvStart' });
    a.proc.send({ cmd: 'kvSet', key: 'k', value: 'v' });
    await converge([a.proc, b.proc], { k: 'v' });
    a.proc.send({ cmd: 'redial', address: b.id.address });
    await a.proc.waitFor((e) => e.event === 'link-replaced', 5000, 'link-replaced');
    await converge([a.proc, b.proc], { k: 'v' });
    const d = await dump(a.proc);
    expect(d.resyncs.replaced).toBe(1);
  });
});
