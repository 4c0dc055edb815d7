/**
 * Presence over a simulated network: random tracks, updates and untracks on every node, link
 * drops and heals, restarts, message loss, duplication and reordering. After the network heals,
 * every node must list exactly the presences the live nodes really track, the same everywhere,
 * and the diffs each node handed out, replayed from nothing, must give exactly its final lists.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { type PresenceDiff, type PresenceList, PresenceTable } from '../../../src/services/presence-table.js';
import { isNetOp, netOpArbs, runNetOp, SimNetwork } from '../../helpers/replica-sim.js';

const NAMES = ['n1', 'n2', 'n3', 'n4'];

/** A presence table as a dump: topic → key → sorted "node|ref|meta" strings. */
type Dump = Record<string, Record<string, string[]>>;

function dumpLists(lists: Iterable<[string, PresenceList]>): Dump {
  const out: Dump = {};
  for (const [topic, list] of lists) {
    const keys: Record<string, string[]> = {};
    for (const [key, entry] of Object.entries(list)) keys[key] = entry.metas.map((m) => `${m.node}|${m.ref}|${JSON.stringify(m.meta)}`).sort();
    if (Object.keys(keys).length > 0) out[topic] = keys;
  }
  return out;
}

function dump(t: PresenceTable): Dump {
  return dumpLists(t.topics().map((topic) => [topic, t.list(topic)]));
}

/** Replays diffs from nothing: each diff's leaves (which must be present), then its joins (which must not). */
function replay(diffs: PresenceDiff[]): Dump {
  const state = new Map<string, Map<string, Map<string, string>>>();
  for (const d of diffs) {
    let byKey = state.get(d.topic);
    if (!byKey) {
      byKey = new Map();
      state.set(d.topic, byKey);
    }
    for (const [key, { metas }] of Object.entries(d.leaves)) {
      for (const m of metas) {
        if (!byKey.get(key)?.delete(m.ref)) throw new Error(`leave of ${m.ref} (${d.topic}/${key}) that was not present`);
      }
    }
    for (const [key, { metas }] of Object.entries(d.joins)) {
      let refs = byKey.get(key);
      if (!refs) {
        refs = new Map();
        byKey.set(key, refs);
      }
      for (const m of metas) {
        if (refs.has(m.ref)) throw new Error(`join of ${m.ref} (${d.topic}/${key}) that was present already`);
        refs.set(m.ref, `${m.node}|${m.ref}|${JSON.stringify(m.meta)}`);
      }
    }
  }
  const out: Dump = {};
  for (const [topic, byKey] of state) {
    const keys: Record<string, string[]> = {};
    for (const [key, refs] of byKey) if (refs.size > 0) keys[key] = [...refs.values()].sort();
    if (Object.keys(keys).length > 0) out[topic] = keys;
  }
  return out;
}

/** The presence network: the simulated network, what each node really tracks, and the diffs each handed out. */
class Sim extends SimNetwork<PresenceTable> {
  /** Per node: "topic\0key" → meta it tracks now. */
  readonly truth = new Map<string, Map<string, unknown>>();
  readonly diffs = new Map<string, PresenceDiff[]>();

  constructor(
    make: (name: string, inc: number, emit: (to: string | null, msg: unknown) => void) => PresenceTable = (n, inc, emit) => new PresenceTable(n, inc, emit),
  ) {
    super(NAMES, make, (name) => {
      this.truth.set(name, new Map());
      this.diffs.set(name, []);
    });
    for (const n of NAMES) {
      this.truth.set(n, new Map());
      this.diffs.set(n, []);
    }
  }

  /** What the node's owner would do once per turn of the loop: take the batched diffs. */
  takeDiffs(n: string): void {
    this.diffs.get(n)?.push(...this.node(n).takeDiffs());
  }

  /** The presences every node must list: every node's own, as they really are. */
  expected(): Record<string, Record<string, string[]>> {
    const out: Record<string, Record<string, string[]>> = {};
    for (const n of NAMES) {
      for (const [tk, meta] of this.truth.get(n) ?? []) {
        const [topic, key] = tk.split('\u0000') as [string, string];
        out[topic] ??= {};
        const keys = out[topic] as Record<string, string[]>;
        keys[key] ??= [];
        keys[key].push(`${n}|${JSON.stringify(meta)}`);
      }
    }
    for (const keys of Object.values(out)) for (const k of Object.keys(keys)) keys[k]?.sort();
    return out;
  }
}

