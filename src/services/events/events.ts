/**
 * `node.events` (Foundation.Events 2.0): local and distributed events, each with an id, its
 * origin, a per-origin sequence number and a hybrid-logical-clock stamp; a bounded store of
 * recent events on every node; and a cluster-wide query over those stores.
 *
 * Leaky on purpose, as every facade here:
 *
 * | facade                              | mechanism                                                           |
 * |-------------------------------------|---------------------------------------------------------------------|
 * | `events.emitDistributed(type, d)`   | `channels.broadcast('events', event)`, i.e. `pubsub.broadcast('foundation:events', event)` on the events lane |
 * | `events.on(pattern, fn)`            | a local handler table, fed by `emit` and by one `channels.subscribe('events')` |
 * | `events.query(filter)`              | `$events` requests to every member (the mesh's internal request/response), with one deadline |
 *
 * Per-origin order comes from pubsub (a publisher's messages reach a subscriber in the order they
 * were sent); the sequence number lets a consumer check it, and see a gap or a duplicate.
 */
import { ConfigError, ErrorCodes, FoundationError } from '../../errors.js';
import { assertSerializable } from '../../mesh/codec.js';
import type { InternalMesh } from '../../mesh/interface.js';
import type { Channels } from '../../pubsub/channels.js';
import { assertPublishTopic, type ParsedPattern, parsePattern, patternMatches } from '../../pubsub/subject.js';
import { type HlcStamp, HybridClock, isStamp } from '../../registry/hlc.js';
import type { Logger } from '../../util/logger.js';
import { RateLimitedLog } from '../../util/logger.js';
import { type EventFilter, type EventScope, EventStore, type FoundationEvent, mergeEvents, parseEvent } from './store.js';

export type { EventFilter, EventScope, FoundationEvent } from './store.js';

/** A handler of `events.on`. Errors it throws (or rejects with) are logged and counted, never thrown at the emitter. */
export type EventHandler<T = unknown> = (event: FoundationEvent<T>) => unknown;

/** What `events.query` asks. */
export interface EventQuery extends EventFilter {
  /** Most events returned: the newest that match. Default 100, at most `MAX_QUERY_LIMIT`. */
  limit?: number;
  /** Deadline of the whole query, in ms: members that have not answered by then are listed in `missing`. Default 2000. */
  timeoutMs?: number;
}

/** A member whose events a query could not include. */
export interface QueryMiss {
  node: string;
  /** `timeout` (no answer by the deadline), `down` (a member that went down recently), or the error it answered with. */
  reason: string;
}

/** What `events.query` returns. */
export interface EventQueryResult {
  /** Matching events from every node that answered, one copy each (by id), in HLC order, the newest `limit`. */
  events: FoundationEvent[];
  /** True when any member did not answer: the events it alone held (its local events, or distributed ones the others evicted) are missing. */
  partial: boolean;
  /** The members that did not answer, and why. Empty unless `partial`. */
  missing: QueryMiss[];
  /** Nodes whose events are included (this one first). */
  nodes: string[];
  /** True when more events matched than `limit`: the oldest were left out. */
  truncated: boolean;
}

/** Options of `node.events` (in code; not start options). */
export interface EventsOptions {
  /** Most events the store of each node holds; past it the oldest goes. Default `DEFAULT_EVENT_STORE_SIZE`. */
  storeSize?: number;
}

/** Counters of `node.events` on this node. */
export interface EventsStats {
  /** Events this node emitted with `emit` (local only). */
  emittedLocal: number;
  /** Events this node emitted with `emitDistributed`. */
  emittedDistributed: number;
  /** Distributed events received (from every node, this one's own included). */
  received: number;
  /** Received events dropped because their origin and sequence number were seen already. */
  duplicates: number;
  /** Events missed, as counted from jumps in an origin's sequence numbers (a subscriber overflow, a lost link). */
  gaps: number;
  /** Handler calls that threw or rejected. */
  handlerErrors: number;
  /** Events held by this node's store now, and its bound. */
  stored: number;
  storeSize: number;
  /** Events pushed out of the store by its bound. */
  evicted: number;
  /** Cluster-wide queries this node made, and how many came back partial. */
  queries: number;
  queriesPartial: number;
  /** Members asked a second time in a query because their link was replaced under the first request. */
  queryRetries: number;
  /** Malformed events and query messages from peers, dropped. */
  messagesDropped: number;
}

