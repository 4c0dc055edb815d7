/**
 * Subscription interest: which node has subscribers for which patterns (and how many members
 * of each queue group), replicated to every node so a publisher sends a topic only to nodes
 * that want it.
 *
 * Each node owns its own interest and is the only writer of it (Phoenix.Tracker's ownership
 * rule). It numbers every change of its interest with a version; peers apply changes in version
 * order and ask for the whole set when they see a gap, a new incarnation, or a digest that
 * disagrees. Changes carry absolute counts, so a duplicated message is harmless, and a delayed
 * one is recognized by its version and ignored. The transport (mesh or redis adapter) carries
 * the messages; this file is pure and is tested over a simulated lossy network.
 */
import type { ParsedPattern } from './subject.js';
import { parsePattern } from './subject.js';
import { SubjectIndex } from './subject-index.js';

/** One interest entry on the wire: pattern, queue group (null for plain subscribers), member count (0 = gone). */
export type InterestTuple = [pattern: string, group: string | null, count: number];

/** The interest protocol's messages. */
export type InterestMessage =
  /** The sender's whole interest at version `ver`. */
  | { t: 'full'; inc: number; ver: number; entries: InterestTuple[] }
  /** The changes that took the sender's interest from `ver - 1` to `ver`. */
  | { t: 'delta'; inc: number; ver: number; changes: InterestTuple[] }
  /** The sender's current version, sent periodically so a lost last delta is noticed. */
  | { t: 'digest'; inc: number; ver: number }
  /** "Send me your whole interest." */
  | { t: 'pull' };

const key = (pattern: string, group: string | null): string => (group === null ? pattern : `${group}\u0000${pattern}`);

/** This node's own interest, with its version and the changes not yet announced. */
export class LocalInterest {
  private readonly counts = new Map<string, InterestTuple>();
  private pending = new Map<string, InterestTuple>();
  private version = 0;

  constructor(readonly incarnation: number) {}

  get ver(): number {
    return this.version;
  }

  /** Records one more (or one fewer, `delta = -1`) local subscriber for `pattern` (in `group`). Returns the new count. */
  change(pattern: string, group: string | null, delta: 1 | -1): number {
    const k = key(pattern, group);
    const cur = this.counts.get(k);
    const count = (cur?.[2] ?? 0) + delta;
    if (count < 0) throw new Error(`interest count below zero for ${k}`);
    const tuple: InterestTuple = [pattern, group, count];
    if (count === 0) this.counts.delete(k);
    else this.counts.set(k, tuple);
    this.pending.set(k, tuple);
    return count;
  }

  /** True when changes wait to be announced. */
  get dirty(): boolean {
    return this.pending.size > 0;
  }

  /**
   * Takes the pending changes as one delta with the next version (undefined when nothing
   * changed). Coalesced: ten subscribes in one tick are one message.
   */
  takeDelta(): InterestMessage | undefined {
    if (this.pending.size === 0) return undefined;
    const changes = [...this.pending.values()];
    this.pending = new Map();
    this.version++;
    return { t: 'delta', inc: this.incarnation, ver: this.version, changes };
  }

  /** The whole interest at the last announced version. Callers take the pending delta first (see `InterestSync`). */
  full(): InterestMessage {
    if (this.pending.size > 0) throw new Error('LocalInterest.full() with unannounced changes: take the delta first');
    return { t: 'full', inc: this.incarnation, ver: this.version, entries: [...this.counts.values()] };
  }

  digest(): InterestMessage {
    return { t: 'digest', inc: this.incarnation, ver: this.version };
  }

  /** Every entry, pending or not: the true local interest. */
  entries(): InterestTuple[] {
    return [...this.counts.values()];
  }
}

/** One node's interest as this node knows it. */
interface PeerInterest {
  inc: number;
  ver: number;
  entries: Map<string, InterestRef>;
}

/** An indexed interest entry: which node, which group, how many members. */
export interface InterestRef {
  readonly node: string;
  readonly group: string | null;
  count: number;
  readonly parsed: ParsedPattern;
}

/** Where a topic must go. */
export interface Route {
  /** Nodes with at least one matching plain subscriber. */
  readonly plain: ReadonlySet<string>;
  /** Per queue group: the nodes with members matching the topic, and how many each. */
  readonly groups: ReadonlyMap<string, ReadonlyArray<{ node: string; count: number }>>;
}

const EMPTY_ROUTE: Route = { plain: new Set(), groups: new Map() };
const ROUTE_CACHE_LIMIT = 4096;

