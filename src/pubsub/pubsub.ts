/**
 * `node.pubsub`: cluster-wide topics (the Phoenix.PubSub layer), with NATS wildcards and queue
 * groups.
 *
 * A publish is encoded once and crosses the wire at most once per node, and only to nodes with
 * a matching subscriber (interest routing, `interest.ts`); each node fans it out to its own
 * subscribers, each of which has its own bounded queue (`subscriber.ts`). Queue groups are chosen
 * by the publisher, over every node's members, and the choice travels in the frame.
 *
 * Guarantees (docs/guides/pubsub.md): at most once; FIFO per publisher per topic and lane; no
 * order across publishers; a link that drops loses what was in flight on it, no more.
 */
import { ConfigError, ErrorCodes, MessagingError, type PubSubError } from '../errors.js';
import { assertSerializable } from '../mesh/codec.js';
import { decodeTopic } from '../mesh/message.js';
import { LANES, type LaneName } from '../mesh/types.js';
import { isQuietDigestTick } from '../replication/owned-replica.js';
import { type GridTimer, gridInterval } from '../util/grid-timer.js';
import { type Logger, RateLimitedLog } from '../util/logger.js';
import { publish, TelemetryChannels } from '../util/telemetry.js';
import type { PubSubAdapter, PubSubAdapterHost } from './adapter.js';
import { BATCH_MARK, FrameBatcher, forEachBatchFrame } from './batch.js';
import {
  decodeBody,
  decodeBodyRange,
  encodeBody,
  FRAME_VERSION,
  FrameFlags,
  type InboundFrame,
  type OutboundFrame,
  readFrame,
  writeFrame,
  writeFrameHead,
} from './frame.js';
import { InterestSync, type Route } from './interest.js';
import { type PubSubStream, StreamIterator } from './stream.js';
import { assertPublishTopic, parsePattern } from './subject.js';
import { SubjectIndex } from './subject-index.js';
import {
  type DeliveryMeta,
  type LeaseMode,
  type LeasingHandler,
  type OverflowPolicy,
  PayloadLease,
  type PubSubMessage,
  Subscriber,
  type SubscriberCounters,
  type SubscriberHooks,
  type SubscriptionHandler,
} from './subscriber.js';

/** Options of one subscription. */
export interface SubscribeOptions {
  /**
   * Queue group: each message is delivered to one member of the group across the whole cluster
   * (plain subscribers still get every message). Members are spread evenly, preferring members
   * on nodes that are not suspected and, on a node, the member with the shortest queue.
   */
  queue?: string;
  /** Most messages waiting for this subscriber's handler. Default 10,000. */
  maxQueue?: number;
  /** What a full queue does: `drop-oldest` (default; counted) or `disconnect` (the subscription ends with `FOUNDATION_SUBSCRIBER_OVERFLOW`). */
  overflow?: OverflowPolicy;
  /** Ends the subscription when aborted. */
  signal?: AbortSignal;
  /** With `overflow: 'disconnect'`: called with the overflow error when the subscription ends. */
  onError?: (error: PubSubError) => void;
  /**
   * The handler borrows its payload instead of owning it: a payload is valid until the handler
   * returns, or until the promise it returns settles (for a stream: until the reader asks for
   * the next message, or leaves the loop); after that its memory may hold a later message. Copy
   * what you keep (`Buffer.from(payload)`). Default false.
   *
   * What it is for: a large binary payload (at least 1 MiB, published as a `Uint8Array`,
   * received from another node) is then received into reused memory instead of a fresh
   * allocation per message, which spares the receiving node a full garbage collection per
   * message (docs/guides/tuning.md, "Large payloads"). It takes effect for a message only when
   * every subscriber on this node that gets it borrows; smaller, local, decoded or deflated
   * payloads are ordinary (owned) values whatever this option says.
   */
  borrowPayload?: boolean;
}

/** Options of one publish. */
export interface BroadcastOptions {
  /** The mesh lane that carries it. Default `events`. */
  lane?: LaneName;
  /** Deflate the payload when its encoded size is above this many bytes. Default: never. */
  compressAbove?: number;
  /** A W3C `traceparent` to carry to subscribers (`meta.traceparent`). The channels facade fills it from OpenTelemetry when installed. */
  traceparent?: string;
}

