/**
 * Placement of `node.processes` over a simulated network: each simulated node runs the registry's
 * name table, the process table and the placement decision (`placement-plan.ts`) exactly as a
 * node does, with a minimal runtime that starts what the decision says (registering the name
 * first, as `runLocal` does) and stops a worker whose name another node won (`name_conflict`).
 * Random children and an available singleton, partitions and heals, message loss, duplication and
 * reordering, restarts (a crash: the node's workers die with it), placement run with and without
 * a synced view (the 2 s bound). After the network heals and placement settles:
 * - every node's registry is identical;
 * - the singleton runs on exactly one node, the one the registry names;
 * - every child that any live node still knew of runs exactly once, where the registry says;
 *   nothing runs unregistered; no orphan is left.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { rankFor } from '../../../src/processes/placement.js';
import { type PlacementView, planOwned, planReplicated } from '../../../src/processes/placement-plan.js';
import { type ChildEntry, ProcessTable, type ProcessTableMessage } from '../../../src/processes/process-table.js';
import { HybridClock } from '../../../src/registry/hlc.js';
import { NameTable, type NameTableMessage } from '../../../src/registry/name-table.js';
import { isNetOp, netOpArbs, runNetOp, SimNetwork, type SimNode } from '../../helpers/replica-sim.js';

const NAMES = ['n1', 'n2', 'n3', 'n4'];
const TYPE = 'w';
/** Simulated ms (one per operation) before an unadopted orphan is sent to its owner. */
const FORWARD_AFTER = 5;
const SINGLETON = 's1';
const childSpec: ChildEntry = { k: 'child', type: TYPE, args: null, restart: 'permanent', maxRestarts: 3, windowMs: 5000 };

type Wire = { r: 'reg'; m: NameTableMessage } | { r: 'proc'; m: ProcessTableMessage };

/** One simulated node: its registry, its process table, and what runs on it. */
class ProcNode implements SimNode {
  readonly reg: NameTable;
  readonly table: ProcessTable;
  readonly running = new Set<string>();

  constructor(
    readonly self: string,
    inc: number,
    emit: (to: string | null, msg: unknown) => void,
    clock: () => number,
    private readonly live: () => string[],
    private readonly now: () => number,
    /** A request to another node: whether it is reachable, and its node. */
    private readonly send: (to: string) => boolean,
    private readonly node: (name: string) => ProcNode,
  ) {
    this.reg = new NameTable(
      self,
      inc,
      new HybridClock(clock),
      (to, m) => emit(to, { r: 'reg', m }),
      (e) => {
        // Another node's registration won: the local instance stops (name_conflict) and gives its entry up.
        if (e.type === 'conflict' && e.loser === self && this.running.delete(e.name)) this.table.deleteOwn('child', e.name);
      },
    );
    this.table = new ProcessTable(
      self,
      inc,
      (to, m) => emit(to, { r: 'proc', m }),
      () => {},
      clock,
    );
    // What every node does at start: define the type, declare the singleton.
    this.table.setOwn(TYPE, { k: 'type' });
    this.table.setOwn(SINGLETON, { k: 'singleton', type: TYPE, args: null, consistency: 'available' });
  }

  // The registry's transport is set up before the process table's, as in `Foundation.start`.
  peerUp(n: string): void {
    this.reg.peerUp(n);
    this.table.peerUp(n);
  }
  peerDown(n: string): void {
    this.reg.peerDown(n);
    this.table.peerDown(n);
  }
  receive(from: string, inc: number, msg: Wire): void {
    if (msg.r === 'reg') this.reg.receive(from, inc, msg.m);
    else this.table.receive(from, inc, msg.m);
  }
  parse(v: unknown): Wire | undefined {
    const w = v as { r?: unknown; m?: unknown } | null;
    if (w?.r === 'reg') {
      const m = this.reg.parse(w.m);
      return m && { r: 'reg', m };
    }
    if (w?.r === 'proc') {
      const m = this.table.parse(w.m);
      return m && { r: 'proc', m };
    }
    return undefined;
  }
  tick(): void {
    this.reg.tick();
    this.table.tick();
  }
  flush(): void {
    this.reg.flush();
    this.table.flush();
  }

