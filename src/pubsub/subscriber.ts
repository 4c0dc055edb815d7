/**
 * One subscription on this node: its pattern, its handler and its own bounded queue.
 *
 * Why a queue per subscriber: a handler that awaits something slow must delay only its own
 * messages, never the other subscribers, the link the messages came on, or the publisher. Each
 * subscriber therefore runs its handler on one message at a time, in order, from its own queue;
 * when the queue is full the overflow policy decides (drop the oldest and count it, or end the
 * subscription with an error). A handler that throws is counted and logged by the owner, and
 * stays subscribed.
 */
import { ErrorCodes, PubSubError } from '../errors.js';
import type { LaneName } from '../mesh/types.js';
import { Ring } from '../util/ring.js';
import type { ParsedPattern } from './subject.js';
import { otelLoaded, runWithTraceparent } from './trace.js';

/** What a subscriber learns about each message besides its payload. */
export interface DeliveryMeta {
  /** The topic the message was published to (the concrete topic, also for wildcard subscriptions). */
  readonly topic: string;
  /** Name of the node that published it. */
  readonly from: string;
  /** The mesh lane that carried it (`events` unless the publisher or channel chose another). */
  readonly lane: LaneName;
  /** The W3C `traceparent` the publisher attached, if any. */
  readonly traceparent?: string;
}

/** A message as a stream yields it: the payload plus the same fields a handler's second argument carries. */
export interface PubSubMessage<T = unknown> extends DeliveryMeta {
  readonly payload: T;
}

/** A subscription handler. It may return a promise: the next message waits for it (per subscriber only). */
export type SubscriptionHandler<T = unknown> = (payload: T, meta: DeliveryMeta) => unknown;

/** What happens when a subscriber's queue is full. */
export type OverflowPolicy = 'drop-oldest' | 'disconnect';

/** Counters of one subscription, also summed per topic prefix on `/metrics`. */
export interface SubscriberCounters {
  delivered: number;
  dropped: number;
  handlerErrors: number;
}

/** Called by a subscriber on what its owner logs and counts. */
export interface SubscriberHooks {
  handlerFailed(sub: Subscriber, error: unknown, meta: DeliveryMeta): void;
  dropped(sub: Subscriber, meta: DeliveryMeta): void;
  overflowed(sub: Subscriber): void;
}

/**
 * One pooled payload (a large message received into reused memory, src/mesh/body-pool.ts) held
 * by the subscribers it was delivered to, all of which borrow their payloads: its memory goes
 * back to the pool when the last of them is done with it.
 */
export class PayloadLease {
  constructor(
    private holders: number,
    private readonly release: () => void,
  ) {}

  /** One holder is done: called exactly once per delivery that carried the lease. */
  done(): void {
    if (--this.holders === 0) this.release();
  }
}

/**
 * How a subscriber holds a pooled payload: `none` (it does not borrow: a message it gets is
 * never given back to the pool), `until-return` (until its handler returns, or the handler's
 * promise settles), `handed-over` (its handler gets the lease and ends it: a stream, which
 * holds a message until the reader asks for the next one).
 */
export type LeaseMode = 'none' | 'until-return' | 'handed-over';

/** The internal form of a handler: with `handed-over`, it gets the delivery's lease, if any. */
export type LeasingHandler = (payload: unknown, meta: DeliveryMeta, lease: PayloadLease | undefined) => unknown;

interface Delivery {
  payload: unknown;
  meta: DeliveryMeta;
  lease: PayloadLease | undefined;
}

/**
 * Longest a subscriber runs its handler in one go (ms) before letting the event loop (and other
 * subscribers, and socket reads) in. A time budget, not a count: a count small enough to be fair
 * is smaller than what one socket read delivers (hundreds of messages), and the queue would fill
 * under a steady stream however fast the handler.
 */
const RUN_BUDGET_MS = 4;
/** Messages between two looks at the clock. */
const CLOCK_EVERY = 64;