/** Counters of one topic prefix (the topic up to its first `.` or `:`). */
export interface TopicCounters {
  /** Publishes from this node. */
  published: number;
  /** Messages handed to a subscriber's queue on this node. */
  delivered: number;
  /** Messages dropped by a subscriber's overflow policy on this node. */
  dropped: number;
  /** Handler calls that threw or rejected on this node. */
  handlerErrors: number;
}

/** What `pubsub.stats()` returns. */
export interface PubSubStats {
  /** Local subscriptions. */
  subscriptions: number;
  /** Per topic prefix; at most `MAX_PREFIXES` prefixes, the rest under `other`. */
  topics: Record<string, TopicCounters>;
  /** Published frames received from other nodes. */
  framesReceived: number;
  /** Frames from peers that were malformed or undecodable, dropped. */
  framesDropped: number;
  /** Frames that reached this node with no matching local subscriber (interest changed in flight). */
  unrouted: number;
  /** Sends that found the destination unreachable (it went down in between). */
  sendFailures: number;
  /** Nodes whose interest this node holds (itself included). */
  interestNodes: number;
}

/** The public pubsub API. */
export interface PubSubApi {
  /** Subscribes `handler` to a topic or pattern (`*` one token, `>` the rest). Returns the unsubscribe function. */
  subscribe<T = unknown>(pattern: string, handler: SubscriptionHandler<T>, opts?: SubscribeOptions): () => void;
  /** A subscription as an async iterator; ends on `stop()` or the AbortSignal. */
  stream<T = unknown>(pattern: string, opts?: Omit<SubscribeOptions, 'onError'>): PubSubStream<T>;
  /** To every matching subscriber on every node, this one included. Returns false when a destination's lane is over its high-water mark (await `drained()`). */
  broadcast(topic: string, payload: unknown, opts?: BroadcastOptions): boolean;
  /** To every matching subscriber on every other node (this node's own subscribers are skipped, as Phoenix's `broadcast_from` skips the caller). */
  broadcastFrom(topic: string, payload: unknown, opts?: BroadcastOptions): boolean;
  /** To this node's matching subscribers only. The payload never crosses the wire, so it is not encoded. */
  localBroadcast(topic: string, payload: unknown): void;
  /** To the matching subscribers of one node (one member of each of that node's queue groups). */
  directBroadcast(node: string, topic: string, payload: unknown, opts?: BroadcastOptions): boolean;
  /** Resolves when every lane a publish found full is under its high-water mark again. */
  drained(): Promise<void>;
  /** Counters. */
  stats(): PubSubStats;
}

/** Default bound of a subscriber's queue. */
export const DEFAULT_MAX_QUEUE = 10_000;
/** Most distinct topic prefixes counted one by one (metric label cardinality); the rest count as `other`. */
export const MAX_PREFIXES = 64;
/** Frame flags that take a frame off the batch fast path (see `receiveBatched`). */
const NOT_PLAIN = FrameFlags.TRACE | FrameFlags.GROUPS | FrameFlags.DIRECT;
/**
 * How often a node tells its peers its interest version when it changed, so a lost last change is
 * repaired (unchanged, every `QUIET_DIGEST_TICKS` periods). 2 s on the epoch grid, like the
 * registry's and the other replicas' digests, so all of them share one wake-up.
 */
const INTEREST_DIGEST_MS = 2_000;

function emptyCounters(): TopicCounters {
  return { published: 0, delivered: 0, dropped: 0, handlerErrors: 0 };
}

function checkLane(lane: unknown): LaneName {
  if (lane === undefined) return 'events';
  if (typeof lane !== 'string' || !(LANES as readonly string[]).includes(lane)) {
    throw new ConfigError('lane', `expected one of ${LANES.join(', ')}, got ${JSON.stringify(lane)}`);
  }
  return lane as LaneName;
}

