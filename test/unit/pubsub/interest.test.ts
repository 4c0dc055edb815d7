/**
 * The interest protocol over a simulated network: random subscribes and unsubscribes, link
 * drops and heals, node restarts, message loss, duplication and reordering. After the network
 * heals, every node's table must hold exactly every other node's true interest.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { type InterestMessage, InterestSync, type InterestTuple } from '../../../src/pubsub/interest.js';

interface Packet {
  from: string;
  to: string;
  inc: number;
  msg: InterestMessage;
}

class Sim {
  readonly nodes = new Map<string, InterestSync>();
  private readonly incs = new Map<string, number>();
  readonly links = new Set<string>();
  inflight: Packet[] = [];
  /** Subscriptions each node really holds: [pattern, group][] (a multiset). */
  readonly truth = new Map<string, Array<[string, string | null]>>();

  constructor(readonly names: string[]) {
    for (const n of names) this.boot(n, 1);
  }

  private boot(name: string, inc: number): void {
    this.incs.set(name, inc);
    this.truth.set(name, []);
    this.nodes.set(
      name,
      new InterestSync(name, inc, (to, msg) => {
        // JSON round trip: what crosses the wire is a copy, never a shared object.
        const copy = JSON.parse(JSON.stringify(msg)) as InterestMessage;
        for (const dest of to === null ? this.peersOf(name) : [to]) {
          if (this.linked(name, dest)) this.inflight.push({ from: name, to: dest, inc, msg: copy });
        }
      }),
    );
  }

  private pair(a: string, b: string): string {
    return a < b ? `${a}|${b}` : `${b}|${a}`;
  }

  linked(a: string, b: string): boolean {
    return this.links.has(this.pair(a, b));
  }

  peersOf(name: string): string[] {
    return this.names.filter((n) => n !== name && this.linked(name, n));
  }

  node(name: string): InterestSync {
    return this.nodes.get(name) as InterestSync;
  }

  connect(a: string, b: string): void {
    if (a === b || this.linked(a, b)) return;
    this.links.add(this.pair(a, b));
    this.node(a).peerUp(b);
    this.node(b).peerUp(a);
  }

  disconnect(a: string, b: string): void {
    if (!this.linked(a, b)) return;
    this.links.delete(this.pair(a, b));
    // What was in flight on the link is lost with it.
    this.inflight = this.inflight.filter((p) => !((p.from === a && p.to === b) || (p.from === b && p.to === a)));
    this.node(a).peerDown(b);
    this.node(b).peerDown(a);
  }

  restart(name: string): void {
    for (const other of this.names) this.disconnect(name, other);
    this.boot(name, (this.incs.get(name) as number) + 1);
  }

  subscribe(name: string, pattern: string, group: string | null): void {
    this.node(name).change(pattern, group, 1);
    this.truth.get(name)?.push([pattern, group]);
  }

  unsubscribe(name: string, index: number): void {
    const list = this.truth.get(name) as Array<[string, string | null]>;
    if (list.length === 0) return;
    const [pattern, group] = list.splice(index % list.length, 1)[0] as [string, string | null];
    this.node(name).change(pattern, group, -1);
  }

  deliver(i: number, mode: 'deliver' | 'drop' | 'duplicate'): void {
    if (this.inflight.length === 0) return;
    const at = i % this.inflight.length;
    const p = this.inflight[at] as Packet;
    if (mode !== 'duplicate') this.inflight.splice(at, 1);
    if (mode === 'drop') return;
    // Only a live link delivers, and it tells the receiver the sender's incarnation.
    if (!this.linked(p.from, p.to)) return;
    const msg = this.node(p.to).parse(p.msg);
    expect(msg, 'every message the protocol emits passes the wire check').toBeDefined();
    this.node(p.to).receive(p.from, p.inc, msg as InterestMessage);
  }

  /** Heal everything and run the protocol without faults until nothing is in flight. */
  settle(): void {
    for (const a of this.names) for (const b of this.names) if (a < b) this.connect(a, b);
    for (let round = 0; round < 6; round++) {
      for (const n of this.names) this.node(n).tick();
      let guard = 0;
      while (this.inflight.length > 0) {
        this.deliver(0, 'deliver'); // FIFO, as a TCP link is
        if (++guard > 100_000) throw new Error('protocol does not quiesce');
      }
    }
  }

  /** The true interest of a node as the protocol's tuples (counts per pattern and group), sorted. */
  expected(name: string): InterestTuple[] {
    const counts = new Map<string, InterestTuple>();
    for (const [p, g] of this.truth.get(name) ?? []) {
      const k = `${g}\u0000${p}`;
      const t = counts.get(k) ?? [p, g, 0];
      t[2]++;
      counts.set(k, t);
    }
    return sortTuples([...counts.values()]);
  }
}

function sortTuples(t: InterestTuple[]): InterestTuple[] {
  return [...t].sort((a, b) => (`${a[1]}|${a[0]}` < `${b[1]}|${b[0]}` ? -1 : 1));
}

