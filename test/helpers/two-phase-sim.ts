/**
 * A timed, deterministic simulated network for the two-phase commit of `node.config`
 * (src/services/cluster-config/two-phase.ts): nodes with incarnations, links that partition and
 * heal, messages delivered in any order, lost or duplicated, validators that answer late or
 * veto, crashes and restarts (a restarted node forgets everything), and a clock the test moves.
 *
 * It records, per transaction, every node incarnation that committed or aborted it, and what
 * each coordinator told its caller, so a checker can state atomicity; `settle` heals the links
 * between live nodes and runs the protocol without faults, so a checker can state that every
 * transaction ends or is in doubt only in the documented case.
 */
import {
  type ConfigWrite,
  type CoordinatorResult,
  type Participants,
  TwoPhase,
  type TwoPhaseHost,
  type TwoPhaseMessage,
} from '../../src/services/cluster-config/two-phase.js';

interface Packet {
  from: string;
  fromInc: number;
  to: string;
  msg: TwoPhaseMessage;
}

/** A machine the sim can look into (and a broken variant can override). */
export class ProbedTwoPhase extends TwoPhase {
  /** Participant-side transactions held here: id → coordinator and participants. */
  heldParticipant(): Array<{ tx: string; coord: string; parts: Participants; phase: string }> {
    return [...this.participant.values()].map((p) => ({ tx: p.tx, coord: p.coord, parts: p.parts, phase: p.phase }));
  }
  /** Coordinator-side transactions still tracked here. */
  heldCoordinated(): Array<{ tx: string; parts: Participants; phase: string }> {
    return [...this.coordinated.values()].map((c) => ({ tx: c.tx, parts: c.parts, phase: c.phase }));
  }
}

export type MachineFactory = (name: string, inc: number, host: TwoPhaseHost) => ProbedTwoPhase;

interface SimNode {
  name: string;
  inc: number;
  machine: ProbedTwoPhase;
  version: number;
  /** Validations waiting for the test to let them answer. */
  validations: Array<{ tx: string; writes: ConfigWrite[] }>;
}

export class TwoPhaseSim {
  time = 1_000_000;
  readonly nodes = new Map<string, SimNode>();
  /** Last incarnation of each name (alive or crashed). */
  readonly incs = new Map<string, number>();
  private readonly links = new Set<string>();
  inflight: Packet[] = [];
  /** tx → `node@inc` → outcome, over every incarnation that ever lived. */
  readonly outcomes = new Map<string, Map<string, 'committed' | 'aborted'>>();
  /** What each coordinator told its caller. */
  readonly results = new Map<string, CoordinatorResult>();
  /** Transactions begun, and by which incarnation. */
  readonly begun = new Map<string, string>();
  /** Paths each node's validators veto. */
  readonly vetoes = new Map<string, Set<string>>();

  constructor(
    readonly names: readonly string[],
    private readonly factory: MachineFactory = (name, inc, host) => new ProbedTwoPhase(name, inc, host, { graceMs: 300, retryMs: 200 }),
  ) {
    for (const n of names) this.boot(n, 1);
    for (const a of names) for (const b of names) if (a < b) this.links.add(this.pair(a, b));
  }

  private pair(a: string, b: string): string {
    return a < b ? `${a}|${b}` : `${b}|${a}`;
  }

  linked(a: string, b: string): boolean {
    return this.nodes.has(a) && this.nodes.has(b) && this.links.has(this.pair(a, b));
  }

  private boot(name: string, inc: number): void {
    this.incs.set(name, inc);
    const node: SimNode = { name, inc, version: 0, validations: [], machine: undefined as never };
    const host: TwoPhaseHost = {
      now: () => this.time,
      send: (to, msg) => {
        if (this.linked(name, to)) this.inflight.push({ from: name, fromInc: inc, to, msg: JSON.parse(JSON.stringify(msg)) as TwoPhaseMessage });
      },
      version: () => node.version,
      validate: (tx, writes) => node.validations.push({ tx, writes }),
      apply: (tx, _writes, version) => {
        node.version = version;
        this.record(tx, `${name}@${inc}`, 'committed');
      },
      ended: (tx, outcome) => {
        if (outcome === 'aborted') this.record(tx, `${name}@${inc}`, 'aborted');
      },
    };
    node.machine = this.factory(name, inc, host);
    this.nodes.set(name, node);
  }

  private record(tx: string, who: string, outcome: 'committed' | 'aborted'): void {
    let m = this.outcomes.get(tx);
    if (!m) {
      m = new Map();
      this.outcomes.set(tx, m);
    }
    m.set(who, outcome);
  }

  alive(name: string): boolean {
    return this.nodes.has(name);
  }

  /** The incarnation `inc` of `name` is the one running now. */
  isLive(name: string, inc: number): boolean {
    return this.nodes.get(name)?.inc === inc;
  }

  node(name: string): SimNode | undefined {
    return this.nodes.get(name);
  }