/** The public `node.events` API. */
export interface EventsApi {
  /** Emits an event on this node only: handlers here see it (synchronously, before `emit` returns); it is stored here. Returns it. */
  emit<T = unknown>(type: string, data?: T): FoundationEvent<T>;
  /**
   * Emits an event to every node, this one included. It IS `channels.broadcast('events', event)`
   * (`pubsub.broadcast('foundation:events', ...)` on the events lane) underneath: each node's
   * handlers see it asynchronously, in the origin's order, and each node stores it.
   */
  emitDistributed<T = unknown>(type: string, data?: T): FoundationEvent<T>;
  /**
   * Resolves when every lane `emitDistributed` filled past its high-water mark is back under it
   * (`pubsub.drained()`): a producer of bursts awaits it between bursts. At once when none is full.
   */
  drained(): Promise<void>;
  /**
   * Calls `handler` for each event whose type matches: an exact type, or a pattern in the pubsub
   * subject syntax (`user.*` one token, `user.>` one or more). Returns the function that stops it.
   */
  on<T = unknown>(typeOrPattern: string, handler: EventHandler<T>): () => void;
  /**
   * Gathers matching events from the store of every member (and this node's), by `$events`
   * requests with one deadline; merged, de-duplicated by id, ordered by HLC. Members that did not
   * answer in time make the result `partial` and are named in `missing`: flagged, not hidden.
   */
  query(q?: EventQuery): Promise<EventQueryResult>;
  /** This node's store only (no network): same filter and order. */
  queryLocal(q?: Omit<EventQuery, 'timeoutMs'>): FoundationEvent[];
  stats(): EventsStats;
}

/** Default bound of each node's event store. */
export const DEFAULT_EVENT_STORE_SIZE = 1000;
/** Largest `limit` a query may ask. */
export const MAX_QUERY_LIMIT = 10_000;
/** System topic of cluster-wide queries. */
export const EVENTS_QUERY_TOPIC = '$events';
const DEFAULT_QUERY_LIMIT = 100;
const DEFAULT_QUERY_TIMEOUT_MS = 2000;

interface Handler {
  readonly pattern: ParsedPattern;
  readonly fn: EventHandler;
}

function checkType(type: unknown): asserts type is string {
  try {
    assertPublishTopic(type as string);
  } catch (err) {
    throw new ConfigError('type', `an event type is a dotted name without wildcards (the pubsub topic syntax): ${(err as Error).message}`);
  }
}

function checkPattern(pattern: string): ParsedPattern {
  try {
    return parsePattern(pattern);
  } catch (err) {
    throw new ConfigError('type', `an event type or pattern uses the pubsub subject syntax: ${(err as Error).message}`);
  }
}

function typeMatcher(type: string | undefined): (t: string) => boolean {
  if (type === undefined) return () => true;
  const p = checkPattern(type);
  if (!p.wildcard) return (t) => t === type;
  return (t) => patternMatches(p.tokens, t.split('.'));
}

/** Checks a query's filter and limits (from user code, or from the wire: the same checks). */
function checkQuery(q: EventQuery): { filter: EventFilter; limit: number; timeoutMs: number } {
  if (typeof q !== 'object' || q === null) throw new ConfigError('query', 'expected { type?, node?, since?, limit?, timeoutMs? }');
  const limit = q.limit ?? DEFAULT_QUERY_LIMIT;
  if (!Number.isSafeInteger(limit) || limit < 1 || limit > MAX_QUERY_LIMIT)
    throw new ConfigError('limit', `expected an integer from 1 to ${MAX_QUERY_LIMIT}, got ${String(q.limit)}`);
  const timeoutMs = q.timeoutMs ?? DEFAULT_QUERY_TIMEOUT_MS;
  if (!Number.isFinite(timeoutMs) || timeoutMs <= 0) throw new ConfigError('timeoutMs', `expected a positive number of ms, got ${String(q.timeoutMs)}`);
  if (q.type !== undefined) checkPattern(q.type);
  if (q.node !== undefined && (typeof q.node !== 'string' || q.node.length === 0)) throw new ConfigError('node', 'expected a node name');
  if (q.since !== undefined && !(typeof q.since === 'number' && Number.isFinite(q.since)) && !isStamp(q.since)) {
    throw new ConfigError('since', 'expected a wall-clock time in ms or an HLC stamp [wall, counter]');
  }
  const filter: EventFilter = {};
  if (q.type !== undefined) filter.type = q.type;
  if (q.node !== undefined) filter.node = q.node;
  if (q.since !== undefined) filter.since = q.since as number | HlcStamp;
  return { filter, limit, timeoutMs };
}

