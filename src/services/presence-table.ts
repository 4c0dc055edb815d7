/**
 * The replicated state under `node.presence` (Phoenix.Presence): who is present on which topic,
 * from every node, and the join/leave diffs that changes to it produce.
 *
 * Each node owns its presences (one entry per topic and key it tracks) and replicates them with
 * the owner-versioned protocol of `src/replication/owned-replica.ts`, as the registry and pubsub
 * interest do: full map on link-up, coalesced deltas, digests, pull on a gap; a node's presences
 * leave with it, and only that incarnation's. Every track and update takes a new `ref`, unique in
 * the cluster, so a diff says exactly which meta joined or left (an update is a leave of the old
 * ref and a join of the new one, as in Phoenix).
 *
 * Diffs are batched: changes accumulate until `takeDiffs`, which returns one diff per topic;
 * a ref that joined and left within one batch (or left and came back) appears in neither list.
 * Replaying a node's diffs in order (each diff's leaves, then its joins) from nothing gives
 * exactly its `list` of every topic; the property test checks that.
 *
 * Pure: no sockets, no timers.
 */
import { OwnedReplica, type ReplicaMessage } from '../replication/owned-replica.js';
import { ReplicatedTable } from '../replication/replicated-table.js';

/** One tracked presence as every node lists it. */
export interface PresenceMeta {
  /** The node that tracks it (its owner). */
  readonly node: string;
  /** Unique in the cluster for this track or update: `<node>:<incarnation>:<n>` (Phoenix's `phx_ref`). */
  readonly ref: string;
  /** What `track` or `update` was given. */
  readonly meta: unknown;
}

/** The presences of one key on one topic: one meta per node that tracks it. */
export interface PresenceEntry {
  metas: PresenceMeta[];
}

/** Presences grouped by key, as Phoenix's `%{key => %{metas: [...]}}`; keys in order, metas by node. */
export type PresenceList = Record<string, PresenceEntry>;

/** What changed on one topic: metas that joined and metas that left (an update is in both, under different refs). */
export interface PresenceDiff {
  topic: string;
  joins: PresenceList;
  leaves: PresenceList;
}

/** What a node replicates per (topic, key): the meta and its ref. */
export interface PresenceValue {
  meta: unknown;
  ref: string;
}

export type PresenceMessage = ReplicaMessage<PresenceValue>;

const SEP = '\u0000';
const keyOf = (topic: string, key: string): string => `${topic}${SEP}${key}`;

function isValue(v: unknown): v is PresenceValue {
  return typeof v === 'object' && v !== null && typeof (v as PresenceValue).ref === 'string' && 'meta' in v;
}

const byString = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0);
const byMeta = (a: PresenceMeta, b: PresenceMeta): number => byString(a.node, b.node) || byString(a.ref, b.ref);

interface Pending {
  kind: 'join' | 'leave';
  key: string;
  meta: PresenceMeta;
}

function toList(entries: Iterable<[string, Iterable<PresenceMeta>]>): PresenceList {
  const pairs: Array<[string, PresenceEntry]> = [];
  for (const [key, metas] of entries) {
    const list = [...metas].sort(byMeta);
    if (list.length > 0) pairs.push([key, { metas: list }]);
  }
  pairs.sort((a, b) => byString(a[0], b[0]));
  // fromEntries defines own properties: a key such as "__proto__" is a key like any other.
  return Object.fromEntries(pairs);
}

export class PresenceTable extends ReplicatedTable<PresenceValue> {
  protected readonly replica: OwnedReplica<PresenceValue>;
  /** topic → key → ref → meta, everyone's (this node's included). */
  private readonly view = new Map<string, Map<string, Map<string, PresenceMeta>>>();
  /** topic → ref → the change not yet taken as a diff. */
  private pending = new Map<string, Map<string, Pending>>();
  private refSeq = 0;
  private count = 0;
  /** Joins and leaves handed out in diffs so far. */
  joins = 0;
  leaves = 0;

  constructor(
    readonly self: string,
    readonly incarnation: number,
    /** Sends a message to one node, or to every up node when `to` is null. */
    emit: (to: string | null, msg: PresenceMessage) => void,
    /** Called when a change is pending and none was before: the owner schedules a `takeDiffs`. */
    private readonly onPending: () => void = () => {},
  ) {
    super();
    this.replica = new OwnedReplica<PresenceValue>(self, incarnation, emit, (node, rkey, prev, next) => this.changed(node, rkey, prev, next), isValue);
  }

  // ---- this node's presences -------------------------------------------------------------------

  /** Tracks `key` on `topic` from this node; undefined when this node tracks it already. */
  track(topic: string, key: string, meta: unknown): PresenceMeta | undefined {
    const rkey = keyOf(topic, key);
    if (this.replica.get(rkey) !== undefined) return undefined;
    return this.put(rkey, meta);
  }