export class PubSub implements PubSubApi {
  private readonly subs = new SubjectIndex<Subscriber>();
  private readonly sync: InterestSync;
  private readonly warn: RateLimitedLog;
  private readonly prefixes = new Map<string, TopicCounters>();
  /** The last topic counted and its counters: a stream of publishes on one topic skips the prefix scan and lookup. */
  private lastCountedTopic = '';
  private lastCounters: TopicCounters | undefined;
  private readonly remoteOf = new WeakMap<Route, string[]>();
  /** Rotation of each queue group over its members (per publisher), started at random. */
  private readonly groupCursor = new Map<string, number>();
  /** Rotation among a group's members on this node, for equally loaded members. */
  private readonly localCursor = new Map<string, number>();
  /** Destinations a publish found over their high-water mark, per lane. */
  private readonly full = new Map<string, Set<LaneName>>();
  private readonly nodeIncarnation = new Map<string, number>();
  private nextId = 1;
  private subscriptions = 0;
  private flushScheduled = false;
  private digestTimer?: GridTimer;
  private stopped = false;
  private readonly counters = { framesReceived: 0, framesDropped: 0, unrouted: 0, sendFailures: 0 };
  private readonly hooks: SubscriberHooks;
  /** Frames published in one turn of the loop to the same nodes and lane, sent as one message per node (batch.ts). */
  private readonly batcher = new FrameBatcher((dest, bytes, frames, lane) => this.sendBytes(dest, bytes, frames, lane));

  constructor(
    readonly self: string,
    incarnation: number,
    private readonly adapter: PubSubAdapter,
    log: Logger,
  ) {
    this.warn = new RateLimitedLog(log);
    this.sync = new InterestSync(self, incarnation, (to, msg) => this.adapter.sendInterest(to, msg));
    this.hooks = {
      handlerFailed: (sub, error, meta) => {
        this.prefix(meta.topic).handlerErrors++;
        const message = (error as Error)?.message ?? String(error);
        this.warn.warn(`handler:${sub.pattern.pattern}`, { topic: meta.topic, pattern: sub.pattern.pattern, error: message }, 'pubsub handler threw');
        publish(TelemetryChannels.pubsubHandlerError, { node: self, topic: meta.topic, pattern: sub.pattern.pattern, group: sub.group, error });
      },
      dropped: (sub, meta) => {
        this.prefix(meta.topic).dropped++;
        this.warn.warn(
          `dropped:${sub.pattern.pattern}`,
          { pattern: sub.pattern.pattern, maxQueue: sub.maxQueue },
          'pubsub subscriber is behind: dropped its oldest message',
        );
        publish(TelemetryChannels.pubsubOverflow, { node: self, topic: meta.topic, pattern: sub.pattern.pattern, group: sub.group, policy: 'drop-oldest' });
      },
      overflowed: (sub) => {
        this.warn.warn(
          `overflow:${sub.pattern.pattern}`,
          { pattern: sub.pattern.pattern, maxQueue: sub.maxQueue },
          'pubsub subscriber fell behind: unsubscribed',
        );
        publish(TelemetryChannels.pubsubOverflow, {
          node: self,
          topic: sub.pattern.pattern,
          pattern: sub.pattern.pattern,
          group: sub.group,
          policy: 'disconnect',
        });
      },
    };
  }

  /** Starts the adapter and the interest digest timer. */
  async start(): Promise<void> {
    const host: PubSubAdapterHost = {
      self: this.self,
      incarnation: this.sync.incarnation,
      receive: (from, lane, frame, release) => this.receive(from, lane, frame, release),
      interest: (from, incarnation, msg) => {
        const m = this.sync.parse(msg);
        if (!m) {
          this.dropFrame(from, 'malformed interest message');
          return;
        }
        this.sync.receive(from, incarnation, m);
      },
      peerUp: (node, incarnation) => {
        this.nodeIncarnation.set(node, incarnation);
        this.sync.peerUp(node);
      },
      peerDown: (node) => {
        this.nodeIncarnation.delete(node);
        this.full.delete(node);
        this.sync.peerDown(node);
      },
      peerResync: (node) => {
        if (this.nodeIncarnation.has(node)) this.sync.peerUp(node);
      },
    };
    await this.adapter.start(host);
    this.digestTimer = gridInterval(INTEREST_DIGEST_MS, (n) => this.sync.tick(isQuietDigestTick(n)));
  }

  /** Ends every subscription and stops the adapter. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.batcher.flush();
    this.stopped = true;
    this.digestTimer?.stop();
    for (const end of [...this.active.values()]) end();
    await this.adapter.stop();
  }

  /** Live subscriptions and the function that ends each, so `stop` can end them (streams end as done). */
  private readonly active = new Map<Subscriber, () => void>();

  // ---- subscribing -------------------------------------------------------------------------

  subscribe<T = unknown>(pattern: string, handler: SubscriptionHandler<T>, opts: SubscribeOptions = {}): () => void {
    if (typeof handler !== 'function') throw new ConfigError('handler', `expected a function, got ${typeof handler}`);
    return this.addSubscriber(pattern, handler as LeasingHandler, opts, opts.borrowPayload === true ? 'until-return' : 'none', (e) => opts.onError?.(e))
      .unsubscribe;
  }

