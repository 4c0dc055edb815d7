/**
 * A deterministic simulated network with virtual time, for protocols whose safety depends on
 * timing (the quorum lease). Unlike `replica-sim.ts` (which has no clock), every node here has
 * its own monotonic clock running at its own rate (within a drift bound) from its own origin, and
 * a wall clock off by its own skew; every message gets its own delay (so messages reorder), and
 * may be lost or duplicated; links are cut and healed, and each side learns of it only after a
 * detection delay (as the mesh's failure detector would); nodes pause (SIGSTOP: a paused node
 * processes nothing and its timers do not fire; its clock keeps running, so on resume it jumps)
 * and restart (state lost, new incarnation, new clock). All randomness comes from one seed.
 *
 * What crosses a link is a JSON copy, checked by the receiver's wire check (`parse`), exactly as
 * the transports do. A node asks to be woken with `nextWakeAt()` (its own clock); the simulation
 * maps that to true time and calls `tick()` then.
 */
import { expect } from 'vitest';

/** What a timed protocol node offers the simulation. */
export interface TimedNode {
  peerUp(node: string): void;
  peerDown(node: string): void;
  receive(from: string, incarnation: number, msg: never): void;
  tick(): void;
  nextWakeAt(): number | undefined;
}

/** The environment the simulation gives a node. */
export interface TimedEnv {
  /** This node's monotonic clock. */
  now(): number;
  /** This node's wall clock (true time plus its skew, in ms). */
  wallNow(): number;
  /** Sends one message (dropped when the link is cut, maybe lost, duplicated or delayed). */
  send(to: string, msg: unknown): void;
}

/** How the network behaves; changeable at any time. */
export interface NetProfile {
  /** Delay of each message, uniform in [minDelayMs, maxDelayMs]. */
  minDelayMs: number;
  maxDelayMs: number;
  /** Chance a message gets a long delay instead, uniform up to `longDelayMs`. */
  longDelayChance: number;
  longDelayMs: number;
  /** Chance a message is lost, and that it is delivered twice (the copy with its own delay). */
  loss: number;
  duplicate: number;
}

export const QUIET_NET: NetProfile = { minDelayMs: 0.2, maxDelayMs: 3, longDelayChance: 0, longDelayMs: 0, loss: 0, duplicate: 0 };

export interface TimedSimOptions {
  seed: number;
  /** Each clock's rate is in [1 - maxDrift, 1 + maxDrift] of true time. */
  maxDrift: number;
  /** Each node's wall clock is off true time by up to ± this. */
  maxWallSkewMs: number;
  /** How long a side takes to see a cut link (or a crashed peer) down: uniform in [min, max]. */
  detectMs: [number, number];
  /** How long a healed link (or a restarted peer) takes to come up. */
  connectMs: [number, number];
  net: NetProfile;
}

/** A small seeded PRNG (mulberry32): the whole run follows from the seed. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** One node incarnation's clock: local = base + rate · (true - origin). */
export interface SimClock {
  origin: number;
  base: number;
  rate: number;
}

type SimEvent =
  | { kind: 'deliver'; from: string; fromInc: number; to: string; toInc: number; msg: unknown }
  | { kind: 'wake'; node: string; inc: number; gen: number }
  | { kind: 'view'; node: string; inc: number; peer: string; up: boolean }
  | { kind: 'resume'; node: string; inc: number; gen: number }
  | { kind: 'call'; fn: () => void };

interface Scheduled {
  at: number;
  seq: number;
  ev: SimEvent;
}

/** Binary min-heap on (at, seq). */
class EventQueue {
  private readonly heap: Scheduled[] = [];
  get size(): number {
    return this.heap.length;
  }
  peek(): Scheduled | undefined {
    return this.heap[0];
  }
  push(e: Scheduled): void {
    const h = this.heap;
    h.push(e);
    let i = h.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!before(h[i] as Scheduled, h[p] as Scheduled)) break;
      [h[i], h[p]] = [h[p] as Scheduled, h[i] as Scheduled];
      i = p;
    }
  }
  pop(): Scheduled | undefined {
    const h = this.heap;
    const top = h[0];
    const last = h.pop();
    if (h.length > 0 && last) {
      h[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < h.length && before(h[l] as Scheduled, h[m] as Scheduled)) m = l;
        if (r < h.length && before(h[r] as Scheduled, h[m] as Scheduled)) m = r;
        if (m === i) break;
        [h[i], h[m]] = [h[m] as Scheduled, h[i] as Scheduled];
        i = m;
      }
    }
    return top;
  }
}
const before = (a: Scheduled, b: Scheduled): boolean => a.at < b.at || (a.at === b.at && a.seq < b.seq);

