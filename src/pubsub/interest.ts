/**
 * Subscription interest: which node has subscribers for which patterns (and how many members
 * of each queue group), replicated to every node so a publisher sends a topic only to nodes
 * that want it.
 *
 * Each node owns its own interest: a map from `(queue group, pattern)` to a member count,
 * replicated by the owner-versioned protocol of `src/replication/owned-replica.ts` (full map on
 * link-up, coalesced deltas, digests, pull on a gap). This file keeps the pattern index and the
 * per-topic route cache over everyone's interest, this node's own included.
 */
import { OwnedReplica, type ReplicaMessage } from '../replication/owned-replica.js';
import { ReplicatedTable } from '../replication/replicated-table.js';
import type { ParsedPattern } from './subject.js';
import { parsePattern } from './subject.js';
import { SubjectIndex } from './subject-index.js';

/** One interest entry on the wire: pattern, queue group (null for plain subscribers), member count (0 = gone). */
export type InterestTuple = [pattern: string, group: string | null, count: number];

/** The interest protocol's messages: the replication protocol's, with member counts as values. */
export type InterestMessage = ReplicaMessage<number>;

const SEP = '\u0000';
/** The replica key of a pattern in a queue group (or of plain subscribers: no group). */
const keyOf = (pattern: string, group: string | null): string => (group === null ? pattern : `${group}${SEP}${pattern}`);
function unkey(key: string): [pattern: string, group: string | null] {
  const at = key.indexOf(SEP);
  return at < 0 ? [key, null] : [key.slice(at + 1), key.slice(0, at)];
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
/** Routes cached by topic; past it the oldest entry goes (a workload cycling through more topics pays the trie walk). */
const ROUTE_CACHE_LIMIT = 65_536;

/**
 * The interest of every known node (this one included), indexed by pattern, with a cache of
 * routes by topic so the publish path is one Map lookup for a repeated topic. It is a view kept
 * up to date by the replica's change listener.
 */
export class InterestTable {
  private readonly refs = new Map<string, Map<string, InterestRef>>();
  private readonly index = new SubjectIndex<InterestRef>();
  private routes = new Map<string, Route>();

  /** The replica's change listener: one node's count for one (group, pattern) changed. */
  update(node: string, key: string, count: number | undefined): void {
    this.routes.clear();
    let byKey = this.refs.get(node);
    const ref = byKey?.get(key);
    if (count === undefined || count <= 0) {
      if (!ref || !byKey) return;
      this.index.remove(ref.parsed, ref);
      byKey.delete(key);
      if (byKey.size === 0) this.refs.delete(node);
      return;
    }
    if (ref) {
      ref.count = count;
      return;
    }
    const [pattern, group] = unkey(key);
    let parsed: ParsedPattern;
    try {
      parsed = parsePattern(pattern);
    } catch {
      return; // a peer's malformed pattern is ignored, not fatal
    }
    if (!byKey) {
      byKey = new Map();
      this.refs.set(node, byKey);
    }
    const created: InterestRef = { node, group, count, parsed };
    byKey.set(key, created);
    this.index.add(parsed, created);
  }

  /** Nodes with at least one subscriber (this one included). */
  nodes(): string[] {
    return [...this.refs.keys()];
  }

  /** A node's entries as `[pattern, group, count]` (tests and diagnostics). */
  entriesOf(node: string): InterestTuple[] {
    return [...(this.refs.get(node)?.values() ?? [])].map((r) => [r.parsed.pattern, r.group, r.count]);
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
      // A node may match through several patterns of the same group: its members add up.
      const at = list.find((e) => e.node === ref.node);
      if (at) at.count += ref.count;
      else list.push({ node: ref.node, count: ref.count });
    });
    const route: Route = plain === undefined && groups === undefined ? EMPTY_ROUTE : { plain: plain ?? new Set(), groups: groups ?? new Map() };
    if (groups) for (const list of groups.values()) list.sort((a, b) => (a.node < b.node ? -1 : a.node > b.node ? 1 : 0));
    if (this.routes.size >= ROUTE_CACHE_LIMIT) this.routes.delete(this.routes.keys().next().value as string);
    this.routes.set(topic, route);
    return route;
  }
}

/**
 * The interest of one node: its own subscriptions counted per (group, pattern), replicated to
 * and from every up node, and the table of everyone's. Transports call it and carry what it
 * emits; it holds no sockets and no timers.
 */
export class InterestSync extends ReplicatedTable<number> {
  readonly table = new InterestTable();
  protected readonly replica: OwnedReplica<number>;

  constructor(
    readonly self: string,
    readonly incarnation: number,
    /** Sends a message to one node, or to every up node when `to` is null. */
    emit: (to: string | null, msg: InterestMessage) => void,
  ) {
    super();
    const isCount = (v: unknown): v is number => typeof v === 'number' && Number.isInteger(v) && v > 0;
    this.replica = new OwnedReplica<number>(self, incarnation, emit, (node, key, _prev, next) => this.table.update(node, key, next), isCount);
  }

  /** Records a local subscriber joining (+1) or leaving (-1); the change goes out at the next `flush`. */
  change(pattern: string, group: string | null, delta: 1 | -1): void {
    const key = keyOf(pattern, group);
    const count = (this.replica.get(key) ?? 0) + delta;
    if (count < 0) throw new Error(`interest count below zero for ${key}`);
    if (count === 0) this.replica.delete(key);
    else this.replica.set(key, count);
  }

  /** Version held of a node's interest. */
  versionOf(node: string): { inc: number; ver: number } | undefined {
    return this.replica.versionOf(node);
  }
}