/**
 * The interest of every known node (this one included), indexed by pattern, with a cache of
 * routes by topic so the publish path is one Map lookup for a repeated topic.
 */
export class InterestTable {
  private readonly peers = new Map<string, PeerInterest>();
  private readonly index = new SubjectIndex<InterestRef>();
  private routes = new Map<string, Route>();

  /** Applies one message from `node`. Returns what the caller must do: nothing, or pull the full set. */
  apply(node: string, msg: InterestMessage): 'ok' | 'pull' {
    const cur = this.peers.get(node);
    switch (msg.t) {
      case 'full': {
        if (cur && (msg.inc < cur.inc || (msg.inc === cur.inc && msg.ver < cur.ver))) return 'ok';
        this.replace(node, msg.inc, msg.ver, msg.entries);
        return 'ok';
      }
      case 'delta': {
        if (!cur || msg.inc > cur.inc) return 'pull';
        if (msg.inc < cur.inc || msg.ver <= cur.ver) return 'ok'; // old or duplicate
        if (msg.ver !== cur.ver + 1) return 'pull'; // a gap: some delta was lost
        for (const [pattern, group, count] of msg.changes) this.set(node, cur, pattern, group, count);
        cur.ver = msg.ver;
        this.routes.clear();
        return 'ok';
      }
      case 'digest': {
        if (!cur || msg.inc > cur.inc || (msg.inc === cur.inc && msg.ver > cur.ver)) return 'pull';
        return 'ok';
      }
      case 'pull':
        return 'ok';
    }
  }

  /** Sets one entry of this node's own interest (it has no versions to check: it is the source). */
  setOwn(node: string, inc: number, pattern: string, group: string | null, count: number): void {
    let state = this.peers.get(node);
    if (!state) {
      state = { inc, ver: 0, entries: new Map() };
      this.peers.set(node, state);
    }
    this.set(node, state, pattern, group, count);
    this.routes.clear();
  }

  /** Forgets a node (it went down). */
  drop(node: string): void {
    const cur = this.peers.get(node);
    if (!cur) return;
    for (const ref of cur.entries.values()) this.index.remove(ref.parsed, ref);
    this.peers.delete(node);
    this.routes.clear();
  }

  /** Nodes this table knows. */
  nodes(): string[] {
    return [...this.peers.keys()];
  }

  /** A node's entries as tuples (tests and diagnostics). */
  entriesOf(node: string): InterestTuple[] {
    const cur = this.peers.get(node);
    if (!cur) return [];
    return [...cur.entries.values()].map((r) => [r.parsed.pattern, r.group, r.count]);
  }

  /** Version this table holds of a node's interest. */
  versionOf(node: string): { inc: number; ver: number } | undefined {
    const cur = this.peers.get(node);
    return cur ? { inc: cur.inc, ver: cur.ver } : undefined;
  }

  /** The nodes and queue-group members a topic must reach. */
  route(topic: string): Route {
    const cached = this.routes.get(topic);
    if (cached) return cached;
    let plain: Set<string> | undefined;
    let groups: Map<string, Array<{ node: string; count: number }>> | undefined;
    this.index.match(topic, (ref) => {
      if (ref.group === null) {
        plain ??= new Set();
        plain.add(ref.node);
        return;
      }
      groups ??= new Map();
      let list = groups.get(ref.group);
      if (!list) {
        list = [];
        groups.set(ref.group, list);
      }
      // A node may match through several patterns of the same group: count its members once per pattern.
      const at = list.find((e) => e.node === ref.node);
      if (at) at.count += ref.count;
      else list.push({ node: ref.node, count: ref.count });
    });
    const route: Route = plain === undefined && groups === undefined ? EMPTY_ROUTE : { plain: plain ?? new Set(), groups: groups ?? new Map() };
    if (groups) for (const list of groups.values()) list.sort((a, b) => (a.node < b.node ? -1 : a.node > b.node ? 1 : 0));
    if (this.routes.size >= ROUTE_CACHE_LIMIT) this.routes.clear();
    this.routes.set(topic, route);
    return route;
  }

  private replace(node: string, inc: number, ver: number, entries: InterestTuple[]): void {
    this.drop(node);
    const state: PeerInterest = { inc, ver, entries: new Map() };
    this.peers.set(node, state);
    for (const [pattern, group, count] of entries) this.set(node, state, pattern, group, count);
    this.routes.clear();
  }