  stream<T = unknown>(pattern: string, opts: Omit<SubscribeOptions, 'onError'> = {}): PubSubStream<T> {
    let unsubscribe: () => void = () => {};
    const it = new StreamIterator<T>(() => unsubscribe());
    const added = this.addSubscriber(
      pattern,
      (payload, meta, lease) => it.push({ payload: payload as T, topic: meta.topic, from: meta.from, lane: meta.lane } as PubSubMessage<T>, lease),
      { ...opts, signal: undefined },
      opts.borrowPayload === true ? 'handed-over' : 'none',
      (e) => it.fail(e),
    );
    unsubscribe = added.unsubscribe;
    // Ended from the engine side (node stop, signal): the reader sees the end.
    added.onEnd = () => it.stop();
    if (opts.signal) {
      if (opts.signal.aborted) it.stop();
      else opts.signal.addEventListener('abort', () => it.stop(), { once: true });
    }
    return it;
  }

  private addSubscriber(
    pattern: string,
    handler: LeasingHandler,
    opts: SubscribeOptions,
    leaseMode: LeaseMode,
    onOverflow: (e: PubSubError) => void,
  ): { unsubscribe: () => void; onEnd?: () => void } {
    if (this.stopped) throw new MessagingError(ErrorCodes.NODE_STOPPED, 'node is stopped: pubsub takes no new subscriptions');
    const parsed = parsePattern(pattern);
    const maxQueue = opts.maxQueue ?? DEFAULT_MAX_QUEUE;
    if (!Number.isInteger(maxQueue) || maxQueue < 1) throw new ConfigError('maxQueue', `expected an integer >= 1, got ${String(opts.maxQueue)}`);
    const overflow = opts.overflow ?? 'drop-oldest';
    if (overflow !== 'drop-oldest' && overflow !== 'disconnect') {
      throw new ConfigError('overflow', `expected 'drop-oldest' or 'disconnect', got ${JSON.stringify(overflow)}`);
    }
    const group = opts.queue;
    if (group !== undefined && (typeof group !== 'string' || group.length === 0 || Buffer.byteLength(group) > 255 || group.includes('\u0000'))) {
      throw new ConfigError('queue', 'expected a non-empty string of at most 255 bytes without NUL');
    }
    const handle: { unsubscribe: () => void; onEnd?: () => void } = { unsubscribe: () => {} };
    let active = true;
    const end = () => {
      if (!active) return;
      active = false;
      this.active.delete(sub);
      sub.close();
      this.subs.remove(parsed, sub);
      this.subscriptions--;
      this.sync.change(parsed.pattern, group ?? null, -1);
      this.scheduleFlush();
      handle.onEnd?.();
    };
    if (opts.borrowPayload !== undefined && typeof opts.borrowPayload !== 'boolean') {
      throw new ConfigError('borrowPayload', `expected true or false, got ${JSON.stringify(opts.borrowPayload)}`);
    }
    const sub = new Subscriber(
      this.nextId++,
      parsed,
      handler,
      maxQueue,
      overflow,
      this.hooks,
      group,
      (error) => {
        end();
        onOverflow(error);
      },
      leaseMode,
    );
    this.subs.add(parsed, sub);
    this.subscriptions++;
    this.active.set(sub, end);
    this.sync.change(parsed.pattern, group ?? null, 1);
    this.scheduleFlush();
    if (opts.signal) {
      if (opts.signal.aborted) end();
      else opts.signal.addEventListener('abort', end, { once: true });
    }
    handle.unsubscribe = end;
    return handle;
  }

  /** Interest changes made in one turn of the loop go out as one delta. */
  private scheduleFlush(): void {
    if (this.flushScheduled || this.stopped) return;
    this.flushScheduled = true;
    setImmediate(() => {
      this.flushScheduled = false;
      if (!this.stopped) this.sync.flush();
    });
  }

  // ---- publishing --------------------------------------------------------------------------

  broadcast(topic: string, payload: unknown, opts?: BroadcastOptions): boolean {
    return this.publishRouted(topic, payload, opts, true);
  }

  broadcastFrom(topic: string, payload: unknown, opts?: BroadcastOptions): boolean {
    return this.publishRouted(topic, payload, opts, false);
  }

