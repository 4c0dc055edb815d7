/**
 * node.processes on real Foundation nodes (the built dist/) linked over loopback in this process:
 * placement of children, calls by name from any node, singletons (one runs; a graceful stop hands
 * it off with its state), replicated workers (one per node, including a node that joins later),
 * errors for unknown names and types, explain, and active rebalancing.
 * Crashes (kill -9, SIGSTOP) need separate processes: test/process/processes-failover.test.ts.
 */
import { afterEach, describe, expect, it } from 'vitest';
import type { FoundationNode } from '../../src/api.js';
import type { WorkerSpec } from '../../src/processes/worker.js';
import { waitFor } from '../compliance/pubsub-adapter-compliance.js';
import { silentLogger } from '../helpers/pubsub-hub.js';
import { requireBuild } from '../helpers/requires.js';

const skip = requireBuild('processes on real nodes');
const DIST = '../../dist/index.js';
/** The composition root's internal `meshOf`, to send what a broken peer would. */
const DIST_FOUNDATION = '../../dist/foundation.js';
const SECRET = 'processes-test-secret-0123456789abcdef';
let nodes: FoundationNode[] = [];
let run = 0;

afterEach(async () => {
  await Promise.all(nodes.map((n) => n.stop()));
  nodes = [];
});

/** A counter: `call('get')`, `call({ add })`, `cast({ add })`; hands its count over on a graceful move. */
const counter: WorkerSpec<{ n: number; node: string; handedOver: boolean; token?: number }, { start?: number } | null> = {
  init: (args, ctx) => ({
    n: (ctx.handoff as number | undefined) ?? args?.start ?? 0,
    node: ctx.node,
    handedOver: ctx.handoff !== undefined,
    token: ctx.fencingToken,
  }),
  handleCall: (msg, s) => {
    if (msg === 'get') return { reply: { n: s.n, node: s.node, handedOver: s.handedOver, token: s.token } };
    const add = (msg as { add: number }).add;
    return { reply: s.n + add, state: { ...s, n: s.n + add } };
  },
  handleCast: (msg, s) => ({ ...s, n: s.n + (msg as { add: number }).add }),
  handoff: (s) => s.n,
};

let clusterName = '';

async function startNode(name: string, hosts: string[], http = false): Promise<FoundationNode> {
  const { Foundation } = (await import(DIST)) as typeof import('../../src/index.js');
  const node = await Foundation.start({
    name,
    clusterName,
    secret: SECRET,
    host: '127.0.0.1',
    logger: silentLogger,
    ...(http ? { http: { port: 0 } } : {}),
    ...(hosts.length > 0 ? { cluster: { strategy: 'static', hosts } } : {}),
  });
  node.processes.define('counter', counter);
  nodes.push(node);
  return node;
}

/** The nodes p1..pn (typed as at least three; a 2-node cluster leaves the third undefined and unused). */
async function cluster(n: number): Promise<[FoundationNode, FoundationNode, FoundationNode]> {
  clusterName = `processes-${process.pid}-${++run}`;
  const out: FoundationNode[] = [];
  for (let i = 1; i <= n; i++)
    out.push(
      await startNode(
        `p${i}`,
        out.map((x) => x.id.address),
      ),
    );
  await waitFor(() => out.every((x) => x.cluster.members().length === n - 1), 'a full mesh', 10_000);
  return out as [FoundationNode, FoundationNode, FoundationNode];
}

const running = (ns: FoundationNode[]) => ns.reduce((sum, x) => sum + x.processes.stats().running, 0);