interface NodeSlot<N> {
  node: N;
  inc: number;
  clock: SimClock;
  wallSkew: number;
  paused: boolean;
  pauseGen: number;
  /** What arrived while paused, in arrival order. */
  backlog: Array<() => void>;
  wakeGen: number;
  /** Peers this incarnation sees up. */
  view: Set<string>;
}

export class TimedSim<N extends TimedNode> {
  /** True time, ms. */
  time = 0;
  readonly random: () => number;
  net: NetProfile;
  private readonly queue = new EventQueue();
  private seq = 0;
  private readonly slots = new Map<string, NodeSlot<N>>();
  private readonly cut = new Set<string>();
  private readonly incs = new Map<string, number>();
  /** Messages delivered, dropped (cut or lost), and refused by the wire check. */
  readonly counts = { sent: 0, delivered: 0, dropped: 0, malformed: 0, events: 0 };

  constructor(
    readonly names: readonly string[],
    private readonly opts: TimedSimOptions,
    /** Makes node `name` at incarnation `inc` (called again on every restart). */
    private readonly make: (name: string, inc: number, env: TimedEnv) => N,
    /** The receiver's wire check: undefined refuses the message. */
    private readonly parse: (v: unknown) => unknown,
    /** Called just before a node incarnation is dropped by a restart (the test closes what it tracks). */
    private readonly onCrash: (name: string, inc: number) => void = () => {},
  ) {
    this.random = prng(opts.seed);
    this.net = opts.net;
    for (const n of names) this.boot(n, 1);
    // Everyone connected at the start: each side sees the others up after a connect delay.
    for (const a of names) for (const b of names) if (a !== b) this.scheduleView(a, b, true, this.between(opts.connectMs));
  }

  private between([lo, hi]: [number, number]): number {
    return lo + this.random() * (hi - lo);
  }

  private boot(name: string, inc: number): void {
    this.incs.set(name, inc);
    const d = this.opts.maxDrift;
    const clock: SimClock = { origin: this.time, base: 1000 + Math.floor(this.random() * 1e6), rate: 1 - d + 2 * d * this.random() };
    const wallSkew = (2 * this.random() - 1) * this.opts.maxWallSkewMs;
    const slot = { inc, clock, wallSkew, paused: false, pauseGen: 0, backlog: [], wakeGen: 0, view: new Set<string>() } as unknown as NodeSlot<N>;
    this.slots.set(name, slot);
    const env: TimedEnv = {
      now: () => this.localTime(clock, this.time),
      wallNow: () => this.time + wallSkew,
      send: (to, msg) => this.send(name, inc, to, msg),
    };
    slot.node = this.make(name, inc, env);
    this.reschedule(name);
  }

  // ---- clocks ------------------------------------------------------------------------------------

  localTime(clock: SimClock, t: number): number {
    return clock.base + clock.rate * (t - clock.origin);
  }

  /** The true time at which `clock` reads `local`. */
  trueTime(clock: SimClock, local: number): number {
    return clock.origin + (local - clock.base) / clock.rate;
  }

  clockOf(name: string): SimClock {
    return this.slot(name).clock;
  }

  incOf(name: string): number {
    return this.slot(name).inc;
  }

  node(name: string): N {
    return this.slot(name).node;
  }

  isPaused(name: string): boolean {
    return this.slot(name).paused;
  }

  private slot(name: string): NodeSlot<N> {
    return this.slots.get(name) as NodeSlot<N>;
  }

  // ---- scheduling --------------------------------------------------------------------------------

  private push(at: number, ev: SimEvent): void {
    this.queue.push({ at: Math.max(at, this.time), seq: this.seq++, ev });
  }

  /** Runs `fn` at true time `at` (a test's own action). */
  at(at: number, fn: () => void): void {
    this.push(at, { kind: 'call', fn });
  }

