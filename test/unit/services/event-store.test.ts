/**
 * The event store and event order of `node.events`: the bound, de-duplication by id, filters,
 * the HLC order (causal across skewed clocks), and the merge a cluster-wide query does over
 * overlapping, shuffled answers from several nodes.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { type HlcStamp, HybridClock } from '../../../src/registry/hlc.js';
import { compareEvents, EventStore, type FoundationEvent, isAfter, mergeEvents, parseEvent } from '../../../src/services/events/store.js';

function ev(node: string, seq: number, hlc: HlcStamp, type = 'user.created', scope: 'cluster' | 'local' = 'cluster'): FoundationEvent {
  return { id: `${node}:1:${scope === 'cluster' ? 'd' : 'l'}${seq}`, type, data: { seq }, node, incarnation: 1, seq, hlc, scope };
}

const everyType = () => true;

describe('event store', () => {
  it('holds at most its capacity, pushing out the oldest arrival, and counts what it pushed out', () => {
    const s = new EventStore(3);
    for (let i = 1; i <= 5; i++) s.add(ev('a', i, [i, 0]));
    expect(s.size).toBe(3);
    expect(s.evicted).toBe(2);
    expect(s.query({}, everyType, 10).events.map((e) => e.seq)).toEqual([3, 4, 5]);
    expect(s.has('a:1:d1')).toBe(false);
    expect(() => new EventStore(0)).toThrow(RangeError);
  });

  it('keeps one copy of an id', () => {
    const s = new EventStore(10);
    expect(s.add(ev('a', 1, [1, 0]))).toBe(true);
    expect(s.add(ev('a', 1, [1, 0]))).toBe(false);
    expect(s.size).toBe(1);
  });

  it('filters by node, by time (wall ms and stamps, both inclusive) and by type, and keeps the newest `limit`', () => {
    const s = new EventStore(100);
    s.add(ev('a', 1, [100, 0], 'user.created'));
    s.add(ev('b', 1, [100, 1], 'user.deleted'));
    s.add(ev('a', 2, [200, 0], 'order.placed'));
    s.add(ev('b', 2, [300, 0], 'user.created'));
    const ids = (r: { events: FoundationEvent[] }) => r.events.map((e) => e.id);
    expect(ids(s.query({ node: 'a' }, everyType, 10))).toEqual(['a:1:d1', 'a:1:d2']);
    expect(ids(s.query({ since: 200 }, everyType, 10))).toEqual(['a:1:d2', 'b:1:d2']);
    expect(ids(s.query({ since: [100, 0] }, everyType, 10))).toEqual(['a:1:d1', 'b:1:d1', 'a:1:d2', 'b:1:d2']);
    expect(ids(s.query({ since: [100, 1] }, everyType, 10))).toEqual(['b:1:d1', 'a:1:d2', 'b:1:d2']);
    // Inclusive: another node's event with the same stamp is not skipped.
    const tie = new EventStore(10);
    for (const e of [ev('b', 1, [100, 1]), ev('c', 1, [100, 1]), ev('a', 1, [100, 0])]) tie.add(e);
    expect(ids(tie.query({ since: [100, 1] }, everyType, 10))).toEqual(['b:1:d1', 'c:1:d1']);
    expect(ids(s.query({}, (t) => t.startsWith('user.'), 10))).toEqual(['a:1:d1', 'b:1:d1', 'b:1:d2']);
    expect(s.query({}, everyType, 2)).toEqual({ events: [s.query({}, everyType, 10).events[2], s.query({}, everyType, 10).events[3]], truncated: true });
    expect(isAfter(ev('a', 1, [5, 0]), undefined)).toBe(true);
  });

  it('refuses malformed events from the wire', () => {
    const good = ev('a', 1, [1, 0]);
    expect(parseEvent(JSON.parse(JSON.stringify(good)))).toEqual(good);
    for (const bad of [
      null,
      'x',
      { ...good, id: '' },
      { ...good, seq: -1 },
      { ...good, seq: 1.5 },
      { ...good, hlc: [1] },
      { ...good, hlc: [-1, 0] },
      { ...good, scope: 'everywhere' },
      { ...good, node: 7 },
      { ...good, type: '' },
    ]) {
      expect(parseEvent(bad), JSON.stringify(bad)).toBeUndefined();
    }
  });
});

describe('event order and de-duplication', () => {
  it('orders by HLC stamp, then origin node, then sequence number', () => {
    const list = [ev('b', 1, [10, 0]), ev('a', 2, [10, 0]), ev('a', 1, [9, 5]), ev('a', 3, [10, 1])];
    expect([...list].sort(compareEvents).map((e) => e.id)).toEqual(['a:1:d1', 'a:1:d2', 'b:1:d1', 'a:1:d3']);
  });

  it('orders an event after every event its origin had seen, however skewed the wall clocks', () => {
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.nat(2), fc.boolean(), fc.integer({ min: 0, max: 50 })), { minLength: 1, maxLength: 60 }),
        fc.tuple(fc.integer({ min: -5000, max: 5000 }), fc.integer({ min: -5000, max: 5000 })),
        (steps, [skewB, skewC]) => {
          let t = 1_000_000;
          const skews = [0, skewB, skewC];
          const nodes = ['a', 'b', 'c'];
          const clocks = skews.map((skew) => new HybridClock(() => t + skew));
          const seqs = [0, 0, 0];
          // What each node has seen (it observes the latest event of the cluster when `observe` is set).
          const emitted: FoundationEvent[] = [];
          const seenBy: FoundationEvent[][] = [[], [], []];
          for (const [n, observe, dt] of steps) {
            t += dt;
            const clock = clocks[n] as HybridClock;
            if (observe && emitted.length > 0) {
              const last = emitted[emitted.length - 1] as FoundationEvent;
              clock.observe(last.hlc);
              (seenBy[n] as FoundationEvent[]).push(last);
            }
            const e = ev(nodes[n] as string, ++(seqs[n] as number), clock.tick());
            for (const before of seenBy[n] as FoundationEvent[]) expect(compareEvents(before, e), `${e.id} orders after ${before.id}`).toBeLessThan(0);
            (seenBy[n] as FoundationEvent[]).push(e);
            emitted.push(e);
          }
          // Per origin, the order is the sequence order.
          const sorted = [...emitted].sort(compareEvents);
          for (const node of nodes) {
            const seqsInOrder = sorted.filter((e) => e.node === node).map((e) => e.seq);
            expect(seqsInOrder).toEqual([...seqsInOrder].sort((x, y) => x - y));
          }
        },
      ),
      { numRuns: 500 },
    );
  });

  it('a query merge of overlapping, shuffled answers from several nodes gives each event once, in order, the newest `limit`', () => {
    const eventArb = fc.record({ node: fc.constantFrom('a', 'b', 'c'), seq: fc.integer({ min: 1, max: 30 }) });
    fc.assert(
      fc.property(fc.array(fc.array(eventArb, { maxLength: 40 }), { maxLength: 4 }), fc.integer({ min: 1, max: 50 }), fc.nat(), (answers, limit, seed) => {
        // The same (node, seq) always carries the same stamp: it is one event held by several nodes.
        const make = (x: { node: string; seq: number }) => ev(x.node, x.seq, [x.seq * 7 + x.node.charCodeAt(0), 0]);
        const lists = answers.map((a, i) => {
          const list = a.map(make);
          // Shuffle deterministically: a node's answer order must not matter.
          return list.sort((p, q) => ((p.seq * 31 + seed + i) % 7) - ((q.seq * 31 + seed + i) % 7));
        });
        const r = mergeEvents(lists, limit);
        const unique = new Map(lists.flat().map((e) => [e.id, e]));
        const all = [...unique.values()].sort(compareEvents);
        expect(r.events).toEqual(all.slice(Math.max(0, all.length - limit)));
        expect(r.truncated).toBe(all.length > limit);
        expect(new Set(r.events.map((e) => e.id)).size).toBe(r.events.length);
      }),
      { numRuns: 500 },
    );
  });
});
