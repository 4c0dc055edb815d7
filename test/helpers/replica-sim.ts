/**
 * A deterministic simulated network for replicated state (pubsub interest, the registry's name
 * table): nodes joined by links that can drop, heal, lose, duplicate and reorder messages, and
 * nodes that restart with a new incarnation. Property tests drive it with fast-check, then heal
 * everything (`settle`) and check their invariant. What crosses a link is a JSON copy, checked by
 * the receiver's own wire check, exactly as the transports do.
 */
import fc from 'fast-check';
import { expect } from 'vitest';
import { QUIET_DIGEST_TICKS } from '../../src/replication/owned-replica.js';

/** What a replicated-state node offers its transport. */
export interface SimNode {
  peerUp(node: string): void;
  peerDown(node: string): void;
  receive(from: string, incarnation: number, msg: never): void;
  parse(v: unknown): unknown;
  tick(): void;
  flush(): void;
}

interface Packet {
  from: string;
  to: string;
  inc: number;
  msg: unknown;
}

export type DeliverMode = 'deliver' | 'drop' | 'duplicate';

export class SimNetwork<N extends SimNode> {
  private readonly nodes = new Map<string, N>();
  private readonly incs = new Map<string, number>();
  private readonly links = new Set<string>();
  inflight: Packet[] = [];

  constructor(
    readonly names: readonly string[],
    /** Makes the state of node `name` at incarnation `inc`; `emit` sends to one node or (null) every linked one. */
    private readonly make: (name: string, inc: number, emit: (to: string | null, msg: unknown) => void) => N,
    /** Called after a node restarted (the test resets what it tracks of that node). */
    private readonly onRestart: (name: string) => void = () => {},
  ) {
    for (const n of names) this.boot(n, 1);
  }

  private boot(name: string, inc: number): void {
    this.incs.set(name, inc);
    this.nodes.set(
      name,
      this.make(name, inc, (to, msg) => {
        const copy = JSON.parse(JSON.stringify(msg)) as unknown;
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

  node(name: string): N {
    return this.nodes.get(name) as N;
  }

  connect(a: string, b: string): void {
    if (a === b || this.linked(a, b)) return;
    this.links.add(this.pair(a, b));
    this.node(a).peerUp(b);
    this.node(b).peerUp(a);
  }

  /** The link goes down: what was in flight on it is lost, and each side sees the other down. */
  disconnect(a: string, b: string): void {
    if (!this.linked(a, b)) return;
    this.links.delete(this.pair(a, b));
    this.inflight = this.inflight.filter((p) => !((p.from === a && p.to === b) || (p.from === b && p.to === a)));
    this.node(a).peerDown(b);
    this.node(b).peerDown(a);
  }

  connectAll(): void {
    for (const a of this.names) for (const b of this.names) if (a < b) this.connect(a, b);
  }

  restart(name: string): void {
    for (const other of this.names) this.disconnect(name, other);
    this.boot(name, (this.incs.get(name) as number) + 1);
    this.onRestart(name);
  }

  /** Delivers (or drops, or duplicates) the in-flight message at `i` modulo their number. */
  deliver(i: number, mode: DeliverMode): void {
    if (this.inflight.length === 0) return;
    const at = i % this.inflight.length;
    const p = this.inflight[at] as Packet;
    if (mode !== 'duplicate') this.inflight.splice(at, 1);
    if (mode === 'drop' || !this.linked(p.from, p.to)) return;
    const msg = this.node(p.to).parse(p.msg);
    expect(msg, 'every message the protocol emits passes the wire check').toBeDefined();
    this.node(p.to).receive(p.from, p.inc, msg as never);
  }

  /** Delivers everything in flight, in order, as TCP links would. */
  drain(): void {
    let guard = 0;
    while (this.inflight.length > 0) {
      this.deliver(0, 'deliver');
      if (++guard > 100_000) throw new Error('the protocol does not quiesce');
    }
  }

  /**
   * Heals every link and runs the protocol without faults (periodic digests included) until nothing
   * is in flight. The default runs past one quiet-digest period, so a digest lost while nothing
   * changed is sent again.
   */
  settle(rounds = QUIET_DIGEST_TICKS + 2): void {
    this.connectAll();
    for (let round = 0; round < rounds; round++) {
      for (const n of this.names) this.node(n).tick();
      this.drain();
    }
  }
}

/** The network's own operations, which every replicated-state property test mixes with its own. */
export type NetOp =
  | { k: 'deliver'; i: number; mode: DeliverMode }
  | { k: 'connect'; a: string; b: string }
  | { k: 'disconnect'; a: string; b: string }
  | { k: 'flush'; n: string }
  | { k: 'tick'; n: string }
  | { k: 'restart'; n: string }
  /** Everything in flight arrives: later faults then hit a quiet, converged state. */
  | { k: 'drain' };

/** One arbitrary per network operation (spread them into the test's `fc.oneof`, next to its own). */
export function netOpArbs(nodeArb: fc.Arbitrary<string>): Array<fc.Arbitrary<NetOp>> {
  return [
    fc.record({ k: fc.constant('deliver' as const), i: fc.nat(), mode: fc.constantFrom<DeliverMode>('deliver', 'deliver', 'deliver', 'drop', 'duplicate') }),
    fc.record({ k: fc.constant('connect' as const), a: nodeArb, b: nodeArb }),
    fc.record({ k: fc.constant('disconnect' as const), a: nodeArb, b: nodeArb }),
    fc.record({ k: fc.constant('flush' as const), n: nodeArb }),
    fc.record({ k: fc.constant('tick' as const), n: nodeArb }),
    fc.record({ k: fc.constant('restart' as const), n: nodeArb }),
    fc.record({ k: fc.constant('drain' as const) }),
  ];
}

const NET_OPS = new Set(['deliver', 'connect', 'disconnect', 'flush', 'tick', 'restart', 'drain']);

/** True when `op` is one of the network's operations (then `runNetOp` runs it). */
export function isNetOp(op: { k: string }): op is NetOp {
  return NET_OPS.has(op.k);
}

/** Runs one network operation on the simulated network. */
export function runNetOp<N extends SimNode>(sim: SimNetwork<N>, op: NetOp): void {
  switch (op.k) {
    case 'deliver':
      sim.deliver(op.i, op.mode);
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
      sim.drain();
      break;
  }
}