describe.skipIf(skip !== undefined)('processes on real nodes', () => {
  it('startChild places by rendezvous over nodes that defined the type; call and cast by name work from every node', async () => {
    const [a, b, c] = await cluster(3);
    const refs = await Promise.all(Array.from({ length: 30 }, (_, i) => a.processes.startChild('counter', { start: i }, { name: `c${i}` })));
    const perNode = new Map<string, number>();
    for (const r of refs) perNode.set(r.node, (perNode.get(r.node) ?? 0) + 1);
    expect(perNode.size).toBe(3);
    await waitFor(() => [a, b, c].every((x) => refs.every((r) => x.processes.whereis(r.name)?.node === r.node)), 'every node sees every child', 5000);
    expect(await c.processes.call('c7', 'get')).toMatchObject({ n: 7, node: refs[7]?.node });
    expect(await b.processes.call('c7', { add: 5 })).toBe(12);
    await a.processes.cast('c7', { add: 1 });
    expect(await a.processes.call('c7', 'get')).toMatchObject({ n: 13 });
    expect(running([a, b, c])).toBe(30);
    const list = b.processes.list().filter((p) => p.kind === 'child');
    expect(list).toHaveLength(30);
    const ex = await b.processes.explain('c7');
    expect(ex).toMatchObject({ kind: 'child', type: 'counter', node: refs[7]?.node, restarts: 0 });
    expect(ex.candidates[0]).toBe(refs[7]?.node);
    expect(ex.registry?.node).toBe(refs[7]?.node);
  });

  it('a name that does not exist fails fast with FOUNDATION_NO_SUCH_WORKER; an undefined type with FOUNDATION_WORKER_TYPE_UNKNOWN', async () => {
    const [a] = await cluster(2);
    const t0 = Date.now();
    await expect(a.processes.call('nobody', 'get', { timeoutMs: 5000 })).rejects.toMatchObject({ code: 'FOUNDATION_NO_SUCH_WORKER' });
    expect(Date.now() - t0).toBeLessThan(1000);
    await expect(a.processes.startChild('no-such-type')).rejects.toMatchObject({ code: 'FOUNDATION_WORKER_TYPE_UNKNOWN' });
    await expect(a.processes.startSingleton('s', 'no-such-type')).rejects.toMatchObject({ code: 'FOUNDATION_WORKER_TYPE_UNKNOWN' });
    expect(() => a.processes.define('counter', counter)).toThrow(/already defined/);
    await expect(a.processes.startChild('counter', { f: () => 1 })).rejects.toMatchObject({ code: 'FOUNDATION_NOT_SERIALIZABLE' });
    await a.processes.startChild('counter', null, { name: 'dup' });
    await expect(a.processes.startChild('counter', null, { name: 'dup' })).rejects.toMatchObject({ code: 'FOUNDATION_NAME_REGISTERED' });
    a.registry.register('plain-name');
    await expect(a.processes.call('plain-name', 'get')).rejects.toMatchObject({ code: 'FOUNDATION_NO_SUCH_WORKER' });
  });

  it('a singleton declared on every node runs exactly once; a graceful stop of its host hands it off with its state', async () => {
    const all = await cluster(3);
    for (const x of all) await x.processes.startSingleton('leader', 'counter', { start: 100 });
    await waitFor(() => all.every((x) => x.processes.whereis('leader') !== undefined), 'the singleton registered everywhere', 5000);
    // Stable: still one instance after placement had time to run everywhere.
    await new Promise((r) => setTimeout(r, 300));
    expect(all.filter((x) => x.processes.stats().running === 1)).toHaveLength(1);
    const host = all.find((x) => x.processes.stats().running === 1) as FoundationNode;
    const other = all.find((x) => x !== host) as FoundationNode;
    expect(await other.processes.call('leader', { add: 5 })).toBe(105);
    await host.stop();
    nodes = nodes.filter((x) => x !== host);
    const rest = all.filter((x) => x !== host);
    await waitFor(() => rest.some((x) => x.processes.stats().running === 1), 'the singleton on a survivor', 5000);
    const state = (await other.processes.call('leader', 'get', { timeoutMs: 3000 })) as { n: number; handedOver: boolean; node: string };
    expect(state).toMatchObject({ n: 105, handedOver: true });
    expect(state.node).not.toBe(host.id.name);
    expect(rest.reduce((s, x) => s + x.processes.stats().handoffsIn, 0)).toBe(1);
    expect(running(rest)).toBe(1);
  });

  it("a 'quorum' singleton runs once with a fencing token; a graceful stop of its host moves it on with a higher token", async () => {
    const all = await cluster(3);
    for (const x of all) await x.processes.startSingleton('ledger', 'counter', { start: 1 }, { consistency: 'quorum', clusterSize: 3, leaseMs: 1000 });
    await waitFor(() => all.filter((x) => x.processes.stats().running === 1).length === 1, 'one holder runs it', 10_000);
    const host = all.find((x) => x.processes.stats().running === 1) as FoundationNode;
    const other = all.find((x) => x !== host) as FoundationNode;
    await waitFor(() => other.processes.whereis('ledger') !== undefined, 'registered', 5000);
    const first = (await other.processes.call('ledger', 'get')) as { token: number };
    expect(Number.isSafeInteger(first.token) && first.token > 0).toBe(true);
    const ex = await other.processes.explain('ledger');
    expect(ex).toMatchObject({ kind: 'singleton', consistency: 'quorum', node: host.id.name, fencingToken: first.token });
    const t0 = Date.now();
    await host.stop();
    nodes = nodes.filter((x) => x !== host);
    const rest = all.filter((x) => x !== host);
    await waitFor(() => rest.some((x) => x.processes.stats().running === 1), 'a successor holds it', 10_000);
    console.log(`[processes] quorum singleton after a graceful stop: running again in ${Date.now() - t0} ms`);
    const second = (await other.processes.call('ledger', 'get', { timeoutMs: 5000 })) as { token: number; node: string };
    expect(second.node).not.toBe(host.id.name);
    expect(second.token).toBeGreaterThan(first.token);
    expect(running(rest)).toBe(1);
    await expect(other.processes.startSingleton('x', 'counter', null, { consistency: 'quorum' })).rejects.toMatchObject({ code: 'FOUNDATION_CONFIG_INVALID' });
  });

  it('startReplicated runs name@node on every node, and on a node that joins later', async () => {
    const [a, b, c] = await cluster(3);
    const refs = await a.processes.startReplicated('cache', 'counter', { start: 1 });
    expect(refs.map((r) => r.name).sort()).toEqual(['cache@p1', 'cache@p2', 'cache@p3']);
    // Visible on other nodes once replicated (a name not seen yet fails fast: FOUNDATION_NO_SUCH_WORKER).
    await b.registry.awaitRegistered('cache@p3', { timeoutMs: 3000 });
    expect(await b.processes.call('cache@p3', 'get')).toMatchObject({ node: 'p3', n: 1 });
    const d = await startNode('p4', [a.id.address]);
    await waitFor(() => d.processes.whereis('cache@p4')?.node === 'p4', 'the copy on the node that joined', 10_000);
    await waitFor(() => c.processes.whereis('cache@p4') !== undefined, 'the new copy seen elsewhere', 5000);
    expect([a, b, c, d].map((x) => x.processes.stats().running)).toEqual([1, 1, 1, 1]);
    await b.processes.stopReplicated('cache');
    await waitFor(() => [a, b, c, d].every((x) => x.processes.stats().running === 0), 'every copy stopped', 5000);
    await new Promise((r) => setTimeout(r, 300));
    expect([a, b, c, d].every((x) => x.processes.stats().running === 0)).toBe(true);
  });

  it('a transient child that ends normally is gone everywhere; stopChild stops one wherever it runs', async () => {
    const [a, b] = await cluster(2);
    const once: WorkerSpec<number, null> = {
      init: (_args, ctx) => {
        setTimeout(() => ctx.stop('normal'), 50);
        return 0;
      },
    };
    a.processes.define('once', once);
    b.processes.define('once', once);
    await a.processes.startChild('once', null, { name: 'o1', restart: 'transient' });
    await waitFor(() => a.processes.whereis('o1') === undefined && b.processes.whereis('o1') === undefined, 'the ended child gone', 5000);
    await expect(b.processes.call('o1', 'x')).rejects.toMatchObject({ code: 'FOUNDATION_NO_SUCH_WORKER' });
    const ref = await b.processes.startChild('counter', null, { name: 'k1' });
    expect(await a.processes.stopChild('k1')).toBe(true);
    await waitFor(() => a.processes.whereis('k1') === undefined && b.processes.whereis('k1') === undefined, 'the stopped child gone', 5000);
    expect(ref.node === 'p1' || ref.node === 'p2').toBe(true);
    expect(await a.processes.stopChild('k1')).toBe(false);
  });

  it('malformed process-table messages and requests from a peer are dropped and counted; the node keeps placing and answering', async () => {
    const [a, b] = await cluster(2);
    const { meshOf } = (await import(DIST_FOUNDATION)) as typeof import('../../src/foundation.js');
    const mesh = meshOf(b);
    if (!mesh) throw new Error('no mesh behind the node');
    for (const junk of [null, 42, 'x', { t: 'delta' }, { t: 'full', inc: 1, ver: 1, entries: [['c:x', { k: 'child' }]] }])
      mesh.send('p1', '$proc.table', junk, 'control');
    const replies = await Promise.all(
      [null, { t: 'call' }, { t: 'call', name: 'x', msg: 1, timeoutMs: -1 }, { t: 'start-child', name: 'y', spec: null }, { t: 'nope', name: 'z' }].map(
        (junk) => mesh.request<{ ok: boolean; code?: string }>('p1', '$proc.rpc', junk, 'control', 2000),
      ),
    );
    for (const r of replies) expect(r).toMatchObject({ ok: false, code: 'FOUNDATION_CONFIG_INVALID' });
    await waitFor(() => a.processes.stats().messagesDropped === 10, 'ten messages dropped', 5000);
    const ref = await b.processes.startChild('counter', { start: 5 }, { name: 'after-junk' });
    expect(await b.processes.call(ref.name, 'get')).toMatchObject({ n: 5 });
  });

  it('GET /processes lists what runs where; /metrics carries the processes counters', async () => {
    clusterName = `processes-${process.pid}-${++run}`;
    const a = await startNode('h1', [], true);
    await a.processes.startSingleton('leader', 'counter', null);
    await a.processes.startChild('counter', null, { name: 'job-1' });
    await waitFor(() => a.processes.list().length === 2, 'both workers listed', 5000);
    const body = (await (await fetch(`http://${a.httpAddress}/processes`)).json()) as { node: string; workers: unknown[]; stats: { running: number } };
    expect(body.node).toBe('h1');
    expect(body.stats.running).toBe(2);
    expect(body.workers).toEqual(
      expect.arrayContaining([
        { name: 'leader', node: 'h1', kind: 'singleton', type: 'counter' },
        { name: 'job-1', node: 'h1', kind: 'child', type: 'counter' },
      ]),
    );
    const text = await (await fetch(`http://${a.httpAddress}/metrics`)).text();
    expect(text).toMatch(/^foundation_processes_running 2$/m);
    expect(text).toMatch(/^foundation_processes_events_total\{type="failover"\} 0$/m);
    expect(text).toMatch(/^foundation_processes_mailbox_depth\{stat="max"\} 0$/m);
  });

  it("rebalance 'active' moves children to a node that joins, with their state; 'passive' children stay", async () => {
    const [a, b] = await cluster(2);
    const active = await Promise.all(
      Array.from({ length: 20 }, (_, i) => a.processes.startChild('counter', { start: i }, { name: `act${i}`, rebalance: 'active' })),
    );
    const passive = await Promise.all(Array.from({ length: 20 }, (_, i) => a.processes.startChild('counter', { start: i }, { name: `pas${i}` })));
    for (const r of active) await a.processes.call(r.name, { add: 1000 });
    const c = await startNode('p3', [a.id.address, b.id.address]);
    // Rendezvous gives the new node about a third of the names; every active one it wins moves there.
    const { ownerOf } = await import('../../src/processes/placement.js');
    const moving = active.filter((r) => ownerOf(r.name, ['p1', 'p2', 'p3']) === 'p3');
    expect(moving.length).toBeGreaterThan(0);
    await waitFor(() => moving.every((r) => c.processes.whereis(r.name)?.node === 'p3'), 'active children on the new node', 10_000);
    for (const r of moving) {
      const s = (await b.processes.call(r.name, 'get')) as { n: number; handedOver: boolean };
      expect(s).toMatchObject({ n: Number(r.name.slice(3)) + 1000, handedOver: true });
    }
    for (const r of passive) expect(c.processes.whereis(r.name)?.node).toBe(r.node);
    expect(running([a, b, c])).toBe(40);
  });
});