  /** `runLocal`: registers the name (refused when another node holds it), then runs it; a child is published. */
  run(name: string, spec?: ChildEntry): boolean {
    if (this.running.has(name)) return true;
    if (!this.reg.register(name, { proc: spec ? 'child' : 'singleton', type: TYPE }).ok) return false;
    this.running.add(name);
    if (spec) this.table.setOwn(name, spec);
    return true;
  }

  /** One placement pass; `force` decides without waiting for every live peer's table (the 2 s bound). Returns whether it started anything. */
  reconcile(force: boolean): boolean {
    const view: PlacementView = {
      self: this.self,
      live: this.live(),
      table: this.table,
      registered: (name) => this.reg.lookup(name)?.node,
      runsHere: (name) => this.running.has(name),
      defines: (type) => type === TYPE,
      now: this.now(),
      forwardAfterMs: FORWARD_AFTER,
    };
    let acted = planReplicated(view).length > 0;
    if (!force && !view.live.every((n) => this.table.syncedWith(n))) return acted;
    for (const a of planOwned(view)) {
      if (a.start === 'singleton') acted = this.run(a.name) || acted;
      else if (a.start === 'orphan') acted = this.run(a.name, a.spec) || acted;
      else if (a.start === 'forward' && this.send(a.to)) {
        // The request to the owner: it runs the child (unless the name is held), then flushes.
        const owner = this.node(a.to);
        acted = owner.run(a.name, a.spec) || acted;
        owner.flush();
      }
    }
    return acted;
  }
}

class Sim extends SimNetwork<ProcNode> {
  time = 1_000_000;
  constructor() {
    super(NAMES, (name, inc, emit) => {
      const now = () => this.time;
      return new ProcNode(
        name,
        inc,
        emit,
        now,
        () => [name, ...this.peersOf(name)],
        now,
        (to) => this.linked(name, to),
        (n) => this.node(n),
      );
    });
  }
}

const nodeArb = fc.constantFrom(...NAMES);
const opArb = fc.oneof(
  { weight: 3, arbitrary: fc.record({ k: fc.constant('child' as const), n: nodeArb }) },
  { weight: 3, arbitrary: fc.record({ k: fc.constant('reconcile' as const), n: nodeArb, force: fc.boolean() }) },
  ...netOpArbs(nodeArb).map((arbitrary) => ({ weight: 2, arbitrary })),
);
type Op = typeof opArb extends fc.Arbitrary<infer T> ? T : never;

interface Outcome {
  sim: Sim;
  /** Children that must run: created, and not lost with every node that knew of them. */
  expected: Set<string>;
}

/** The table's own orphan list (the checker's view, even when a test breaks what placement sees). */
const orphansOf = ProcessTable.prototype.orphans;

/** Whether any node still knows of child `name`: runs it, holds its entry, or holds it as an orphan. */
function knownAnywhere(sim: Sim, name: string): boolean {
  return NAMES.some((n) => {
    const p = sim.node(n);
    return p.running.has(name) || p.table.holders('child', name).size > 0 || orphansOf.call(p.table).some(([o]) => o === name);
  });
}

