/**
 * node.presence across real processes (test/helpers/layer-proc.mjs, the built library, loopback):
 * tracks on 3 nodes listed the same everywhere, with join diffs; and a node killed
 * with kill -9 whose presences leave every survivor's list within detection time, with leave diffs.
 */
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import type { FoundationNode } from '../../src/api.js';
import type { PresenceDiff, PresenceList } from '../../src/services/presence.js';
import { waitFor } from '../compliance/pubsub-adapter-compliance.js';
import type { NodeProc } from '../helpers/cluster.js';
import { ask, LayerCluster, until } from '../helpers/layer-cluster.js';
import { silentLogger } from '../helpers/pubsub-hub.js';
import { requireBuild } from '../helpers/requires.js';

const PROC = fileURLToPath(new URL('../helpers/layer-proc.mjs', import.meta.url));
const skip = requireBuild('presence multi-process tests');
const SECRET = 'presence-process-test-secret-0123456789';
const DIST = '../../dist/index.js';
const nodes = new LayerCluster({ script: PROC, secret: SECRET, prefix: 'presence-proc' });

afterEach(() => nodes.killAll());

const cluster = async (n: number): Promise<NodeProc[]> => (await nodes.start(n, 'r')).procs;

const list = async (p: NodeProc, topic: string) => (await ask(p, { cmd: 'presence-list', topic }, 'presence-list')).list as PresenceList;
/** A list as `key: node=meta.device` strings, sorted: easy to compare across nodes. */
const flat = (l: PresenceList) =>
  Object.entries(l)
    .flatMap(([key, { metas }]) => metas.map((m) => `${key}:${m.node}=${(m.meta as { device?: string } | null)?.device}`))
    .sort();

describe.skipIf(skip !== undefined)('presence across processes', () => {
  it('tracks on 3 nodes are listed alike everywhere; kill -9 of one takes its presences off every survivor within detection time, with leave diffs', async () => {
    const [a, b, c] = (await cluster(3)) as NodeProc[];
    const nodes = [a, b, c] as NodeProc[];
    for (const p of nodes) await ask(p, { cmd: 'presence-watch', topic: 'room:lobby' }, 'presence-watching');
    await ask(a as NodeProc, { cmd: 'presence-track', topic: 'room:lobby', key: 'alice', meta: { device: 'phone' } }, 'presence-tracked');
    await ask(b as NodeProc, { cmd: 'presence-track', topic: 'room:lobby', key: 'bob', meta: { device: 'laptop' } }, 'presence-tracked');
    await ask(c as NodeProc, { cmd: 'presence-track', topic: 'room:lobby', key: 'alice', meta: { device: 'tablet' } }, 'presence-tracked');
    await ask(c as NodeProc, { cmd: 'presence-track', topic: 'room:other', key: 'carol', meta: { device: 'tv' } }, 'presence-tracked');
    const want = ['alice:r1=phone', 'alice:r3=tablet', 'bob:r2=laptop'];
    await until(async () => {
      for (const p of nodes) if (JSON.stringify(flat(await list(p, 'room:lobby'))) !== JSON.stringify(want)) return false;
      return true;
    }, 'every node to list the 3 presences');
    // Grouped by key, metas by node (Phoenix's shape).
    const l = await list(b as NodeProc, 'room:lobby');
    expect(Object.keys(l)).toEqual(['alice', 'bob']);
    expect(l.alice?.metas.map((m) => m.node)).toEqual(['r1', 'r3']);
    expect(flat(await list(a as NodeProc, 'room:other'))).toEqual(['carol:r3=tv']);
    // Every node saw the three joins through its diffs (its own included).
    for (const p of nodes) {
      const joins = p.events
        .filter((e) => e.event === 'presence-diff')
        .flatMap((e) => Object.entries((e.diff as PresenceDiff).joins).flatMap(([key, { metas }]) => metas.map((m) => `${key}:${m.node}`)));
      expect(joins.sort(), `${p.label}'s joins`).toEqual(['alice:r1', 'alice:r3', 'bob:r2']);
    }

    // kill -9 of r3: its presences leave every survivor's list, and leave diffs fire there.
    const t0 = Date.now();
    (c as NodeProc).kill('SIGKILL');
    const left = await Promise.all(
      [a, b].map((p) =>
        (p as NodeProc).waitForNext(
          (e) => e.event === 'presence-diff' && Object.values((e.diff as PresenceDiff).leaves).some(({ metas }) => metas.some((m) => m.node === 'r3')),
          10_000,
          'a leave diff of r3',
        ),
      ),
    );
    const ms = Math.max(...left.map((e) => e.at)) - t0;
    console.log(`[presence] r3 killed: its presences left both survivors in ${ms} ms`);
    for (const e of left) expect((e.diff as PresenceDiff).leaves).toMatchObject({ alice: { metas: [{ node: 'r3', meta: { device: 'tablet' } }] } });
    // Connection-closed detection is milliseconds on loopback; the bound leaves room for a loaded 2-core machine.
    expect(ms).toBeLessThan(3000);
    for (const p of [a, b] as NodeProc[]) {
      expect(flat(await list(p, 'room:lobby'))).toEqual(['alice:r1=phone', 'bob:r2=laptop']);
      expect(await list(p, 'room:other')).toEqual({});
    }
  });
});

