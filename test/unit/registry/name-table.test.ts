/**
 * The registry's name table over a simulated network: random registrations and unregistrations
 * on every node, partitions and heals, message loss, duplication and reordering, restarts, and
 * clocks that disagree by up to a second. After the network heals, every node must resolve every
 * name to the same owner, and exactly one registration of each name must be left.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { compareStamps, HybridClock } from '../../../src/registry/hlc.js';
import { type NameEvent, NameTable } from '../../../src/registry/name-table.js';
import { isNetOp, netOpArbs, runNetOp, SimNetwork } from '../../helpers/replica-sim.js';

const NAMES = ['n1', 'n2', 'n3', 'n4'];

class Sim extends SimNetwork<NameTable> {
  /** Simulated time, advanced by every operation; each node's clock is off by its skew. */
  time = 1_000_000;
  readonly events = new Map<string, NameEvent[]>();

  constructor(skews: Record<string, number>) {
    super(
      NAMES,
      (name, inc, emit) => {
        const clock = new HybridClock(() => this.now() + (skews[name] ?? 0));
        return new NameTable(name, inc, clock, emit, (e) => this.record(name, e));
      },
      (name) => this.events.set(name, []),
    );
  }

  private now(): number {
    return this.time;
  }

  private record(node: string, e: NameEvent): void {
    let list = this.events.get(node);
    if (!list) {
      list = [];
      this.events.set(node, list);
    }
    list.push(e);
  }
}

const nodeArb = fc.constantFrom(...NAMES);
const nameArb = fc.constantFrom('scheduler', 'room:1', 'room:2', 'cache');
const opArb = fc.oneof(
  fc.record({ k: fc.constant('register' as const), n: nodeArb, name: nameArb }),
  fc.record({ k: fc.constant('unregister' as const), n: nodeArb, name: nameArb }),
  fc.record({ k: fc.constant('update' as const), n: nodeArb, name: nameArb, v: fc.nat(9) }),
  ...netOpArbs(nodeArb),
  fc.record({ k: fc.constant('wait' as const), ms: fc.integer({ min: 0, max: 2000 }) }),
);
type Op = typeof opArb extends fc.Arbitrary<infer T> ? T : never;
const skewArb = fc.record(Object.fromEntries(NAMES.map((n) => [n, fc.integer({ min: -1000, max: 1000 })])) as Record<string, fc.Arbitrary<number>>);

function run(ops: Op[], skews: Record<string, number>): Sim {
  const sim = new Sim(skews);
  sim.connectAll();
  for (const op of ops) {
    sim.time += 1;
    if (isNetOp(op)) runNetOp(sim, op);
    else if (op.k === 'register') sim.node(op.n).register(op.name, { by: op.n });
    else if (op.k === 'unregister') sim.node(op.n).unregister(op.name);
    else if (op.k === 'update') sim.node(op.n).update(op.name, { by: op.n, v: op.v });
    else sim.time += op.ms;
  }
  sim.settle();
  return sim;
}

function resolved(t: NameTable): Record<string, string> {
  const out: Record<string, string> = {};
  for (const o of t.owned()) out[o.name] = `${o.node}@${o.stamp.join('.')}=${JSON.stringify(o.meta)}`;
  return out;
}

/** What a watcher that applies every event in order (register and update set, unregister deletes) ends up with. */
function folded(events: NameEvent[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const e of events) {
    if (e.type === 'register' || e.type === 'update') out[e.owner.name] = `${e.owner.node}@${e.owner.stamp.join('.')}=${JSON.stringify(e.owner.meta)}`;
    else if (e.type === 'unregister') delete out[e.name];
  }
  return out;
}