const nodeArb = fc.constantFrom(...NAMES);
const topicArb = fc.constantFrom('room:lobby', 'room:1', 'users');
const keyArb = fc.constantFrom('alice', 'bob', 'carol');
const metaArb = fc.record({ status: fc.constantFrom('online', 'away', 'busy') });
const opArb = fc.oneof(
  fc.record({ k: fc.constant('track' as const), n: nodeArb, t: topicArb, key: keyArb, meta: metaArb }),
  fc.record({ k: fc.constant('update' as const), n: nodeArb, t: topicArb, key: keyArb, meta: metaArb }),
  fc.record({ k: fc.constant('untrack' as const), n: nodeArb, t: topicArb, key: keyArb }),
  fc.record({ k: fc.constant('diffs' as const), n: nodeArb }),
  ...netOpArbs(nodeArb),
);
type Op = typeof opArb extends fc.Arbitrary<infer T> ? T : never;

function run(ops: Op[], make?: ConstructorParameters<typeof Sim>[0]): Sim {
  const sim = new Sim(make);
  sim.connectAll();
  for (const op of ops) {
    if (isNetOp(op)) {
      runNetOp(sim, op);
      continue;
    }
    if (op.k === 'diffs') {
      sim.takeDiffs(op.n);
      continue;
    }
    const table = sim.node(op.n);
    const truth = sim.truth.get(op.n) as Map<string, unknown>;
    const tk = `${op.t}\u0000${op.key}`;
    if (op.k === 'track') {
      if (table.track(op.t, op.key, op.meta)) truth.set(tk, op.meta);
      else expect(truth.has(tk), 'track refused only when tracked').toBe(true);
    } else if (op.k === 'update') {
      if (table.update(op.t, op.key, op.meta)) truth.set(tk, op.meta);
      else expect(truth.has(tk), 'update refused only when not tracked').toBe(false);
    } else {
      expect(table.untrack(op.t, op.key)).toBe(truth.delete(tk));
    }
  }
  sim.settle();
  for (const n of NAMES) sim.takeDiffs(n);
  return sim;
}

/** JSON with object keys in order: two dumps compare equal whatever order they were built in. */
function canonical(v: unknown): string {
  return JSON.stringify(v, (_k, x: unknown) =>
    typeof x === 'object' && x !== null && !Array.isArray(x) ? Object.fromEntries(Object.entries(x).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) : x,
  );
}

/** The invariant, as a list of what is wrong (empty: holds). */
function violations(sim: Sim): string[] {
  const out: string[] = [];
  const first = dump(sim.node('n1'));
  const expected = sim.expected();
  // Without refs, the dump must be exactly the truth.
  const withoutRefs = Object.fromEntries(
    Object.entries(first).map(([t, keys]) => [
      t,
      Object.fromEntries(Object.entries(keys).map(([k, metas]) => [k, metas.map((m) => m.replace(/\|[^|]*\|/, '|')).sort()])),
    ]),
  );
  if (canonical(withoutRefs) !== canonical(expected)) out.push(`n1 lists ${JSON.stringify(withoutRefs)}, the truth is ${JSON.stringify(expected)}`);
  for (const n of NAMES) {
    const mine = dump(sim.node(n));
    if (canonical(mine) !== canonical(first)) out.push(`${n} lists ${JSON.stringify(mine)}, n1 ${JSON.stringify(first)}`);
    let replayed: Dump;
    try {
      replayed = replay(sim.diffs.get(n) ?? []);
    } catch (err) {
      out.push(`${n}'s diffs: ${(err as Error).message}`);
      continue;
    }
    if (canonical(replayed) !== canonical(mine)) out.push(`${n}'s diffs replay to ${JSON.stringify(replayed)}, it lists ${JSON.stringify(mine)}`);
  }
  return out;
}