describe.skipIf(skip !== undefined)('presence on real nodes in this process', () => {
  let inProcess: FoundationNode[] = [];
  afterEach(async () => {
    await Promise.all(inProcess.map((n) => n.stop()));
    inProcess = [];
  });

  it('update and untrack reach the other node as diffs; refusals carry their codes; a node that stops takes its presences along', async () => {
    const { Foundation } = (await import(DIST)) as typeof import('../../src/index.js');
    const base = { clusterName: `presence-inproc-${process.pid}`, secret: SECRET, host: '127.0.0.1', logger: silentLogger };
    const a = await Foundation.start({ ...base, name: 'q1' });
    inProcess.push(a);
    const b = await Foundation.start({ ...base, name: 'q2', cluster: { strategy: 'static', hosts: [a.id.address] } });
    inProcess.push(b);
    await waitFor(() => a.cluster.members().length === 1 && b.cluster.members().length === 1, 'a 2-node mesh', 10_000);
    const diffs: PresenceDiff[] = [];
    b.presence.onDiff('doc:1', (d) => diffs.push(d));
    const first = a.presence.track('doc:1', 'alice', { cursor: 1 });
    await waitFor(() => b.presence.get('doc:1', 'alice').length === 1, 'the track on b');
    const second = a.presence.update('doc:1', 'alice', { cursor: 2 });
    await waitFor(() => b.presence.get('doc:1', 'alice')[0]?.ref === second.ref, 'the update on b');
    expect(b.presence.list('doc:1')).toEqual({ alice: { metas: [{ node: 'q1', ref: second.ref, meta: { cursor: 2 } }] } });
    expect(diffs.at(-1)).toEqual({
      topic: 'doc:1',
      joins: { alice: { metas: [{ node: 'q1', ref: second.ref, meta: { cursor: 2 } }] } },
      leaves: { alice: { metas: [{ node: 'q1', ref: first.ref, meta: { cursor: 1 } }] } },
    });
    expect(() => a.presence.track('doc:1', 'alice', {})).toThrowError(expect.objectContaining({ code: 'FOUNDATION_PRESENCE_TRACKED' }));
    expect(() => b.presence.update('doc:1', 'alice', {})).toThrowError(expect.objectContaining({ code: 'FOUNDATION_PRESENCE_NOT_TRACKED' }));
    expect(() => a.presence.track('', 'x')).toThrowError(expect.objectContaining({ key: 'topic' }));
    expect(() => a.presence.track('doc:1', 'fn', { f: () => 1 })).toThrowError(expect.objectContaining({ code: 'FOUNDATION_NOT_SERIALIZABLE' }));
    expect(a.presence.untrack('doc:1', 'alice')).toBe(true);
    expect(a.presence.untrack('doc:1', 'alice')).toBe(false);
    await waitFor(() => Object.keys(b.presence.list('doc:1')).length === 0, 'the untrack on b');
    expect(diffs.at(-1)?.leaves.alice?.metas.map((m) => m.ref)).toEqual([second.ref]);
    // A graceful stop: b drops what a tracked, with a leave diff.
    a.presence.track('doc:1', 'bob', null);
    await waitFor(() => b.presence.get('doc:1', 'bob').length === 1, 'bob on b');
    expect(b.presence.stats()).toMatchObject({ presences: 1, own: 0 });
    const text = await b.metrics.metrics();
    expect(text).toContain('foundation_presence_presences{scope="cluster"} 1');
    await a.stop();
    await waitFor(() => b.presence.list('doc:1').bob === undefined, "the stopped node's presence to leave", 5000);
    expect(diffs.at(-1)?.leaves.bob?.metas.map((m) => m.node)).toEqual(['q1']);
    expect(b.presence.topics()).toEqual([]);
  });
});