describe('registry name table (simulated network)', () => {
  it('after any mix of faults and a heal: one owner per name with its latest meta, the same on every node; watchers that apply the events end up with the table', () => {
    fc.assert(
      fc.property(fc.array(opArb, { maxLength: 120 }), skewArb, (ops, skews) => {
        const sim = run(ops, skews);
        const first = resolved(sim.node('n1'));
        for (const n of NAMES) {
          const t = sim.node(n);
          expect(resolved(t), `${n}'s table`).toEqual(first);
          expect(folded(sim.events.get(n) ?? []), `${n}'s events folded`).toEqual(first);
          for (const o of t.owned()) {
            // The loser gave its registration up: one registration of each name is left.
            expect(
              t.candidatesOf(o.name).map(([node]) => node),
              `candidates of ${o.name} on ${n}`,
            ).toEqual([o.node]);
          }
        }
        // Every resolved name is held by the node it resolves to, and by no other.
        for (const [name, owner] of Object.entries(first)) {
          for (const n of NAMES) expect(sim.node(n).ownNames().includes(name), `${n} holds ${name}`).toBe(owner.startsWith(`${n}@`));
        }
      }),
      { numRuns: 1000 },
    );
  });

  it('a partition lets both sides register a name; the heal keeps the earlier one everywhere and tells the loser', () => {
    const sim = new Sim({ n1: 0, n2: 0, n3: 0, n4: 0 });
    sim.connectAll();
    sim.drain();
    for (const a of ['n1', 'n2']) for (const b of ['n3', 'n4']) sim.disconnect(a, b);
    sim.node('n3').register('scheduler', { side: 'minority' });
    sim.time += 5;
    sim.node('n1').register('scheduler', { side: 'majority' });
    for (const n of NAMES) sim.node(n).flush();
    sim.drain();
    expect(sim.node('n2').lookup('scheduler')?.node).toBe('n1');
    expect(sim.node('n4').lookup('scheduler')?.node).toBe('n3');
    sim.settle();
    for (const n of NAMES) expect(sim.node(n).lookup('scheduler')).toMatchObject({ node: 'n3', meta: { side: 'minority' } });
    expect(sim.node('n1').ownNames()).toEqual([]);
    expect(sim.events.get('n1')).toContainEqual({ type: 'conflict', name: 'scheduler', winner: 'n3', loser: 'n1' });
    // Reported once on each node, not on every resync.
    expect(sim.events.get('n2')?.filter((e) => e.type === 'conflict')).toHaveLength(1);
  });

  it('an update replicates the new meta with the registration stamp kept, fires one update event on every node, and never changes who wins a conflict', () => {
    const sim = new Sim({ n1: 0, n2: 0, n3: 0, n4: 0 });
    sim.connectAll();
    sim.node('n1').register('svc', { health: 'passing' });
    sim.node('n1').flush();
    sim.drain();
    const stamp = sim.node('n2').lookup('svc')?.stamp;
    expect(sim.node('n2').update('svc', { health: 'critical' }), 'only the owner updates').toBe(false);
    expect(sim.node('n1').update('svc', { health: 'critical' })).toBe(true);
    sim.node('n1').flush();
    sim.drain();
    for (const n of NAMES) {
      expect(sim.node(n).lookup('svc'), n).toMatchObject({ node: 'n1', stamp, meta: { health: 'critical' } });
      expect(
        sim.events.get(n)?.filter((e) => e.type === 'update'),
        `${n}'s update events`,
      ).toEqual([{ type: 'update', owner: { name: 'svc', node: 'n1', stamp, meta: { health: 'critical' } } }]);
    }
    // A resync (digest, pull, full map) carries the same rev again: no second update event.
    sim.disconnect('n1', 'n2');
    sim.connect('n1', 'n2');
    sim.settle();
    expect(sim.events.get('n2')?.filter((e) => e.type === 'update')).toHaveLength(1);
    // A partition: n3 registers the same name later, then n1 updates its earlier registration:
    // after the heal n1's (earlier stamp) still wins, carrying the updated meta.
    for (const a of ['n1', 'n2']) for (const b of ['n3', 'n4']) sim.disconnect(a, b);
    sim.node('n3').unregister('svc');
    sim.time += 5;
    sim.node('n3').register('svc', { health: 'passing', side: 'n3' });
    sim.node('n1').update('svc', { health: 'warning' });
    sim.settle();
    for (const n of NAMES) expect(sim.node(n).lookup('svc'), n).toMatchObject({ node: 'n1', stamp, meta: { health: 'warning' } });
    expect(sim.node('n3').ownNames()).toEqual([]);
  });

  it('refuses a name another node owns, and frees it when that node goes', () => {
    const sim = new Sim({});
    sim.connectAll();
    sim.node('n1').register('cache', null);
    sim.node('n1').flush();
    sim.drain();
    const refused = sim.node('n2').register('cache', null);
    expect(refused).toMatchObject({ ok: false, owner: { node: 'n1' } });
    sim.restart('n1');
    expect(sim.node('n2').lookup('cache')).toBeUndefined();
    expect(sim.node('n2').register('cache', null).ok).toBe(true);
  });
});

describe('hybrid logical clock', () => {
  it('never goes backwards and orders after what it observed, within the drift bound', () => {
    let t = 100;
    const c = new HybridClock(() => t, 1000);
    const a = c.tick();
    t = 50; // the wall clock stepped back
    const b = c.tick();
    expect(compareStamps(b, a)).toBeGreaterThan(0);
    c.observe([900, 7]);
    expect(compareStamps(c.tick(), [900, 7])).toBeGreaterThan(0);
    c.observe([10_000_000, 0]); // far ahead: not adopted
    expect(c.tick()[0]).toBeLessThan(10_000_000);
  });
});