  /** Replaces the meta of a key this node tracks (a new ref); undefined when it does not track it. */
  update(topic: string, key: string, meta: unknown): PresenceMeta | undefined {
    const rkey = keyOf(topic, key);
    if (this.replica.get(rkey) === undefined) return undefined;
    return this.put(rkey, meta);
  }

  /** Stops tracking; false when this node did not track it. */
  untrack(topic: string, key: string): boolean {
    return this.replica.delete(keyOf(topic, key));
  }

  private put(rkey: string, meta: unknown): PresenceMeta {
    const ref = `${this.self}:${this.incarnation}:${++this.refSeq}`;
    this.replica.set(rkey, { meta, ref });
    return { node: this.self, ref, meta };
  }

  // ---- views -----------------------------------------------------------------------------------

  /** Everyone's presences on `topic`, grouped by key. */
  list(topic: string): PresenceList {
    const byKey = this.view.get(topic);
    if (!byKey) return {};
    return toList([...byKey].map(([key, refs]) => [key, refs.values()]));
  }

  /** The metas of one key on one topic (one per node that tracks it), by node. */
  get(topic: string, key: string): PresenceMeta[] {
    return [...(this.view.get(topic)?.get(key)?.values() ?? [])].sort(byMeta);
  }

  /** Topics with at least one presence, in order. */
  topics(): string[] {
    return [...this.view.keys()].sort(byString);
  }

  /** Presences in the cluster (metas), as this node sees them. */
  get size(): number {
    return this.count;
  }

  /** Presences this node tracks. */
  ownCount(): number {
    let n = 0;
    for (const _ of this.replica.ownEntries()) n++;
    return n;
  }

  /** The changes since the last call, one diff per topic (topics in order). */
  takeDiffs(): PresenceDiff[] {
    if (this.pending.size === 0) return [];
    const out: PresenceDiff[] = [];
    for (const [topic, byRef] of [...this.pending].sort((a, b) => byString(a[0], b[0]))) {
      const joins = new Map<string, PresenceMeta[]>();
      const leaves = new Map<string, PresenceMeta[]>();
      for (const p of byRef.values()) {
        const into = p.kind === 'join' ? joins : leaves;
        let list = into.get(p.key);
        if (!list) {
          list = [];
          into.set(p.key, list);
        }
        list.push(p.meta);
        if (p.kind === 'join') this.joins++;
        else this.leaves++;
      }
      if (joins.size > 0 || leaves.size > 0) out.push({ topic, joins: toList(joins), leaves: toList(leaves) });
    }
    this.pending = new Map();
    return out;
  }

  // ---- the replica's change listener -----------------------------------------------------------

  private changed(node: string, rkey: string, prev: PresenceValue | undefined, next: PresenceValue | undefined): void {
    // A full map re-sends values the replica already held: same ref, nothing changed.
    if (prev && next && prev.ref === next.ref) return;
    const at = rkey.indexOf(SEP);
    if (at < 0) return; // not a key this protocol makes: a peer's bad entry is ignored, not fatal
    const topic = rkey.slice(0, at);
    const key = rkey.slice(at + 1);
    if (prev) this.remove(topic, key, prev.ref);
    if (next) this.add(topic, key, { node, ref: next.ref, meta: next.meta });
  }

  private add(topic: string, key: string, meta: PresenceMeta): void {
    let byKey = this.view.get(topic);
    if (!byKey) {
      byKey = new Map();
      this.view.set(topic, byKey);
    }
    let refs = byKey.get(key);
    if (!refs) {
      refs = new Map();
      byKey.set(key, refs);
    }
    refs.set(meta.ref, meta);
    this.count++;
    this.note(topic, { kind: 'join', key, meta });
  }

  private remove(topic: string, key: string, ref: string): void {
    const byKey = this.view.get(topic);
    const refs = byKey?.get(key);
    const meta = refs?.get(ref);
    if (!byKey || !refs || !meta) return;
    refs.delete(ref);
    if (refs.size === 0) byKey.delete(key);
    if (byKey.size === 0) this.view.delete(topic);
    this.count--;
    this.note(topic, { kind: 'leave', key, meta });
  }

  private note(topic: string, change: Pending): void {
    const first = this.pending.size === 0;
    let byRef = this.pending.get(topic);
    if (!byRef) {
      byRef = new Map();
      this.pending.set(topic, byRef);
    }
    // A ref's changes alternate join, leave, join...: two in one batch cancel out.
    if (byRef.has(change.meta.ref)) {
      byRef.delete(change.meta.ref);
      if (byRef.size === 0) this.pending.delete(topic);
    } else {
      byRef.set(change.meta.ref, change);
    }
    if (first && this.pending.size > 0) this.onPending();
  }

  // ---- protocol (the replica's, passed through) ------------------------------------------------
}