export class Events implements EventsApi {
  private readonly store: EventStore;
  private readonly handlers = new Set<Handler>();
  /** Last sequence number seen per origin (distributed events), for de-duplication and gap counting. */
  private readonly origins = new Map<string, { inc: number; seq: number }>();
  private readonly warn: RateLimitedLog;
  private readonly offs: Array<() => void> = [];
  private seqDistributed = 0;
  private seqLocal = 0;
  private stopped = false;
  private readonly counters = {
    emittedLocal: 0,
    emittedDistributed: 0,
    received: 0,
    duplicates: 0,
    gaps: 0,
    handlerErrors: 0,
    queries: 0,
    queriesPartial: 0,
    queryRetries: 0,
    messagesDropped: 0,
  };

  constructor(
    private readonly mesh: InternalMesh,
    /** The channel facade `emitDistributed` broadcasts on (channel `events`). */
    private readonly channels: Channels,
    log: Logger,
    /** The node's hybrid logical clock (shared with the registry: one clock per node). */
    private readonly clock = new HybridClock(),
    opts: EventsOptions = {},
  ) {
    const size = opts.storeSize ?? DEFAULT_EVENT_STORE_SIZE;
    if (!Number.isSafeInteger(size) || size < 1) throw new ConfigError('events.storeSize', `expected an integer >= 1, got ${String(opts.storeSize)}`);
    this.store = new EventStore(size);
    this.warn = new RateLimitedLog(log);
  }