  localBroadcast(topic: string, payload: unknown): void {
    assertPublishTopic(topic);
    this.prefix(topic).published++;
    this.deliverLocal(topic, this.self, 'events', 'all', payload);
  }

  directBroadcast(node: string, topic: string, payload: unknown, opts: BroadcastOptions = {}): boolean {
    assertPublishTopic(topic);
    const lane = checkLane(opts.lane);
    if (typeof node !== 'string' || node.length === 0) throw new ConfigError('node', 'expected a node name');
    this.prefix(topic).published++;
    if (node === this.self) {
      assertSerializable(payload);
      this.deliverLocal(topic, this.self, lane, 'all', payload, undefined, opts.traceparent);
      return true;
    }
    const { body, flags } = encodeBody(payload, opts.compressAbove);
    return this.send([node], { topic, body, flags: flags | FrameFlags.DIRECT, traceparent: opts.traceparent }, lane);
  }

  private publishRouted(topic: string, payload: unknown, opts: BroadcastOptions = {}, includeSelf: boolean): boolean {
    assertPublishTopic(topic);
    const lane = checkLane(opts.lane);
    this.prefix(topic).published++;
    const route = this.sync.table.route(topic);
    let groups: Array<[string, string]> | undefined;
    let selfGroups: Set<string> | undefined;
    let dest = this.remoteNodes(route);
    if (route.groups.size > 0) {
      let extra: string[] | undefined;
      for (const [group, members] of route.groups) {
        const node = this.chooseMember(group, members, includeSelf);
        if (node === undefined) continue;
        groups ??= [];
        groups.push([group, node]);
        if (node === this.self) {
          selfGroups ??= new Set();
          selfGroups.add(group);
        } else if (!dest.includes(node) && !extra?.includes(node)) {
          extra ??= [];
          extra.push(node);
        }
      }
      if (extra) dest = [...dest, ...extra];
    }
    let ok = true;
    if (dest.length > 0) {
      const { body, flags } = encodeBody(payload, opts.compressAbove);
      ok = this.send(dest, { topic, body, flags: groups ? flags | FrameFlags.GROUPS : flags, traceparent: opts.traceparent, groups }, lane);
    } else {
      // Nobody elsewhere wants it, but the call must fail the same way whoever listens.
      assertSerializable(payload);
    }
    if (includeSelf && (route.plain.has(this.self) || selfGroups)) this.deliverLocal(topic, this.self, lane, selfGroups, payload, undefined, opts.traceparent);
    return ok;
  }

  /** The other nodes with a plain subscriber for the route, cached with the route. */
  private remoteNodes(route: Route): string[] {
    let remote = this.remoteOf.get(route);
    if (!remote) {
      remote = [];
      for (const n of route.plain) if (n !== this.self) remote.push(n);
      this.remoteOf.set(route, remote);
    }
    return remote;
  }

  /**
   * Picks the node that delivers a message to `group`: rotating over all members of the group
   * (a node with two members is picked twice as often), skipping suspected nodes while any
   * other member is left, and skipping this node for `broadcastFrom`.
   */
  private chooseMember(group: string, members: ReadonlyArray<{ node: string; count: number }>, includeSelf: boolean): string | undefined {
    let total = 0;
    for (const m of members) total += m.count;
    if (total === 0) return undefined;
    let cursor = this.groupCursor.get(group);
    if (cursor === undefined) cursor = Math.floor(Math.random() * total);
    let fallback: string | undefined;
    for (let attempt = 0; attempt < total; attempt++) {
      let at = (cursor + attempt) % total;
      let chosen: string | undefined;
      for (const m of members) {
        if (at < m.count) {
          chosen = m.node;
          break;
        }
        at -= m.count;
      }
      if (chosen === undefined || (!includeSelf && chosen === this.self)) continue;
      if (chosen !== this.self && this.adapter.isSuspect(chosen)) {
        fallback ??= chosen;
        continue;
      }
      this.groupCursor.set(group, (cursor + attempt + 1) % total);
      return chosen;
    }
    this.groupCursor.set(group, (cursor + 1) % total);
    return fallback;
  }