function run(ops: Op[]): Outcome {
  const sim = new Sim();
  sim.connectAll();
  sim.drain();
  const expected = new Set<string>();
  let next = 0;
  for (const op of ops) {
    sim.time += 1;
    if (op.k === 'child') {
      // `startChild` on node n: the rendezvous owner among the live nodes n knows to define the type runs it (one request away).
      const p = sim.node(op.n);
      const eligible = [op.n, ...sim.peersOf(op.n)].filter((x) => p.table.holders('type', TYPE).has(x));
      const owner = rankFor(`k${next}`, eligible)[0];
      if (owner && sim.node(owner).run(`k${next}`, childSpec)) expected.add(`k${next}`);
      // The node flushes its changes right after the turn that made them (a microtask).
      if (owner) sim.node(owner).flush();
      next++;
    } else if (op.k === 'reconcile') {
      sim.node(op.n).reconcile(op.force);
      sim.node(op.n).flush();
    } else if (op.k === 'restart') {
      // A crash: the node's workers die with it; a child nobody else knew of is lost with it, legitimately.
      runNetOp(sim, op);
      for (const name of [...expected]) if (!knownAnywhere(sim, name)) expected.delete(name);
    } else if (isNetOp(op)) {
      runNetOp(sim, op);
    }
  }
  // Heal, then let placement run on every node until nothing more starts (membership has settled).
  sim.settle();
  for (let round = 0; round < 20; round++) {
    sim.time += FORWARD_AFTER;
    let acted = false;
    for (const n of NAMES) acted = sim.node(n).reconcile(false) || acted;
    sim.settle(3);
    if (!acted) break;
  }
  return { sim, expected };
}

function check({ sim, expected }: Outcome): void {
  const registries = NAMES.map((n) => {
    const out: Record<string, string> = {};
    for (const o of sim.node(n).reg.owned()) out[o.name] = o.node;
    return out;
  });
  for (const r of registries.slice(1)) expect(r, 'every registry is identical').toEqual(registries[0]);
  const reg = registries[0] as Record<string, string>;
  const hosts = (name: string) => NAMES.filter((n) => sim.node(n).running.has(name));
  expect(hosts(SINGLETON), 'the singleton runs exactly once').toHaveLength(1);
  expect(reg[SINGLETON], 'where the registry says').toBe(hosts(SINGLETON)[0]);
  for (const name of expected) {
    expect(hosts(name), `child ${name} runs exactly once`).toHaveLength(1);
    expect(reg[name], `child ${name} is registered where it runs`).toBe(hosts(name)[0]);
  }
  for (const n of NAMES) {
    for (const name of sim.node(n).running) expect(reg[name], `${name} on ${n} is registered to it`).toBe(n);
    expect(orphansOf.call(sim.node(n).table), `no orphan left on ${n}`).toEqual([]);
  }
}

describe('placement over a simulated network', () => {
  it('after heal: identical registries, one singleton, every known child exactly once, no orphan', () => {
    fc.assert(
      fc.property(fc.array(opArb, { maxLength: 150 }), (ops) => check(run(ops))),
      { numRuns: Number(process.env.FOUNDATION_PROPERTY_RUNS ?? 300) },
    );
  }, 600_000);

  it('a crash of the host: its children are adopted by the survivors, each once', () => {
    const ops: Op[] = [
      { k: 'child', n: 'n1' },
      { k: 'child', n: 'n2' },
      { k: 'child', n: 'n3' },
      { k: 'child', n: 'n4' },
      { k: 'child', n: 'n1' },
      { k: 'child', n: 'n1' },
      { k: 'drain' },
      { k: 'restart', n: 'n1' },
      { k: 'restart', n: 'n2' },
    ];
    const out = run(ops);
    expect(out.expected.size).toBe(6);
    check(out);
  });

  it('regression (seed -1504646030): the only node that saw an orphan is not its owner; it sends it to the owner', () => {
    const ops: Op[] = [
      { k: 'child', n: 'n1' },
      { k: 'deliver', i: 595200351, mode: 'deliver' },
      { k: 'restart', n: 'n1' },
    ];
    const out = run(ops);
    expect(out.expected.size).toBe(1);
    check(out);
  });

  it('the checker catches a placement that ignores orphans (children lost when their host dies)', () => {
    const ops: Op[] = [
      ...Array.from({ length: 8 }, () => ({ k: 'child' as const, n: 'n1' })),
      { k: 'drain' },
      { k: 'restart', n: 'n2' },
      { k: 'restart', n: 'n3' },
    ];
    const broken = ProcessTable.prototype.orphans;
    ProcessTable.prototype.orphans = () => [];
    try {
      expect(() => check(run(ops))).toThrow(/runs exactly once/);
    } finally {
      ProcessTable.prototype.orphans = broken;
    }
  });
});