  /** Subscribes to the `events` channel and answers `$events` queries. */
  start(): void {
    // A large queue: a burst of distributed events must not be dropped while handlers catch up
    // (a drop still shows, as a gap in the origin's sequence numbers).
    this.offs.push(this.channels.subscribe('events', (payload) => this.receive(payload), { maxQueue: 100_000 }));
    this.offs.push(
      this.mesh.handleSystem(EVENTS_QUERY_TOPIC, (payload, ctx) => {
        let q: ReturnType<typeof checkQuery>;
        try {
          q = checkQuery(payload as EventQuery);
        } catch (err) {
          this.counters.messagesDropped++;
          this.warn.warn(`bad-query:${ctx.from}`, { from: ctx.from }, 'malformed events query refused');
          throw err;
        }
        return this.store.query(q.filter, typeMatcher(q.filter.type), q.limit);
      }),
    );
  }

  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    for (const off of this.offs.splice(0)) off();
    this.handlers.clear();
  }

  private make<T>(type: string, data: T, scope: EventScope): FoundationEvent<T> {
    checkType(type);
    assertSerializable(data);
    if (this.stopped) throw new FoundationError(ErrorCodes.NODE_STOPPED, 'node is stopped: no new events');
    const self = this.mesh.self;
    const seq = scope === 'cluster' ? ++this.seqDistributed : ++this.seqLocal;
    const id = `${self.name}:${self.incarnation}:${scope === 'cluster' ? 'd' : 'l'}${seq}`;
    return { id, type, data, node: self.name, incarnation: self.incarnation, seq, hlc: this.clock.tick(), scope };
  }

  emit<T = unknown>(type: string, data: T = null as T): FoundationEvent<T> {
    const e = this.make(type, data, 'local');
    this.counters.emittedLocal++;
    this.store.add(e);
    this.dispatch(e);
    return e;
  }

  emitDistributed<T = unknown>(type: string, data: T = null as T): FoundationEvent<T> {
    const e = this.make(type, data, 'cluster');
    this.counters.emittedDistributed++;
    // This node receives it back through its own subscription, like every other node: one path.
    this.channels.broadcast('events', e);
    return e;
  }

  drained(): Promise<void> {
    return this.channels.pubsub.drained();
  }

  /** An event from the `events` channel (any node's, this one's included). */
  private receive(payload: unknown): void {
    const e = parseEvent(payload);
    if (e?.scope !== 'cluster') {
      this.counters.messagesDropped++;
      this.warn.warn('bad-event', {}, 'malformed event on the events channel dropped');
      return;
    }
    const last = this.origins.get(e.node);
    if (last && e.incarnation === last.inc && e.seq <= last.seq) {
      this.counters.duplicates++;
      return;
    }
    if (!last || e.incarnation > last.inc) {
      this.origins.set(e.node, { inc: e.incarnation, seq: e.seq });
    } else if (e.incarnation === last.inc) {
      if (e.seq > last.seq + 1) this.counters.gaps += e.seq - last.seq - 1;
      last.seq = e.seq;
    }
    this.counters.received++;
    if (e.node !== this.mesh.self.name) this.clock.observe(e.hlc);
    this.store.add(e);
    this.dispatch(e);
  }

  private dispatch(e: FoundationEvent): void {
    const tokens = e.type.split('.');
    for (const h of this.handlers) {
      if (h.pattern.wildcard ? !patternMatches(h.pattern.tokens, tokens) : h.pattern.pattern !== e.type) continue;
      try {
        const r = h.fn(e);
        if (r instanceof Promise) r.catch((err: unknown) => this.handlerFailed(h, err));
      } catch (err) {
        this.handlerFailed(h, err);
      }
    }
  }

  private handlerFailed(h: Handler, err: unknown): void {
    this.counters.handlerErrors++;
    this.warn.warn(`handler:${h.pattern.pattern}`, { pattern: h.pattern.pattern, error: (err as Error)?.message }, 'event handler threw');
  }

  on<T = unknown>(typeOrPattern: string, handler: EventHandler<T>): () => void {
    const pattern = checkPattern(typeOrPattern);
    if (typeof handler !== 'function') throw new ConfigError('handler', 'expected a function');
    const h: Handler = { pattern, fn: handler as EventHandler };
    this.handlers.add(h);
    return () => {
      this.handlers.delete(h);
    };
  }

  queryLocal(q: Omit<EventQuery, 'timeoutMs'> = {}): FoundationEvent[] {
    const { filter, limit } = checkQuery(q);
    return this.store.query(filter, typeMatcher(filter.type), limit).events;
  }

  async query(q: EventQuery = {}): Promise<EventQueryResult> {
    const { filter, limit, timeoutMs } = checkQuery(q);
    this.counters.queries++;
    const self = this.mesh.self.name;
    const own = this.store.query(filter, typeMatcher(filter.type), limit);
    const lists: FoundationEvent[][] = [own.events];
    // A node that held more than `limit` matches sent its newest `limit`: the merge is truncated too.
    let truncated = own.truncated;
    const nodes = [self];
    const missing: QueryMiss[] = [];
    const wire: EventQuery = { ...filter, limit };
    const deadline = Date.now() + timeoutMs;
    // Every member the membership lists, down ones included until it forgets them: a member that
    // went down took the events only it held, and the result says so.
    const members = this.mesh.membership.list({ includeDown: true });
    const asks = members.map(async (m) => {
      if (m.status === 'down') {
        missing.push({ node: m.name, reason: 'down' });
        return;
      }
      try {
        const reply = await this.ask(m.name, wire, deadline);
        const got = Array.isArray(reply?.events) ? reply.events : undefined;
        if (!got) throw new Error('malformed reply');
        const list: FoundationEvent[] = [];
        for (const raw of got) {
          const e = parseEvent(raw);
          if (e) list.push(e);
          else this.counters.messagesDropped++;
        }
        lists.push(list);
        nodes.push(m.name);
        if (reply.truncated === true) truncated = true;
      } catch (err) {
        const code = (err as FoundationError).code;
        missing.push({ node: m.name, reason: code === ErrorCodes.REQUEST_TIMEOUT ? 'timeout' : (code ?? (err as Error).message) });
      }
    });
    await Promise.all(asks);
    const merged = mergeEvents(lists, limit);
    if (missing.length > 0) this.counters.queriesPartial++;
    missing.sort((a, b) => (a.node < b.node ? -1 : a.node > b.node ? 1 : 0));
    return { events: merged.events, partial: missing.length > 0, missing, nodes, truncated: truncated || merged.truncated };
  }

  /**
   * One member's part of a query, by `deadline`. A link replaced under the request (the member
   * stays up: a duplicate link won the tie-break, or a heal raced two dials) fails it with
   * `FOUNDATION_LINK_CLOSED` although the member can answer: the query only reads, so it is asked
   * again once, on the new link, in the time left.
   */
  private async ask(node: string, wire: EventQuery, deadline: number): Promise<{ events?: unknown; truncated?: unknown }> {
    const request = () =>
      this.mesh.request<{ events?: unknown; truncated?: unknown }>(node, EVENTS_QUERY_TOPIC, wire, 'events', Math.max(1, deadline - Date.now()));
    try {
      return await request();
    } catch (err) {
      const status = this.mesh.membership.get(node)?.status;
      const replaced = (err as FoundationError).code === ErrorCodes.LINK_CLOSED && (status === 'up' || status === 'suspect');
      if (!replaced || Date.now() >= deadline) throw err;
      this.counters.queryRetries++;
      return request();
    }
  }

  stats(): EventsStats {
    return { ...this.counters, stored: this.store.size, storeSize: this.store.capacity, evicted: this.store.evicted };
  }
}