  private set(node: string, state: PeerInterest, pattern: string, group: string | null, count: number): void {
    const k = key(pattern, group);
    const ref = state.entries.get(k);
    if (count <= 0) {
      if (ref) {
        this.index.remove(ref.parsed, ref);
        state.entries.delete(k);
      }
      return;
    }
    if (ref) {
      ref.count = count;
      return;
    }
    let parsed: ParsedPattern;
    try {
      parsed = parsePattern(pattern);
    } catch {
      return; // a peer's malformed pattern is ignored, not fatal
    }
    const created: InterestRef = { node, group, count, parsed };
    state.entries.set(k, created);
    this.index.add(parsed, created);
  }
}

/**
 * The interest protocol of one node: its own interest, the table of everyone's, and the rules
 * for what to send when. Transports call it and carry what it emits; it holds no sockets and
 * no timers, so the simulation tests run exactly this code.
 */
export class InterestSync {
  readonly local: LocalInterest;
  readonly table = new InterestTable();
  private readonly up = new Set<string>();

  constructor(
    readonly self: string,
    incarnation: number,
    /** Sends a message to one node, or to every up node when `to` is null. */
    private readonly emit: (to: string | null, msg: InterestMessage) => void,
  ) {
    this.local = new LocalInterest(incarnation);
  }

  /** Records a local subscriber joining (+1) or leaving (-1); the change goes out at the next `flush`. */
  change(pattern: string, group: string | null, delta: 1 | -1): void {
    const count = this.local.change(pattern, group, delta);
    // This node's own entries live in the same table, so routing treats "self" like any member.
    this.table.setOwn(this.self, this.local.incarnation, pattern, group, count);
  }

  /** Announces the pending changes to every up node (one delta per flush, however many changes). */
  flush(): void {
    const delta = this.local.takeDelta();
    if (delta && this.up.size > 0) this.emit(null, delta);
  }

  /** A node came up (or its link was replaced and may have lost messages): it gets our whole interest. */
  peerUp(node: string): void {
    this.up.add(node);
    this.flush();
    this.emit(node, this.local.full());
  }

  /** A node went down: its interest goes with it. */
  peerDown(node: string): void {
    this.up.delete(node);
    this.table.drop(node);
  }

  /** Whether `node` is up as far as this protocol knows. */
  isUp(node: string): boolean {
    return this.up.has(node);
  }

  /** Periodic: tells every up node our version, so a lost last delta is repaired. */
  tick(): void {
    this.flush();
    if (this.up.size > 0) this.emit(null, this.local.digest());
  }

  /** A message from `node` (whose current incarnation is `incarnation`). Messages of another incarnation are ignored. */
  receive(node: string, incarnation: number, msg: InterestMessage): void {
    if (!this.up.has(node)) return;
    if (msg.t === 'pull') {
      this.flush();
      this.emit(node, this.local.full());
      return;
    }
    if (msg.inc !== incarnation) return;
    if (this.table.apply(node, msg) === 'pull') this.emit(node, { t: 'pull' });
  }
}

/** Checks the shape of an interest message from the wire; undefined when it is not one. */
export function asInterestMessage(v: unknown): InterestMessage | undefined {
  if (typeof v !== 'object' || v === null) return undefined;
  const m = v as Record<string, unknown>;
  const isTuples = (x: unknown): x is InterestTuple[] =>
    Array.isArray(x) &&
    x.length <= 100_000 &&
    x.every(
      (e) =>
        Array.isArray(e) &&
        e.length === 3 &&
        typeof e[0] === 'string' &&
        (e[1] === null || typeof e[1] === 'string') &&
        typeof e[2] === 'number' &&
        Number.isInteger(e[2]) &&
        e[2] >= 0,
    );
  const num = (x: unknown): x is number => typeof x === 'number' && Number.isFinite(x);
  switch (m.t) {
    case 'pull':
      return { t: 'pull' };
    case 'digest':
      return num(m.inc) && num(m.ver) ? { t: 'digest', inc: m.inc, ver: m.ver } : undefined;
    case 'full':
      return num(m.inc) && num(m.ver) && isTuples(m.entries) ? { t: 'full', inc: m.inc, ver: m.ver, entries: m.entries } : undefined;
    case 'delta':
      return num(m.inc) && num(m.ver) && isTuples(m.changes) ? { t: 'delta', inc: m.inc, ver: m.ver, changes: m.changes } : undefined;
    default:
      return undefined;
  }
}