export class Subscriber {
  readonly counters: SubscriberCounters = { delivered: 0, dropped: 0, handlerErrors: 0 };
  private readonly queue = new Ring<Delivery>();
  private running = false;
  private closed = false;

  constructor(
    readonly id: number,
    readonly pattern: ParsedPattern,
    private readonly handler: LeasingHandler,
    readonly maxQueue: number,
    readonly overflow: OverflowPolicy,
    private readonly hooks: SubscriberHooks,
    /** Queue group name, when the subscription belongs to one. */
    readonly group: string | undefined,
    /** Called once when the subscription ends on its own (overflow with `disconnect`). */
    private readonly onOverflowClose: (error: PubSubError) => void,
    /** Whether, and how, it borrows pooled payloads (see `LeaseMode`). */
    readonly leaseMode: LeaseMode = 'none',
  ) {}

  /** Messages waiting for the handler. */
  get depth(): number {
    return this.queue.length;
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /**
   * Queues one message; the handler runs later (never inside the caller's stack). A `lease` is
   * ended exactly once, whatever becomes of the message (handled, dropped, discarded).
   */
  push(payload: unknown, meta: DeliveryMeta, lease?: PayloadLease): void {
    if (this.closed) {
      lease?.done();
      return;
    }
    if (this.queue.length >= this.maxQueue) {
      if (this.overflow === 'disconnect') {
        const error = new PubSubError(
          ErrorCodes.SUBSCRIBER_OVERFLOW,
          `subscriber to "${this.pattern.pattern}" fell ${this.maxQueue} messages behind and was unsubscribed (overflow: 'disconnect')`,
        );
        lease?.done();
        this.close();
        this.hooks.overflowed(this);
        this.onOverflowClose(error);
        return;
      }
      const old = this.queue.shift() as Delivery;
      old.lease?.done();
      this.counters.dropped++;
      this.hooks.dropped(this, old.meta);
    }
    this.queue.push({ payload, meta, lease });
    if (!this.running) {
      this.running = true;
      queueMicrotask(() => this.run());
    }
  }

  /** Stops delivering; queued messages are discarded (not counted as drops: the subscriber asked for it). */
  close(): void {
    this.closed = true;
    for (let d = this.queue.shift(); d !== undefined; d = this.queue.shift()) d.lease?.done();
  }

  private run(): void {
    const deadline = performance.now() + RUN_BUDGET_MS;
    let sinceClock = 0;
    while (!this.closed) {
      const d = this.queue.shift();
      if (d === undefined) {
        this.running = false;
        return;
      }
      // The lease is ended here once the handler is done with the payload, unless the handler
      // takes it over (user handlers never see it).
      const handedOver = this.leaseMode === 'handed-over' ? d.lease : undefined;
      const lease = handedOver === undefined ? d.lease : undefined;
      let result: unknown;
      try {
        // With OpenTelemetry installed, each handler call runs in its message's own trace context.
        result = otelLoaded()
          ? runWithTraceparent(d.meta.traceparent, () => this.handler(d.payload, d.meta, handedOver))
          : this.handler(d.payload, d.meta, handedOver);
      } catch (err) {
        lease?.done();
        this.counters.handlerErrors++;
        this.hooks.handlerFailed(this, err, d.meta);
        continue;
      }
      this.counters.delivered++;
      if (result instanceof Promise) {
        result.then(
          () => {
            lease?.done();
            this.run();
          },
          (err: unknown) => {
            lease?.done();
            this.counters.handlerErrors++;
            this.hooks.handlerFailed(this, err, d.meta);
            this.run();
          },
        );
        return;
      }
      lease?.done();
      if (++sinceClock === CLOCK_EVERY) {
        sinceClock = 0;
        if (performance.now() > deadline) {
          // Let other subscribers and I/O in; this subscriber continues on the next turn.
          setImmediate(() => this.run());
          return;
        }
      }
    }
    this.running = false;
  }
}