  /**
   * Sends one frame. A small one joins the open batch (sent when the current job ends, or
   * earlier when full); a large one goes alone, head and body apart when the adapter takes them
   * so (no copy of the body). Returns false when a destination's lane is known to be over its
   * high-water mark (as of the last batch sent to it).
   */
  private send(nodes: readonly string[], frame: OutboundFrame, lane: LaneName): boolean {
    if (FrameBatcher.fits(frame.body)) {
      this.batcher.add(nodes, lane, writeFrameHead(frame), frame.body);
      return !this.anyFull(nodes, lane);
    }
    this.batcher.flush();
    const adapter = this.adapter;
    const { full, failed } =
      adapter.sendParts !== undefined ? adapter.sendParts(nodes, writeFrameHead(frame), frame.body, lane) : adapter.send(nodes, writeFrame(frame), lane);
    this.noteSent(full, failed, lane);
    return full.length === 0;
  }

  /** Sends a closed batch (or a lone small frame) through the adapter. */
  private sendBytes(nodes: readonly string[], bytes: Buffer, frames: number, lane: LaneName): void {
    const { full, failed } = this.adapter.send(nodes, bytes, lane);
    this.noteSent(full, failed * frames, lane);
  }

  private anyFull(nodes: readonly string[], lane: LaneName): boolean {
    if (this.full.size === 0) return false;
    for (const node of nodes) if (this.full.get(node)?.has(lane)) return true;
    return false;
  }

  private noteSent(full: readonly string[], failed: number, lane: LaneName): void {
    this.counters.sendFailures += failed;
    for (const node of full) {
      let lanes = this.full.get(node);
      if (!lanes) {
        lanes = new Set();
        this.full.set(node, lanes);
      }
      lanes.add(lane);
    }
  }

  async drained(): Promise<void> {
    // What is batched must go out first: the lanes to wait for are known once it is queued.
    this.batcher.flush();
    const waits: Promise<void>[] = [];
    for (const [node, lanes] of this.full) for (const lane of lanes) waits.push(this.adapter.drained(node, lane).catch(() => {}));
    this.full.clear();
    await Promise.all(waits);
    // Always let the event loop turn once: a publisher looping on `if (!broadcast()) await
    // drained()` must not spin when a lane is already under its mark again (or dropped instead).
    await new Promise<void>((resolve) => setImmediate(resolve));
  }

  // ---- receiving ---------------------------------------------------------------------------

  /** A frame (or batch) from another node; `release` hands back its pooled memory (see `deliverLocal`). */
  private receive(from: string, lane: LaneName, buf: Buffer, release?: () => void): void {
    if (buf.length > 0 && buf[0] === BATCH_MARK) {
      // Batches are small (never pooled); whatever a batch's payloads hold is left to the GC.
      this.receiving = { from, lane, buf };
      if (!forEachBatchFrame(buf, this.receiveBatched)) this.dropFrame(from, 'malformed batch');
      this.receiving = undefined;
      this.lastMeta = undefined;
      this.batchTopic = undefined;
      this.batchSubs.length = 0;
      return;
    }
    this.receiveFrame(from, lane, buf, 0, buf.length, release);
  }

  /** The batch being received (`receiveBatched` is one function for all batches: no closure per batch). */
  private receiving: { from: string; lane: LaneName; buf: Buffer } | undefined;
  private readonly receiveBatched = (start: number, end: number): void => {
    const r = this.receiving as { from: string; lane: LaneName; buf: Buffer };
    const buf = r.buf;
    // Fast path: a plain frame (no trace, queue groups or direct flag) whose topic's local
    // subscribers are all plain ones, as most frames of a batch are. Subscriptions cannot change
    // while a batch is delivered (handlers run later), so the topic's match and meta are worked
    // out once per batch. Everything else takes the general path.
    if (end - start > 3 && buf[start] === FRAME_VERSION) {
      const flags = buf[start + 1] as number;
      const topicLength = buf[start + 2] as number;
      const bodyStart = start + 3 + topicLength;
      if ((flags & NOT_PLAIN) === 0 && topicLength > 0 && bodyStart <= end) {
        const topic = decodeTopic(buf, start + 3, topicLength);
        if (topic === this.batchTopic || this.primeBatch(topic, r.from, r.lane)) {
          this.counters.framesReceived++;
          let value: unknown;
          try {
            value = decodeBodyRange(flags, buf, bodyStart, end);
          } catch (err) {
            this.dropFrame(r.from, `undecodable payload: ${(err as Error).message}`);
            return;
          }
          const subs = this.batchSubs;
          const meta = this.batchMeta as DeliveryMeta;
          for (let i = 0; i < subs.length; i++) (subs[i] as Subscriber).push(value, meta);
          (this.batchCounters as TopicCounters).delivered += subs.length;
          return;
        }
      }
    }
    this.receiveFrame(r.from, r.lane, buf, start, end);
  };

