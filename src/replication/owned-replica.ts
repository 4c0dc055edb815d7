/**
 * Owner-versioned replicated state: the protocol under pubsub's interest table (and the
 * registry, presence and services to come).
 *
 * Every node owns a map of its own entries and is the only one to write it (Phoenix.Tracker's
 * ownership rule), so there is never a write conflict inside one owner's map; what the layers
 * above do when two owners claim the same thing is theirs to decide, over the merged views.
 * An owner numbers each batch of changes with a version. Peers apply batches in version order
 * and ask for the whole map ("pull") when they see a gap, a new incarnation, or a digest ahead of
 * what they hold. Changes carry values, not operations, so a duplicate is harmless and a late
 * one is recognized by its version. A node's entries go when it goes down, and only that
 * incarnation's: a message of another incarnation than the link's is ignored.
 *
 * The class is pure (no sockets, no timers): a transport carries what it emits, and a
 * simulation test runs exactly this code over a lossy, reordering, duplicating network.
 */

/** An entry on the wire: key and value; a null value deletes the key. */
export type ReplicaChange<V> = [key: string, value: V | null];

/** The protocol's messages. */
export type ReplicaMessage<V> =
  /** The sender's whole map at version `ver`. */
  | { t: 'full'; inc: number; ver: number; entries: Array<[key: string, value: V]> }
  /** The changes that took the sender's map from version `ver - 1` to `ver`. */
  | { t: 'delta'; inc: number; ver: number; changes: Array<ReplicaChange<V>> }
  /** The sender's current version, sent periodically so a lost last delta is noticed. */
  | { t: 'digest'; inc: number; ver: number }
  /** "Send me your whole map." */
  | { t: 'pull' };

/**
 * Why an entry changed: `set` or `delete` by its owner (a delta, or a full map that has or lacks
 * the key), or `drop`: the owner went down, or came back as a new incarnation, so everything the
 * old one held is gone without its owner having deleted it.
 */
export type ReplicaChangeCause = 'set' | 'delete' | 'drop';

/** Called on every change of any node's entries as this node sees them (this node's own included). */
export type ReplicaListener<V> = (node: string, key: string, prev: V | undefined, next: V | undefined, cause: ReplicaChangeCause) => void;

/** Checks one value from the wire; undefined refuses it (and with it the whole message). */
export type ReplicaValueCheck<V> = (value: unknown) => value is V;

/** With no change since the last digest, one digest every this many ticks (30 s at a 2 s period). */
export const QUIET_DIGEST_TICKS = 15;

/** Whether grid tick `n` (of a `gridInterval` at the digest period) is one where a digest goes out even with no change. */
export function isQuietDigestTick(n: number): boolean {
  return n % QUIET_DIGEST_TICKS === 0;
}

/** Most entries one message may carry. */
const MAX_ENTRIES = 100_000;

interface PeerState<V> {
  inc: number;
  ver: number;
  entries: Map<string, V>;
}

export class OwnedReplica<V> {
  private readonly own = new Map<string, V>();
  private pending = new Map<string, V | null>();
  private version = 0;
  private readonly peers = new Map<string, PeerState<V>>();
  private readonly up = new Set<string>();
  /** The version the last digest announced, and the ticks since, while it has not moved. */
  private digestedVersion = -1;
  private quietTicks = 0;

  constructor(
    readonly self: string,
    readonly incarnation: number,
    /** Sends a message to one node, or to every up node when `to` is null. */
    private readonly emit: (to: string | null, msg: ReplicaMessage<V>) => void,
    private readonly onChange: ReplicaListener<V>,
    private readonly isValue: ReplicaValueCheck<V>,
  ) {}

  // ---- this node's own entries ---------------------------------------------------------------

  /** Sets one of this node's entries; it goes out at the next `flush`. */
  set(key: string, value: V): void {
    const prev = this.own.get(key);
    this.own.set(key, value);
    this.pending.set(key, value);
    this.onChange(this.self, key, prev, value, 'set');
  }

  /** Deletes one of this node's entries; returns false if there was none. */
  delete(key: string): boolean {
    const prev = this.own.get(key);
    if (prev === undefined) return false;
    this.own.delete(key);
    this.pending.set(key, null);
    this.onChange(this.self, key, prev, undefined, 'delete');
    return true;
  }

  get(key: string): V | undefined {
    return this.own.get(key);
  }

  /** This node's entries. */
  ownEntries(): IterableIterator<[string, V]> {
    return this.own.entries();
  }

  /** The version of this node's map as announced so far. */
  get ver(): number {
    return this.version;
  }

  // ---- protocol --------------------------------------------------------------------------------

  /** Announces the pending changes to every up node: one delta per flush, however many changes. */
  flush(): void {
    if (this.pending.size === 0) return;
    const changes = [...this.pending.entries()];
    this.pending = new Map();
    this.version++;
    if (this.up.size > 0) this.emit(null, { t: 'delta', inc: this.incarnation, ver: this.version, changes });
  }

  /** A node came up (or messages to and from it may have been lost): it gets our whole map. */
  peerUp(node: string): void {
    this.up.add(node);
    this.flush();
    this.emit(node, { t: 'full', inc: this.incarnation, ver: this.version, entries: [...this.own.entries()] });
  }

  /** A node went down: its entries go with it. */
  peerDown(node: string): void {
    this.up.delete(node);
    this.dropPeer(node);
  }

