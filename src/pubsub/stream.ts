/**
 * `pubsub.stream(topic)`: a subscription as an async iterator, as nats.js has them. It ends on
 * `stop()`, on its AbortSignal, or when its queue overflows with the `disconnect` policy (then
 * the loop throws that error).
 */
import type { PayloadLease, PubSubMessage } from './subscriber.js';

export interface PubSubStream<T = unknown> extends AsyncIterableIterator<PubSubMessage<T>> {
  /** Ends the stream: the subscription is removed and a pending `next()` resolves as done. */
  stop(): void;
  /** Messages waiting to be read. */
  readonly pending: number;
}

/** The iterator half; the owner pushes messages in through `push` (from the subscriber's queue). */
export class StreamIterator<T> implements PubSubStream<T> {
  /** Messages not read yet, each with its lease when the stream borrows its payloads. */
  private readonly buffered: Array<{ msg: PubSubMessage<T>; lease: PayloadLease | undefined }> = [];
  /** Lease of the message the reader has now: ended when it asks for the next one, or leaves. */
  private held: PayloadLease | undefined;
  private waiter?: { resolve: (r: IteratorResult<PubSubMessage<T>>) => void; reject: (e: unknown) => void };
  private done = false;
  private failure?: unknown;
  /** Resolves the message the handler is waiting to hand over: the queue holds the rest. */
  private release?: () => void;

  constructor(private readonly onStop: () => void) {}

  get pending(): number {
    return this.buffered.length;
  }

  /**
   * The subscriber's handler: hands one message to the reader, and returns a promise that
   * settles when the reader took it, so the subscriber's bounded queue (and its overflow policy)
   * is what holds messages a slow reader has not read yet.
   */
  push(msg: PubSubMessage<T>, lease?: PayloadLease): Promise<void> | undefined {
    if (this.done) {
      lease?.done();
      return undefined;
    }
    const w = this.waiter;
    if (w) {
      this.waiter = undefined;
      this.hold(lease);
      w.resolve({ value: msg, done: false });
      return undefined;
    }
    this.buffered.push({ msg, lease });
    return new Promise<void>((resolve) => (this.release = resolve));
  }

  /** Ends the stream with an error (overflow). */
  fail(error: unknown): void {
    if (this.done) return;
    this.failure = error;
    this.finish();
  }

  stop(): void {
    if (this.done) return;
    this.finish();
    this.onStop();
  }

  private finish(): void {
    this.done = true;
    this.release?.();
    this.release = undefined;
    const w = this.waiter;
    this.waiter = undefined;
    if (w) {
      if (this.failure !== undefined) w.reject(this.failure);
      else w.resolve({ value: undefined, done: true });
    }
  }

  /** The reader now has the message of `lease`: the previous one's payload is no longer borrowed. */
  private hold(lease: PayloadLease | undefined): void {
    this.held?.done();
    this.held = lease;
  }

  next(): Promise<IteratorResult<PubSubMessage<T>>> {
    const next = this.buffered.shift();
    if (next !== undefined) {
      this.hold(next.lease);
      const release = this.release;
      this.release = undefined;
      release?.();
      return Promise.resolve({ value: next.msg, done: false });
    }
    this.hold(undefined);
    if (this.done) {
      if (this.failure !== undefined) {
        const f = this.failure;
        this.failure = undefined;
        return Promise.reject(f);
      }
      return Promise.resolve({ value: undefined, done: true });
    }
    return new Promise((resolve, reject) => (this.waiter = { resolve, reject }));
  }

  return(): Promise<IteratorResult<PubSubMessage<T>>> {
    this.stop();
    // The reader left: nothing it was given, or will not read, is borrowed any more.
    this.hold(undefined);
    for (const { lease } of this.buffered) lease?.done();
    this.buffered.length = 0;
    return Promise.resolve({ value: undefined, done: true });
  }

  [Symbol.asyncIterator](): PubSubStream<T> {
    return this;
  }
}