  /** Asks the node when it wants its next tick, and schedules it (only the latest request counts). */
  reschedule(name: string): void {
    const s = this.slot(name);
    const gen = ++s.wakeGen;
    if (s.paused) return; // resume reschedules
    const local = s.node.nextWakeAt();
    if (local === undefined) return;
    let at = this.trueTime(s.clock, local);
    // Float rounding must not leave the node's clock a hair before what it asked for.
    while (this.localTime(s.clock, at) < local) at += 1e-9 * Math.max(1, Math.abs(at));
    this.push(at, { kind: 'wake', node: name, inc: s.inc, gen });
  }

  private pair(a: string, b: string): string {
    return a < b ? `${a}|${b}` : `${b}|${a}`;
  }

  isCut(a: string, b: string): boolean {
    return this.cut.has(this.pair(a, b));
  }

  private send(from: string, fromInc: number, to: string, msg: unknown): void {
    if (this.incs.get(from) !== fromInc) return; // a crashed incarnation sends nothing
    this.counts.sent++;
    if (!this.slots.has(to) || this.isCut(from, to) || this.random() < this.net.loss) {
      this.counts.dropped++;
      return;
    }
    const copy = JSON.parse(JSON.stringify(msg)) as unknown;
    const toInc = this.slot(to).inc;
    const copies = this.random() < this.net.duplicate ? 2 : 1;
    for (let i = 0; i < copies; i++) {
      const delay =
        this.random() < this.net.longDelayChance
          ? this.random() * this.net.longDelayMs
          : this.net.minDelayMs + this.random() * (this.net.maxDelayMs - this.net.minDelayMs);
      this.push(this.time + delay, { kind: 'deliver', from, fromInc, to, toInc, msg: copy });
    }
  }

  private scheduleView(node: string, peer: string, up: boolean, delay: number): void {
    this.push(this.time + delay, { kind: 'view', node, inc: this.slot(node).inc, peer, up });
  }

  /** Runs every event up to true time `until` (inclusive), then sets the time to it. */
  runUntil(until: number): void {
    for (;;) {
      const top = this.queue.peek();
      if (!top || top.at > until) break;
      this.queue.pop();
      this.time = top.at;
      this.counts.events++;
      if (this.counts.events > 5_000_000) throw new Error('the simulation does not quiesce');
      this.dispatch(top.ev);
    }
    this.time = until;
  }

  run(ms: number): void {
    this.runUntil(this.time + ms);
  }

  private dispatch(ev: SimEvent): void {
    switch (ev.kind) {
      case 'call':
        ev.fn();
        return;
      case 'wake': {
        const s = this.slot(ev.node);
        if (s.inc !== ev.inc || s.wakeGen !== ev.gen || s.paused) return;
        s.node.tick();
        this.reschedule(ev.node);
        return;
      }
      case 'deliver': {
        const s = this.slot(ev.to);
        if (s.inc !== ev.toInc || this.isCut(ev.from, ev.to)) {
          this.counts.dropped++;
          return;
        }
        this.onNode(ev.to, () => {
          const msg = this.parse(ev.msg);
          if (msg === undefined) {
            this.counts.malformed++;
            expect(msg, 'every message the protocol emits passes the wire check').toBeDefined();
            return;
          }
          this.counts.delivered++;
          s.node.receive(ev.from, ev.fromInc, msg as never);
        });
        return;
      }
      case 'view': {
        const s = this.slot(ev.node);
        if (s.inc !== ev.inc) return;
        // A stale plan: the link changed again since (or the peer is not there to connect to).
        const linked = !this.isCut(ev.node, ev.peer);
        if (ev.up !== linked || s.view.has(ev.peer) === ev.up) return;
        if (ev.up) s.view.add(ev.peer);
        else s.view.delete(ev.peer);
        this.onNode(ev.node, () => (ev.up ? s.node.peerUp(ev.peer) : s.node.peerDown(ev.peer)));
        return;
      }
      case 'resume': {
        const s = this.slot(ev.node);
        if (s.inc !== ev.inc || s.pauseGen !== ev.gen || !s.paused) return;
        this.resume(ev.node);
        return;
      }
    }
  }