  /** Topic whose (all plain) local subscribers are in `batchSubs`, for the rest of the batch being received. */
  private batchTopic: string | undefined;
  private readonly batchSubs: Subscriber[] = [];
  private batchMeta: DeliveryMeta | undefined;
  private batchCounters: TopicCounters | undefined;

  /** Sets up the batch fast path for `topic`; false when it has no subscriber here or a queue-group one. */
  private primeBatch(topic: string, from: string, lane: LaneName): boolean {
    const matched = this.matched;
    matched.length = 0;
    this.subs.match(topic, this.collectMatch);
    const subs = this.batchSubs;
    subs.length = 0;
    let plain = matched.length > 0;
    for (let i = 0; i < matched.length && plain; i++) {
      const sub = matched[i] as Subscriber;
      if (sub.group !== undefined) plain = false;
      else subs.push(sub);
    }
    matched.length = 0;
    if (!plain) {
      subs.length = 0;
      this.batchTopic = undefined;
      return false;
    }
    this.batchTopic = topic;
    this.batchMeta = { topic, from, lane };
    this.batchCounters = this.prefix(topic);
    return true;
  }

  private receiveFrame(from: string, lane: LaneName, buf: Buffer, start: number, end: number, release?: () => void): void {
    this.counters.framesReceived++;
    const frame = readFrame(buf, start, end);
    if (!frame) {
      release?.();
      this.dropFrame(from, 'malformed frame');
      return;
    }
    let mine: Set<string> | 'all' | undefined;
    if (frame.flags & FrameFlags.DIRECT) mine = 'all';
    else if (frame.groups) {
      for (const [group, node] of frame.groups) {
        if (node !== this.self) continue;
        mine ??= new Set();
        (mine as Set<string>).add(group);
      }
    }
    const delivered = this.deliverLocal(frame.topic, from, lane, mine, undefined, frame, undefined, release);
    if (delivered === 0) this.counters.unrouted++;
  }

  private dropFrame(from: string, reason: string): void {
    this.counters.framesDropped++;
    this.warn.warn(`frame:${from}`, { from, reason }, 'pubsub frame from a peer dropped');
    publish(TelemetryChannels.pubsubFrameDropped, { node: this.self, from, reason });
  }

  /**
   * Hands a message to this node's matching subscribers: every plain one, and for each queue
   * group in `groups` (`'all'`: every local group) the member with the shortest queue. The
   * message is `value` (a local publish: the value itself) or a received `frame`, decoded here
   * once, and only if a subscriber matches. Returns how many subscribers got it, or -1 when the
   * frame was dropped as undecodable (counted there, not as unrouted).
   *
   * `release` (a frame received into pooled memory) is called once nothing references the frame:
   * at once when no subscriber gets it or its payload was inflated (a copy); when every
   * subscriber that gets it borrows its payload, after the last of them is done (a
   * `PayloadLease`); never when one of them owns it (the GC then collects the memory).
   */
  private deliverLocal(
    topic: string,
    from: string,
    lane: LaneName,
    groups: Set<string> | 'all' | undefined,
    value: unknown,
    frame?: InboundFrame,
    localTraceparent?: string,
    release?: () => void,
  ): number {
    // Matching subscribers into a reused array: no closure or array allocated per message.
    const matched = this.matched;
    matched.length = 0;
    this.subs.match(topic, this.collectMatch);
    if (matched.length === 0) {
      release?.();
      return 0;
    }
    if (frame !== undefined) {
      try {
        value = decodeBody(frame);
      } catch (err) {
        matched.length = 0;
        release?.();
        this.dropFrame(from, `undecodable payload: ${(err as Error).message}`);
        return -1;
      }
      if (release !== undefined && frame.flags & FrameFlags.DEFLATE) {
        // The payload is the inflated copy: the received bytes are no longer needed.
        release();
        release = undefined;
      } else if ((frame.flags & FrameFlags.RAW) === 0) {
        // A decoded value may hold views of the received bytes anywhere inside it: it is owned,
        // and the memory is left to the GC.
        release = undefined;
      }
    }
    const traceparent = frame ? frame.traceparent : localTraceparent;
    let meta: DeliveryMeta;
    const last = this.lastMeta;
    // Consecutive frames of one batch on one topic share their (read-only) meta.
    if (traceparent === undefined && last !== undefined && last.topic === topic && last.from === from && last.lane === lane) meta = last;
    else {
      meta = traceparent === undefined ? { topic, from, lane } : { topic, from, lane, traceparent };
      if (this.receiving !== undefined && traceparent === undefined) this.lastMeta = meta;
    }
    // The subscribers that get it: every plain one, then one member per queue group.
    const targets = this.targets;
    let picks: Map<string, Subscriber[]> | undefined;
    for (let i = 0; i < matched.length; i++) {
      const sub = matched[i] as Subscriber;
      if (sub.group === undefined) {
        targets.push(sub);
        continue;
      }
      if (groups === undefined || (groups !== 'all' && !groups.has(sub.group))) continue;
      picks ??= new Map();
      const list = picks.get(sub.group);
      if (list) list.push(sub);
      else picks.set(sub.group, [sub]);
    }
    matched.length = 0;
    if (picks) for (const [group, members] of picks) targets.push(this.pickLocal(group, members));
    const count = targets.length;
    let lease: PayloadLease | undefined;
    if (release !== undefined) {
      if (count === 0) release();
      else if (targets.every((sub) => sub.leaseMode !== 'none')) lease = new PayloadLease(count, release);
    }
    for (let i = 0; i < count; i++) (targets[i] as Subscriber).push(value, meta, lease);
    targets.length = 0;
    if (count > 0) this.prefix(topic).delivered += count;
    return count;
  }