  /**
   * Periodic: tells every up node our version, so a lost last delta is repaired. Only when the
   * version moved since the last digest, and otherwise every `QUIET_DIGEST_TICKS` ticks: on the
   * mesh a delta is lost only when its lane refused it or a link was replaced (which resyncs with
   * a full map anyway), so an idle cluster need not exchange digests every period (each one wakes
   * every member).
   *
   * @param quietDigestDue whether this tick is one where a digest goes out even with no change.
   *   Over the mesh it is the epoch-grid tick `n % QUIET_DIGEST_TICKS === 0`, so the quiet digests
   *   of every replica on every node leave at the same instant and each member wakes once for all of
   *   them; without it, every `QUIET_DIGEST_TICKS`-th call of this replica.
   */
  tick(quietDigestDue?: boolean): void {
    this.flush();
    if (this.up.size === 0) return;
    const due = quietDigestDue ?? ++this.quietTicks >= QUIET_DIGEST_TICKS;
    if (this.version === this.digestedVersion && !due) return;
    this.quietTicks = 0;
    this.digestedVersion = this.version;
    this.emit(null, { t: 'digest', inc: this.incarnation, ver: this.version });
  }

  /** Whether `node` is up as far as this replica knows. */
  isUp(node: string): boolean {
    return this.up.has(node);
  }

  /** A message from `node`, whose current incarnation (as its link vouches) is `incarnation`. */
  receive(node: string, incarnation: number, msg: ReplicaMessage<V>): void {
    if (!this.up.has(node)) return;
    if (msg.t === 'pull') {
      this.flush();
      this.emit(node, { t: 'full', inc: this.incarnation, ver: this.version, entries: [...this.own.entries()] });
      return;
    }
    if (msg.inc !== incarnation) return;
    if (this.apply(node, msg) === 'pull') this.emit(node, { t: 'pull' });
  }

  private apply(node: string, msg: Exclude<ReplicaMessage<V>, { t: 'pull' }>): 'ok' | 'pull' {
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
        for (const [key, value] of msg.changes) this.setPeer(node, cur, key, value);
        cur.ver = msg.ver;
        return 'ok';
      }
      case 'digest':
        return !cur || msg.inc > cur.inc || (msg.inc === cur.inc && msg.ver > cur.ver) ? 'pull' : 'ok';
    }
  }

  private replace(node: string, inc: number, ver: number, entries: Array<[string, V]>): void {
    let cur = this.peers.get(node);
    if (!cur || cur.inc !== inc) {
      this.dropPeer(node);
      cur = { inc, ver, entries: new Map() };
      this.peers.set(node, cur);
    }
    cur.ver = ver;
    // Keys the full map no longer has are deleted; the others are set (listeners see only real changes).
    const next = new Map(entries);
    for (const key of [...cur.entries.keys()]) if (!next.has(key)) this.setPeer(node, cur, key, null);
    for (const [key, value] of next) this.setPeer(node, cur, key, value);
  }

  private setPeer(node: string, state: PeerState<V>, key: string, value: V | null): void {
    const prev = state.entries.get(key);
    if (value === null) {
      if (prev === undefined) return;
      state.entries.delete(key);
      this.onChange(node, key, prev, undefined, 'delete');
      return;
    }
    state.entries.set(key, value);
    this.onChange(node, key, prev, value, 'set');
  }

  private dropPeer(node: string): void {
    const cur = this.peers.get(node);
    if (!cur) return;
    this.peers.delete(node);
    for (const [key, value] of cur.entries) this.onChange(node, key, value, undefined, 'drop');
  }

  // ---- views -----------------------------------------------------------------------------------

  /** A node's entries as this node holds them (this node's own for `self`). */
  entriesOf(node: string): Array<[string, V]> {
    if (node === this.self) return [...this.own.entries()];
    return [...(this.peers.get(node)?.entries ?? [])];
  }

  /** Version and incarnation held of a node's map. */
  versionOf(node: string): { inc: number; ver: number } | undefined {
    const cur = this.peers.get(node);
    return cur ? { inc: cur.inc, ver: cur.ver } : undefined;
  }

  /** Other nodes whose entries this replica holds. */
  peerNodes(): string[] {
    return [...this.peers.keys()];
  }

  /**
   * Checks the shape of a message from the wire (untrusted bytes, decoded): undefined when it is
   * not one, or when any value fails the value check.
   */
  parse(v: unknown): ReplicaMessage<V> | undefined {
    if (typeof v !== 'object' || v === null) return undefined;
    const m = v as Record<string, unknown>;
    const num = (x: unknown): x is number => typeof x === 'number' && Number.isFinite(x);
    const pairs = (x: unknown, allowNull: boolean): boolean =>
      Array.isArray(x) &&
      x.length <= MAX_ENTRIES &&
      x.every((e) => Array.isArray(e) && e.length === 2 && typeof e[0] === 'string' && ((allowNull && e[1] === null) || this.isValue(e[1])));
    switch (m.t) {
      case 'pull':
        return { t: 'pull' };
      case 'digest':
        return num(m.inc) && num(m.ver) ? { t: 'digest', inc: m.inc, ver: m.ver } : undefined;
      case 'full':
        return num(m.inc) && num(m.ver) && pairs(m.entries, false)
          ? { t: 'full', inc: m.inc, ver: m.ver, entries: m.entries as Array<[string, V]> }
          : undefined;
      case 'delta':
        return num(m.inc) && num(m.ver) && pairs(m.changes, true)
          ? { t: 'delta', inc: m.inc, ver: m.ver, changes: m.changes as Array<ReplicaChange<V>> }
          : undefined;
      default:
        return undefined;
    }
  }
}