  /** Runs `fn` on the node now, or when it resumes if paused. */
  private onNode(name: string, fn: () => void): void {
    const s = this.slot(name);
    if (s.paused) {
      s.backlog.push(fn);
      return;
    }
    fn();
    this.reschedule(name);
  }

  // ---- faults ------------------------------------------------------------------------------------

  /** Cuts the link between a and b: in-flight messages are lost; each side sees the other down after its detection delay. */
  cutLink(a: string, b: string): void {
    if (a === b || this.isCut(a, b)) return;
    this.cut.add(this.pair(a, b));
    this.scheduleView(a, b, false, this.between(this.opts.detectMs));
    this.scheduleView(b, a, false, this.between(this.opts.detectMs));
  }

  healLink(a: string, b: string): void {
    if (a === b || !this.isCut(a, b)) return;
    this.cut.delete(this.pair(a, b));
    this.scheduleView(a, b, true, this.between(this.opts.connectMs));
    this.scheduleView(b, a, true, this.between(this.opts.connectMs));
  }

  /** Splits the nodes into the groups of `side` (node → group number). */
  partition(side: Record<string, number>): void {
    for (const a of this.names) for (const b of this.names) if (a < b && side[a] !== side[b]) this.cutLink(a, b);
  }

  healAll(): void {
    for (const a of this.names) for (const b of this.names) if (a < b) this.healLink(a, b);
  }

  /**
   * Pauses a node for `ms` (SIGSTOP then SIGCONT). With `detected`, its peers see it down while
   * paused (the failure detector noticed) and up again after.
   */
  pause(name: string, ms: number, detected: boolean): void {
    const s = this.slot(name);
    if (s.paused) return;
    s.paused = true;
    const gen = ++s.pauseGen;
    s.wakeGen++;
    this.push(this.time + ms, { kind: 'resume', node: name, inc: s.inc, gen });
    if (detected) {
      for (const peer of this.names) {
        if (peer === name || this.isCut(name, peer)) continue;
        const delay = this.between(this.opts.detectMs);
        if (delay < ms) {
          // Seen down (the link dropped by the detector), then reconnected after the resume.
          this.cutLink(name, peer);
          this.at(this.time + ms, () => this.healLink(name, peer));
        }
      }
    }
  }

  /** SIGCONT: what arrived meanwhile is handled in arrival order, the overdue timer fires (in either order). */
  resume(name: string): void {
    const s = this.slot(name);
    if (!s.paused) return;
    s.paused = false;
    const backlog = s.backlog.splice(0);
    const timerFirst = this.random() < 0.5;
    if (timerFirst) s.node.tick();
    for (const fn of backlog) fn();
    if (!timerFirst) s.node.tick();
    this.reschedule(name);
  }

  /** Crash and restart: state lost, new incarnation and clock; peers see the old one go and the new one come. */
  restart(name: string): void {
    const old = this.slot(name);
    this.onCrash(name, old.inc);
    const peersSeen = this.names.filter((p) => p !== name);
    this.boot(name, old.inc + 1);
    for (const peer of peersSeen) {
      const ps = this.slot(peer);
      if (ps.view.has(name)) {
        // The peer sees the old incarnation down (connection closed), then the new one up.
        ps.view.delete(name);
        this.onNode(peer, () => ps.node.peerDown(name));
      }
      if (!this.isCut(name, peer)) {
        this.scheduleView(peer, name, true, this.between(this.opts.connectMs));
        this.scheduleView(name, peer, true, this.between(this.opts.connectMs));
      }
    }
  }

  /** Replaces a node's protocol instance without a new incarnation (a handle stopped and declared again). */
  replace(name: string, make: (env: TimedEnv) => N): void {
    const s = this.slot(name);
    const clock = s.clock;
    const env: TimedEnv = {
      now: () => this.localTime(clock, this.time),
      wallNow: () => this.time + s.wallSkew,
      send: (to, msg) => this.send(name, s.inc, to, msg),
    };
    s.node = make(env);
    for (const peer of s.view) s.node.peerUp(peer);
    this.reschedule(name);
  }

  /** Every peer this node currently sees up. */
  viewOf(name: string): string[] {
    return [...this.slot(name).view];
  }
}