  /** Meta of the previous frame of the batch being received (reset after each batch). */
  private lastMeta: DeliveryMeta | undefined;

  /** Scratch arrays of `deliverLocal` (subscribers run later, never inside it, so it is never re-entered). */
  private readonly matched: Subscriber[] = [];
  private readonly targets: Subscriber[] = [];
  private readonly collectMatch = (sub: Subscriber): void => {
    this.matched.push(sub);
  };

  /** Of a group's members on this node, the one with the shortest queue; ties rotate. */
  private pickLocal(group: string, members: Subscriber[]): Subscriber {
    if (members.length === 1) return members[0] as Subscriber;
    let min = Number.POSITIVE_INFINITY;
    for (const m of members) if (m.depth < min) min = m.depth;
    const least = members.filter((m) => m.depth === min);
    const cursor = this.localCursor.get(group) ?? 0;
    this.localCursor.set(group, cursor + 1);
    return least[cursor % least.length] as Subscriber;
  }

  // ---- counters ----------------------------------------------------------------------------

  private prefix(topic: string): TopicCounters {
    if (topic === this.lastCountedTopic && this.lastCounters) return this.lastCounters;
    const counters = this.prefixOf(topic);
    this.lastCountedTopic = topic;
    this.lastCounters = counters;
    return counters;
  }

  private prefixOf(topic: string): TopicCounters {
    let end = topic.length;
    for (let i = 0; i < topic.length; i++) {
      const c = topic.charCodeAt(i);
      if (c === 46 /* . */ || c === 58 /* : */) {
        end = i;
        break;
      }
    }
    const p = end === topic.length ? topic : topic.slice(0, end);
    let c = this.prefixes.get(p);
    if (c) return c;
    const key = this.prefixes.size >= MAX_PREFIXES ? 'other' : p;
    c = this.prefixes.get(key);
    if (!c) {
      c = emptyCounters();
      this.prefixes.set(key, c);
    }
    return c;
  }

  stats(): PubSubStats {
    const topics: Record<string, TopicCounters> = {};
    for (const [p, c] of this.prefixes) topics[p] = { ...c };
    return { subscriptions: this.subscriptions, topics, ...this.counters, interestNodes: this.sync.table.nodes().length };
  }

  /** Each local subscription with its counters and queue depth (diagnostics, `/metrics`, tests). */
  subscribers(): Array<{ pattern: string; group?: string; depth: number; maxQueue: number } & SubscriberCounters> {
    return [...this.active.keys()].map((s) => ({ pattern: s.pattern.pattern, group: s.group, depth: s.depth, maxQueue: s.maxQueue, ...s.counters }));
  }

  /** The interest table (diagnostics, tests). */
  get interest(): InterestSync {
    return this.sync;
  }
}