const NAMES = ['n1', 'n2', 'n3', 'n4'];
const nodeArb = fc.constantFrom(...NAMES);
const patternArb = fc.constantFrom('rooms.1', 'rooms.*', 'rooms.>', 'jobs', 'a.b.c', '*.b.*');
const groupArb = fc.constantFrom(null, null, 'workers', 'mailers');
const opArb = fc.oneof(
  fc.record({ k: fc.constant('sub' as const), n: nodeArb, p: patternArb, g: groupArb }),
  fc.record({ k: fc.constant('unsub' as const), n: nodeArb, i: fc.nat() }),
  fc.record({ k: fc.constant('deliver' as const), i: fc.nat(), mode: fc.constantFrom('deliver', 'deliver', 'deliver', 'drop', 'duplicate') }),
  fc.record({ k: fc.constant('connect' as const), a: nodeArb, b: nodeArb }),
  fc.record({ k: fc.constant('disconnect' as const), a: nodeArb, b: nodeArb }),
  fc.record({ k: fc.constant('flush' as const), n: nodeArb }),
  fc.record({ k: fc.constant('tick' as const), n: nodeArb }),
  fc.record({ k: fc.constant('restart' as const), n: nodeArb }),
  // Everything in flight arrives: later faults then hit a quiet, converged state.
  fc.record({ k: fc.constant('drain' as const) }),
);

type Op = typeof opArb extends fc.Arbitrary<infer T> ? T : never;

function run(ops: Op[]): Sim {
  const sim = new Sim(NAMES);
  for (const a of NAMES) for (const b of NAMES) if (a < b) sim.connect(a, b);
  for (const op of ops) {
    switch (op.k) {
      case 'sub':
        sim.subscribe(op.n, op.p, op.g);
        break;
      case 'unsub':
        sim.unsubscribe(op.n, op.i);
        break;
      case 'deliver':
        sim.deliver(op.i, op.mode as 'deliver' | 'drop' | 'duplicate');
        break;
      case 'connect':
        sim.connect(op.a, op.b);
        break;
      case 'disconnect':
        sim.disconnect(op.a, op.b);
        break;
      case 'flush':
        sim.node(op.n).flush();
        break;
      case 'tick':
        sim.node(op.n).tick();
        break;
      case 'restart':
        sim.restart(op.n);
        break;
      case 'drain':
        while (sim.inflight.length > 0) sim.deliver(0, 'deliver');
        break;
    }
  }
  sim.settle();
  return sim;
}

describe('interest protocol (simulated network)', () => {
  it('converges to every node’s true interest after any mix of faults', () => {
    fc.assert(
      fc.property(fc.array(opArb, { maxLength: 120 }), (ops) => {
        const sim = run(ops);
        for (const holder of NAMES) {
          const table = sim.node(holder).table;
          for (const owner of NAMES) {
            expect(sortTuples(table.entriesOf(owner)), `${holder}'s view of ${owner}`).toEqual(sim.expected(owner));
          }
        }
      }),
      { numRuns: 1000 },
    );
  });

  it('repairs a lost last delta through the digest (a kept regression case)', () => {
    const sim = run([
      { k: 'drain' },
      { k: 'sub', n: 'n1', p: 'rooms.1', g: null },
      { k: 'flush', n: 'n1' },
      { k: 'deliver', i: 0, mode: 'drop' },
      { k: 'deliver', i: 0, mode: 'drop' },
      { k: 'deliver', i: 0, mode: 'drop' },
    ]);
    for (const holder of ['n2', 'n3', 'n4']) expect(sim.node(holder).table.entriesOf('n1')).toEqual([['rooms.1', null, 1]]);
  });

  it('routes a topic to exactly the nodes with a matching subscriber, and counts group members', () => {
    const sim = run([
      { k: 'sub', n: 'n1', p: 'rooms.*', g: null },
      { k: 'sub', n: 'n2', p: 'rooms.1', g: 'workers' },
      { k: 'sub', n: 'n2', p: 'rooms.>', g: 'workers' },
      { k: 'sub', n: 'n3', p: 'jobs', g: null },
    ]);
    const route = sim.node('n4').table.route('rooms.1');
    expect([...route.plain]).toEqual(['n1']);
    expect(route.groups.get('workers')).toEqual([{ node: 'n2', count: 2 }]);
    expect(sim.node('n4').table.route('nothing.here').plain.size).toBe(0);
  });

  it('drops malformed messages at the wire check', () => {
    const sync = new InterestSync('x', 1, () => {});
    expect(sync.parse({ t: 'delta', inc: 1, ver: 2, changes: [['a', -1]] })).toBeUndefined();
    expect(sync.parse({ t: 'delta', inc: 1, ver: 2, changes: [['a', 1.5]] })).toBeUndefined();
    expect(sync.parse({ t: 'full', inc: 1, ver: 2, entries: 'x' })).toBeUndefined();
    expect(sync.parse({ t: 'full', inc: 1, ver: 2, entries: [['a', null]] })).toBeUndefined();
    expect(sync.parse({ t: 'nope' })).toBeUndefined();
    expect(sync.parse(null)).toBeUndefined();
    expect(
      sync.parse({
        t: 'delta',
        inc: 1,
        ver: 2,
        changes: [
          ['a', null],
          ['b', 3],
        ],
      }),
    ).toBeDefined();
  });
});