const property = (make?: ConstructorParameters<typeof Sim>[0]) =>
  fc.property(fc.array(opArb, { maxLength: 120 }), (ops) => {
    const bad = violations(run(ops, make));
    if (bad.length > 0) throw new Error(bad.join('\n'));
  });

describe('presence (simulated network)', () => {
  it('after any mix of faults and a heal: every node lists exactly the live truth, and its diffs replay to its lists', () => {
    fc.assert(property(), { numRuns: 1000 });
  });

  it('the checker fails a table that never sends digests (a lost last delta stays lost)', () => {
    class NoDigest extends PresenceTable {
      override tick(): void {}
    }
    const r = fc.check(
      property((n, inc, emit) => new NoDigest(n, inc, emit)),
      { numRuns: 2000, seed: 42 },
    );
    expect(r.failed).toBe(true);
  });

  it('the checker fails diffs that lose one batch', () => {
    const sim = run([{ k: 'track', n: 'n1', t: 'users', key: 'alice', meta: { status: 'online' } }, { k: 'diffs', n: 'n2' }, { k: 'drain' }]);
    expect(violations(sim)).toEqual([]);
    sim.diffs.get('n2')?.shift();
    expect(violations(sim).join()).toMatch(/n2's diffs replay/);
  });

  it('a regression case: a track and untrack within one batch cancel out, and a key re-tracked after a partition joins once', () => {
    const sim = run([
      { k: 'drain' },
      { k: 'track', n: 'n1', t: 'users', key: 'alice', meta: { status: 'online' } },
      { k: 'untrack', n: 'n1', t: 'users', key: 'alice' },
      { k: 'diffs', n: 'n1' },
      { k: 'track', n: 'n2', t: 'users', key: 'bob', meta: { status: 'away' } },
      { k: 'flush', n: 'n2' },
      { k: 'drain' },
      { k: 'disconnect', a: 'n1', b: 'n2' },
      { k: 'connect', a: 'n1', b: 'n2' },
      { k: 'drain' },
    ]);
    expect(violations(sim)).toEqual([]);
    expect(sim.diffs.get('n1')?.flatMap((d) => Object.keys(d.joins))).toEqual(['bob']);
    expect(sim.diffs.get('n1')?.flatMap((d) => Object.keys(d.leaves))).toEqual([]);
  });

  it('lists a key with one meta per node; an update is a leave and a join; a restarted node’s presences leave everywhere', () => {
    const sim = new Sim();
    sim.connectAll();
    sim.node('n1').track('room:1', 'alice', { device: 'phone' });
    sim.node('n2').track('room:1', 'alice', { device: 'laptop' });
    sim.node('n3').track('room:1', 'bob', null);
    for (const n of NAMES) sim.node(n).flush();
    sim.drain();
    for (const n of NAMES) sim.node(n).takeDiffs();
    const list = sim.node('n4').list('room:1');
    expect(Object.keys(list)).toEqual(['alice', 'bob']);
    expect(list.alice?.metas.map((m) => [m.node, m.meta])).toEqual([
      ['n1', { device: 'phone' }],
      ['n2', { device: 'laptop' }],
    ]);
    const before = sim.node('n1').get('room:1', 'alice')[0]?.ref;
    const updated = sim.node('n1').update('room:1', 'alice', { device: 'tablet' });
    sim.node('n1').flush();
    sim.drain();
    const [d] = sim.node('n4').takeDiffs();
    expect(d?.leaves.alice?.metas.map((m) => m.ref)).toEqual([before]);
    expect(d?.joins.alice?.metas.map((m) => [m.ref, m.meta])).toEqual([[updated?.ref, { device: 'tablet' }]]);
    sim.restart('n2');
    const [gone] = sim.node('n4').takeDiffs();
    expect(gone).toMatchObject({ topic: 'room:1', joins: {}, leaves: { alice: { metas: [{ node: 'n2', meta: { device: 'laptop' } }] } } });
    expect(
      sim
        .node('n3')
        .list('room:1')
        .alice?.metas.map((m) => m.node),
    ).toEqual(['n1']);
    expect(sim.node('n1').track('room:1', 'alice', {})).toBeUndefined();
    expect(sim.node('n1').update('room:1', 'nobody', {})).toBeUndefined();
  });
});
