/**
 * node.registry on real Foundation nodes (the built dist/) linked over loopback in this process:
 * visibility on every node, lookups, select/match/count, unregister, a departing node's names,
 * refusals, awaitRegistered, and resync after a restart.
 */
import { afterEach, describe, expect, it } from 'vitest';
import type { FoundationNode } from '../../src/api.js';
import type { NameEvent } from '../../src/registry/registry.js';
import { waitFor } from '../compliance/pubsub-adapter-compliance.js';
import { silentLogger } from '../helpers/pubsub-hub.js';
import { requireBuild } from '../helpers/requires.js';

const skip = requireBuild('registry on real nodes');
const DIST = '../../dist/index.js';
const SECRET = 'registry-test-secret-0123456789abcdef';
let nodes: FoundationNode[] = [];
let run = 0;

afterEach(async () => {
  await Promise.all(nodes.map((n) => n.stop()));
  nodes = [];
});

async function startNode(name: string, clusterName: string, hosts: string[]): Promise<FoundationNode> {
  const { Foundation } = (await import(DIST)) as typeof import('../../src/index.js');
  const node = await Foundation.start({
    name,
    clusterName,
    secret: SECRET,
    host: '127.0.0.1',
    logger: silentLogger,
    ...(hosts.length > 0 ? { cluster: { strategy: 'static', hosts } } : {}),
  });
  nodes.push(node);
  return node;
}

let clusterName = '';

async function cluster(n: number): Promise<FoundationNode[]> {
  clusterName = `registry-${process.pid}-${++run}`;
  const out: FoundationNode[] = [];
  for (let i = 1; i <= n; i++)
    out.push(
      await startNode(
        `g${i}`,
        clusterName,
        out.map((x) => x.id.address),
      ),
    );
  await waitFor(() => out.every((x) => x.cluster.members().length === n - 1), 'a full mesh', 10_000);
  return out;
}

describe.skipIf(skip !== undefined)('registry on real nodes', () => {
  it('a registration is visible on every node; lookups, select, match and count read local state', async () => {
    const [a, b, c] = (await cluster(3)) as FoundationNode[];
    const events: NameEvent[] = [];
    c?.registry.watch((e) => events.push(e));
    a?.registry.register('room:1', { kind: 'room', shard: 1 });
    a?.registry.register('room:2', { kind: 'room', shard: 2 });
    b?.registry.register('scheduler', { kind: 'job' });
    const owner = await c?.registry.awaitRegistered('scheduler', { timeoutMs: 2000 });
    expect(owner).toMatchObject({ name: 'scheduler', node: 'g2', meta: { kind: 'job' } });
    await waitFor(() => c?.registry.count() === 3, 'three names on c');
    expect(c?.registry.lookup('room:1')).toMatchObject({ node: 'g1', meta: { kind: 'room', shard: 1 } });
    expect(c?.registry.select('room:*').map((o) => o.name)).toEqual(['room:1', 'room:2']);
    expect(c?.registry.match({ kind: 'room', shard: 2 }).map((o) => o.name)).toEqual(['room:2']);
    expect(
      events
        .filter((e) => e.type === 'register')
        .map((e) => (e.type === 'register' ? e.owner.name : ''))
        .sort(),
    ).toEqual(['room:1', 'room:2', 'scheduler']);
    // Unregister reaches everyone.
    expect(a?.registry.unregister('room:2')).toBe(true);
    await waitFor(() => b?.registry.lookup('room:2') === undefined && c?.registry.lookup('room:2') === undefined, 'room:2 gone everywhere');
    expect(events.at(-1)).toEqual({ type: 'unregister', name: 'room:2', node: 'g1' });
    const text = await (c as FoundationNode).metrics.metrics();
    expect(text).toContain('foundation_registry_names{scope="cluster"} 2');
    expect(text).toContain('foundation_registry_events_total{type="register"} 3');
    expect(text).toContain('foundation_registry_events_total{type="unregister"} 1');
  });

  it('refuses a name that is taken, and frees the names of a node that leaves', async () => {
    const [a, b, c] = (await cluster(3)) as FoundationNode[];
    a?.registry.register('cache', null);
    await b?.registry.awaitRegistered('cache', { timeoutMs: 2000 });
    expect(() => b?.registry.register('cache', null)).toThrowError(
      expect.objectContaining({ code: 'FOUNDATION_NAME_REGISTERED', owner: expect.objectContaining({ node: 'g1' }) }),
    );
    expect(() => a?.registry.register('cache', null)).toThrowError(/already registered by this node/);
    expect(() => a?.registry.register('', null)).toThrowError(expect.objectContaining({ key: 'name' }));
    expect(() => a?.registry.register('fn', { f: () => 1 })).toThrowError(expect.objectContaining({ code: 'FOUNDATION_NOT_SERIALIZABLE' }));
    await expect(c?.registry.awaitRegistered('never', { timeoutMs: 50 })).rejects.toMatchObject({ code: 'FOUNDATION_REGISTRY_TIMEOUT' });
    await a?.stop();
    await waitFor(() => b?.registry.lookup('cache') === undefined && c?.registry.lookup('cache') === undefined, "the departed node's name to go", 5000);
    expect(b?.registry.register('cache', null)).toMatchObject({ node: 'g2' });
  });

  it('the loser of a conflict withdraws at once: when the winner lets the name go, nobody resolves it to the loser', async () => {
    const [a, b, c] = (await cluster(3)) as FoundationNode[];
    // Both register before either hears of the other: a conflict, as two sides of a partition make.
    a?.registry.register('leader', null);
    b?.registry.register('leader', null);
    const agreed = () => {
      const owners = new Set([a, b, c].map((n) => n?.registry.lookup('leader')?.node));
      return owners.size === 1 && !owners.has(undefined);
    };
    await waitFor(agreed, 'every node to agree on one owner', 2000);
    const winner = a?.registry.lookup('leader')?.node === 'g1' ? (a as FoundationNode) : (b as FoundationNode);
    const loser = winner === a ? (b as FoundationNode) : (a as FoundationNode);
    // The loser's withdrawal used to wait for its next digest (up to 2 s): until then the others
    // held its registration and gave it the name when the winner let go (a singleton handed off on
    // a graceful stop was refused by its successor for it).
    await new Promise((r) => setTimeout(r, 100));
    const seenByC: NameEvent[] = [];
    c?.registry.watch((e) => seenByC.push(e));
    winner.registry.unregister('leader');
    await waitFor(() => [a, b, c].every((n) => n?.registry.lookup('leader') === undefined), 'the name to be free everywhere', 1000);
    expect(seenByC).toEqual([{ type: 'unregister', name: 'leader', node: winner.id.name }]);
    expect(loser.registry.register('leader', null)).toMatchObject({ node: loser.id.name });
  });

  it('a node that starts late gets every registration', async () => {
    const [a, b] = (await cluster(2)) as FoundationNode[];
    for (let i = 0; i < 200; i++) a?.registry.register(`job:${i}`, { i });
    await waitFor(() => b?.registry.count() === 200, 'b to see 200');
    const late = await startNode('g9', clusterName, [(a as FoundationNode).id.address]);
    await waitFor(() => late.registry.count() === 200, 'the late node to see 200', 5000);
    expect(late.registry.lookup('job:199')).toMatchObject({ node: 'g1', meta: { i: 199 } });
  });
});