  /** `at` starts a transaction writing `path`: participants are every name, unreachable ones listed as such. */
  begin(at: string, path: string, timeoutMs = 1000): void {
    const n = this.nodes.get(at);
    if (!n) return;
    const parts: Participants = {};
    const unreachable: string[] = [];
    for (const other of this.names) {
      if (other === at) continue;
      if (this.linked(at, other)) parts[other] = this.nodes.get(other)?.inc as number;
      else {
        parts[other] = this.incs.get(other) as number;
        unreachable.push(other);
      }
    }
    const who = `${at}@${n.inc}`;
    const tx = n.machine.begin(parts, [{ path, value: this.time }], timeoutMs, (r) => this.results.set(r.tx, r), unreachable);
    this.begun.set(tx, who);
  }

  /** Lets the validation at `i` (modulo) of `name` answer: a veto when its path is vetoed there. */
  validate(name: string, i: number): void {
    const n = this.nodes.get(name);
    if (!n || n.validations.length === 0) return;
    const [v] = n.validations.splice(i % n.validations.length, 1);
    if (!v) return;
    const vetoed = v.writes.some((w) => this.vetoes.get(name)?.has(w.path));
    n.machine.voted(v.tx, !vetoed, vetoed ? 'veto' : undefined, vetoed ? `${name} refuses ${v.writes[0]?.path}` : undefined);
  }

  /** Lets the `i`-th (modulo) pending validation of any node answer. */
  validateAny(i: number): void {
    const pending = [...this.nodes.values()].flatMap((n) => n.validations.map((_, k) => [n.name, k] as const));
    if (pending.length === 0) return;
    const [name, k] = pending[i % pending.length] as readonly [string, number];
    this.validate(name, k);
  }

  deliver(i: number, mode: 'deliver' | 'drop' | 'duplicate'): void {
    if (this.inflight.length === 0) return;
    const at = i % this.inflight.length;
    const p = this.inflight[at] as Packet;
    if (mode !== 'duplicate') this.inflight.splice(at, 1);
    if (mode === 'drop' || !this.linked(p.from, p.to) || !this.isLive(p.from, p.fromInc)) return;
    this.nodes.get(p.to)?.machine.receive(p.from, p.fromInc, p.msg);
  }

  partition(a: string, b: string): void {
    if (a === b || !this.links.has(this.pair(a, b))) return;
    const wasLinked = this.linked(a, b);
    this.links.delete(this.pair(a, b));
    this.inflight = this.inflight.filter((p) => !((p.from === a && p.to === b) || (p.from === b && p.to === a)));
    if (wasLinked) {
      this.nodes.get(a)?.machine.peerDown(b);
      this.nodes.get(b)?.machine.peerDown(a);
    }
  }

  /** The link between `a` and `b` is replaced, both staying up: what was in flight on it is lost, and both ends hear of it. */
  replaceLink(a: string, b: string): void {
    if (a === b || !this.linked(a, b)) return;
    this.inflight = this.inflight.filter((p) => !((p.from === a && p.to === b) || (p.from === b && p.to === a)));
    this.nodes.get(a)?.machine.linkReplaced(b);
    this.nodes.get(b)?.machine.linkReplaced(a);
  }

  heal(a: string, b: string): void {
    if (a === b || this.links.has(this.pair(a, b))) return;
    this.links.add(this.pair(a, b));
    if (this.linked(a, b)) {
      this.nodes.get(a)?.machine.peerUp(b);
      this.nodes.get(b)?.machine.peerUp(a);
    }
  }

  /** Kill -9: the node and what it held are gone; its peers see it down. */
  crash(name: string): void {
    if (!this.nodes.has(name)) return;
    const peers = this.names.filter((o) => this.linked(name, o));
    this.nodes.delete(name);
    this.inflight = this.inflight.filter((p) => p.to !== name && p.from !== name);
    for (const o of peers) this.nodes.get(o)?.machine.peerDown(name);
  }

  /** A crashed node starts again as a new incarnation, with nothing remembered. */
  restart(name: string): void {
    if (this.nodes.has(name)) this.crash(name);
    this.boot(name, (this.incs.get(name) as number) + 1);
    for (const o of this.names) if (this.linked(name, o)) this.nodes.get(o)?.machine.peerUp(name);
  }

  /** Time passes; every node runs its deadlines. */
  advance(ms: number): void {
    this.time += ms;
    for (const n of [...this.nodes.values()]) n.machine.tick();
  }

  /** Heals every link between live nodes, answers every validation, and runs the protocol without faults. */
  settle(rounds = 60): void {
    for (const a of this.names) for (const b of this.names) if (a < b) this.heal(a, b);
    for (let r = 0; r < rounds; r++) {
      for (const n of [...this.nodes.values()]) while (n.validations.length > 0) this.validate(n.name, 0);
      let guard = 0;
      while (this.inflight.length > 0) {
        this.deliver(0, 'deliver');
        if (++guard > 100_000) throw new Error('the protocol does not quiesce');
      }
      this.advance(250);
    }
  }
}
