/**
 * The interest protocol over a simulated network: random subscribes and unsubscribes, link
 * drops and heals, node restarts, message loss, duplication and reordering. After the network
 * heals, every node's table must hold exactly every other node's true interest.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { InterestSync, type InterestTuple } from '../../../src/pubsub/interest.js';
import { isNetOp, netOpArbs, runNetOp, SimNetwork } from '../../helpers/replica-sim.js';

/** The interest network: the simulated network plus what each node really subscribed. */
class Sim extends SimNetwork<InterestSync> {
  /** Subscriptions each node really holds: [pattern, group][] (a multiset). */
  readonly truth = new Map<string, Array<[string, string | null]>>();

  constructor(names: string[]) {
    super(
      names,
      (name, inc, emit) => new InterestSync(name, inc, emit),
      (name) => this.truth.set(name, []),
    );
    for (const n of names) this.truth.set(n, []);
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
  ...netOpArbs(nodeArb),
);

type Op = typeof opArb extends fc.Arbitrary<infer T> ? T : never;

function run(ops: Op[]): Sim {
  const sim = new Sim(NAMES);
  sim.connectAll();
  for (const op of ops) {
    if (isNetOp(op)) runNetOp(sim, op);
    else if (op.k === 'sub') sim.subscribe(op.n, op.p, op.g);
    else sim.unsubscribe(op.n, op.i);
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
