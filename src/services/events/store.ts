/**
 * The event record of `node.events`, its order, and the bounded store of recent events that
 * every node keeps and `events.query` reads.
 *
 * Order is the hybrid-logical-clock stamp (`src/registry/hlc.ts`), ties on the origin node, then
 * on the origin's sequence number: the same total order on every node, and one that respects
 * causality as far as the clocks saw it (an event stamped after a node observed another is ordered
 * after it). Identity is `id` (`<node>:<incarnation>:<d|l><seq>`): the same event held by several
 * nodes is one event, which is how a cluster-wide query de-duplicates what it gathers.
 *
 * Pure: no timers, no sockets.
 */
import { compareStamps, type HlcStamp, isStamp } from '../../registry/hlc.js';

/** Whether an event went to every node (`emitDistributed`) or stayed on its origin (`emit`). */
export type EventScope = 'cluster' | 'local';

/** One event, as handlers receive it and the store keeps it. */
export interface FoundationEvent<T = unknown> {
  /** Unique in the cluster: `<node>:<incarnation>:d<seq>` for distributed events, `:l<seq>` for local ones. */
  readonly id: string;
  /** The event type: a dotted name (`user.signed-in`), matched by `on` patterns with `*` and `>`. */
  readonly type: string;
  readonly data: T;
  /** The node that emitted it. */
  readonly node: string;
  /** That node's incarnation when it emitted it (sequence numbers restart with a new incarnation). */
  readonly incarnation: number;
  /**
   * Per origin incarnation and scope: 1, 2, 3... with no gap. A receiver that sees `seq` jump
   * missed events; one that sees a `seq` it has seen already holds a duplicate.
   */
  readonly seq: number;
  /** Hybrid-logical-clock stamp `[wall ms, counter]` taken by the origin when it emitted the event. */
  readonly hlc: HlcStamp;
  readonly scope: EventScope;
}

/** Total order of events: HLC stamp, then origin node, then sequence number. */
export function compareEvents(a: FoundationEvent, b: FoundationEvent): number {
  return compareStamps(a.hlc, b.hlc, a.node, b.node) || a.seq - b.seq;
}

/** Longest event type, in UTF-8 bytes (a pubsub topic's limit: the same syntax). */
const MAX_ID_LENGTH = 400;

/** Checks an event from the wire (untrusted, decoded): undefined when it is not one. */
export function parseEvent(v: unknown): FoundationEvent | undefined {
  if (typeof v !== 'object' || v === null) return undefined;
  const e = v as Record<string, unknown>;
  const pos = (x: unknown): x is number => Number.isSafeInteger(x) && (x as number) >= 0;
  if (typeof e.id !== 'string' || e.id.length === 0 || e.id.length > MAX_ID_LENGTH) return undefined;
  if (typeof e.type !== 'string' || e.type.length === 0 || e.type.length > 255) return undefined;
  if (typeof e.node !== 'string' || e.node.length === 0 || e.node.length > 255) return undefined;
  if (!pos(e.incarnation) || !pos(e.seq) || !isStamp(e.hlc)) return undefined;
  if (e.scope !== 'cluster' && e.scope !== 'local') return undefined;
  return { id: e.id, type: e.type, data: e.data, node: e.node, incarnation: e.incarnation, seq: e.seq, hlc: e.hlc, scope: e.scope };
}

/** Which events a query wants. */
export interface EventFilter {
  /** An exact type, or a pattern (`user.*`, `user.>`): the pubsub subject syntax. */
  type?: string;
  /** Only events emitted by this node. */
  node?: string;
  /**
   * Only events stamped at or after this: a wall-clock time in ms (`Date.now()` style), or an HLC
   * stamp. Inclusive, because events of several nodes may carry the same stamp: to resume after an
   * event, pass its `hlc` and drop the ids already seen.
   */
  since?: number | HlcStamp;
}

/** Whether an event's stamp is at or after `since` (a wall time: stamps from that millisecond on; a stamp: that stamp or a later one). */
export function isAfter(e: FoundationEvent, since: number | HlcStamp | undefined): boolean {
  if (since === undefined) return true;
  if (typeof since === 'number') return e.hlc[0] >= since;
  return compareStamps(e.hlc, since) >= 0;
}

/**
 * Merges event lists (from several nodes, overlapping): one copy of each id, in event order, the
 * newest `limit` kept. Returns whether more than `limit` were there.
 */
export function mergeEvents(lists: Iterable<readonly FoundationEvent[]>, limit: number): { events: FoundationEvent[]; truncated: boolean } {
  const byId = new Map<string, FoundationEvent>();
  for (const list of lists) for (const e of list) if (!byId.has(e.id)) byId.set(e.id, e);
  const all = [...byId.values()].sort(compareEvents);
  return all.length > limit ? { events: all.slice(all.length - limit), truncated: true } : { events: all, truncated: false };
}

/**
 * The recent events one node holds: its own (local and distributed) and the distributed events
 * it received, at most `capacity`; past that the oldest arrival goes. An event whose id is held
 * already is not added twice.
 */
export class EventStore {
  private ring: Array<FoundationEvent | undefined>;
  private head = 0;
  private count = 0;
  private readonly ids = new Set<string>();
  /** Events pushed out by the bound since the start. */
  evicted = 0;

  constructor(readonly capacity: number) {
    if (!Number.isSafeInteger(capacity) || capacity < 1) throw new RangeError(`an event store holds at least one event, got ${capacity}`);
    this.ring = new Array(capacity);
  }

  /** Adds an event; false when its id is held already (a duplicate). */
  add(e: FoundationEvent): boolean {
    if (this.ids.has(e.id)) return false;
    const at = (this.head + this.count) % this.capacity;
    if (this.count === this.capacity) {
      const old = this.ring[this.head] as FoundationEvent;
      this.ids.delete(old.id);
      this.head = (this.head + 1) % this.capacity;
      this.evicted++;
    } else {
      this.count++;
    }
    this.ring[at] = e;
    this.ids.add(e.id);
    return true;
  }

  get size(): number {
    return this.count;
  }

  has(id: string): boolean {
    return this.ids.has(id);
  }

  /** The held events matching `filter` (`matchesType` decides the type part: the caller compiles `filter.type`), newest `limit`, in event order. */
  query(filter: EventFilter, matchesType: (type: string) => boolean, limit: number): { events: FoundationEvent[]; truncated: boolean } {
    const out: FoundationEvent[] = [];
    for (let i = 0; i < this.count; i++) {
      const e = this.ring[(this.head + i) % this.capacity] as FoundationEvent;
      if (filter.node !== undefined && e.node !== filter.node) continue;
      if (!isAfter(e, filter.since)) continue;
      if (!matchesType(e.type)) continue;
      out.push(e);
    }
    return mergeEvents([out], limit);
  }
}
