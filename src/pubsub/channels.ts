/**
 * `node.channels`: the seeds' channel pattern, a thin facade over `node.pubsub` that leaks on
 * purpose. A channel is a pubsub topic `foundation:<name>` bound to a mesh lane, with optional
 * compression and trace-context propagation:
 *
 * | facade                                | mechanism                                                    |
 * |---------------------------------------|--------------------------------------------------------------|
 * | `channels.broadcast('events', msg)`   | `pubsub.broadcast('foundation:events', msg, { lane: 'events' })` |
 * | `channels.subscribe('events', fn)`    | `pubsub.subscribe('foundation:events', fn)`                  |
 *
 * (docs/guides/channels.md has the whole table.)
 */
import { ConfigError } from '../errors.js';
import { LANES, type LaneName } from '../mesh/types.js';
import type { BroadcastOptions, PubSubApi, SubscribeOptions } from './pubsub.js';
import type { PubSubStream } from './stream.js';
import type { SubscriptionHandler } from './subscriber.js';
import { activeTraceparent } from './trace.js';

export { loadOtel } from './trace.js';

/** How a channel carries its messages. */
export interface ChannelOptions {
  /** The mesh lane: `control` (strict priority), `events`, `telemetry` (drops its oldest when full) or `bulk`. */
  lane: LaneName;
  /**
   * Deflate payloads whose encoded size is above a threshold: `true` uses
   * `DEFAULT_COMPRESS_ABOVE`, a number sets the threshold in bytes, `false` (default) never.
   */
  compress?: boolean | number;
}

/** The channel of a name, as resolved. */
export interface ChannelSpec {
  readonly name: string;
  /** The pubsub topic beneath: `foundation:<name>`. */
  readonly topic: string;
  readonly lane: LaneName;
  /** Bytes above which payloads are deflated; undefined: never. */
  readonly compressAbove: number | undefined;
}

/**
 * Threshold of `compress: true`. `node bench/compress.mjs` (deflate level 1 on metric-like
 * payloads) finds that compression never pays on loopback or 1 Gbit/s (compressing costs more
 * time than the bytes save), and pays on a 100 Mbit/s link from 2-8 KiB: hence opt-in per
 * channel, for slow links, and this threshold (docs/guides/channels.md has the figures).
 */
export const DEFAULT_COMPRESS_ABOVE = 8 * 1024;

/** The standard channels. `config` rides the control lane: a config change must not wait behind bulk data. */
export const STANDARD_CHANNELS: Record<'control' | 'events' | 'telemetry' | 'config', ChannelOptions> = {
  control: { lane: 'control' },
  events: { lane: 'events' },
  telemetry: { lane: 'telemetry' },
  config: { lane: 'control' },
};

/** The prefix of every channel's pubsub topic. */
export const CHANNEL_TOPIC_PREFIX = 'foundation:';

export class Channels {
  private readonly specs = new Map<string, ChannelSpec>();

  constructor(
    /** The mechanism beneath, reachable on purpose. */
    readonly pubsub: PubSubApi,
  ) {
    for (const [name, opts] of Object.entries(STANDARD_CHANNELS)) this.specs.set(name, resolve(name, opts));
  }

  /** Defines a user channel. Redefining a name (standard ones included) throws. */
  define(name: string, opts: ChannelOptions): ChannelSpec {
    if (typeof name !== 'string' || !/^[A-Za-z0-9_-]{1,64}$/.test(name)) {
      throw new ConfigError('channel', `a channel name is 1-64 letters, digits, "_" or "-" (got ${JSON.stringify(name)})`);
    }
    if (this.specs.has(name)) throw new ConfigError('channel', `channel "${name}" is already defined`);
    const spec = resolve(name, opts);
    this.specs.set(name, spec);
    return spec;
  }

  /** The channel of a name (how it maps onto pubsub and the lanes). */
  get(name: string): ChannelSpec {
    const spec = this.specs.get(name);
    if (!spec) {
      throw new ConfigError('channel', `unknown channel "${name}"; defined: ${[...this.specs.keys()].join(', ')} (define it with channels.define)`);
    }
    return spec;
  }

  /** Every defined channel. */
  list(): ChannelSpec[] {
    return [...this.specs.values()];
  }

  /** `pubsub.broadcast('foundation:<name>', payload)` on the channel's lane, compressed and traced as defined. */
  broadcast(name: string, payload: unknown): boolean {
    const spec = this.get(name);
    return this.pubsub.broadcast(spec.topic, payload, this.options(spec));
  }

  /** `pubsub.broadcastFrom('foundation:<name>', payload)`: every node but this one. */
  broadcastFrom(name: string, payload: unknown): boolean {
    const spec = this.get(name);
    return this.pubsub.broadcastFrom(spec.topic, payload, this.options(spec));
  }

  /** `pubsub.localBroadcast('foundation:<name>', payload)`. */
  localBroadcast(name: string, payload: unknown): void {
    this.pubsub.localBroadcast(this.get(name).topic, payload);
  }

  /** `pubsub.directBroadcast(node, 'foundation:<name>', payload)`. */
  directBroadcast(node: string, name: string, payload: unknown): boolean {
    const spec = this.get(name);
    return this.pubsub.directBroadcast(node, spec.topic, payload, this.options(spec));
  }

  /** `pubsub.subscribe('foundation:<name>', handler, opts)`. */
  subscribe<T = unknown>(name: string, handler: SubscriptionHandler<T>, opts?: SubscribeOptions): () => void {
    return this.pubsub.subscribe(this.get(name).topic, handler, opts);
  }

  /** `pubsub.stream('foundation:<name>', opts)`. */
  stream<T = unknown>(name: string, opts?: Omit<SubscribeOptions, 'onError'>): PubSubStream<T> {
    return this.pubsub.stream<T>(this.get(name).topic, opts);
  }

  private options(spec: ChannelSpec): BroadcastOptions {
    const traceparent = activeTraceparent();
    return traceparent === undefined
      ? { lane: spec.lane, compressAbove: spec.compressAbove }
      : { lane: spec.lane, compressAbove: spec.compressAbove, traceparent };
  }
}

function resolve(name: string, opts: ChannelOptions): ChannelSpec {
  if (typeof opts !== 'object' || opts === null) throw new ConfigError(`channels.${name}`, 'expected { lane, compress? }');
  if (!(LANES as readonly string[]).includes(opts.lane)) {
    throw new ConfigError(`channels.${name}.lane`, `expected one of ${LANES.join(', ')}, got ${JSON.stringify(opts.lane)}`);
  }
  const c = opts.compress;
  let compressAbove: number | undefined;
  if (c === true) compressAbove = DEFAULT_COMPRESS_ABOVE;
  else if (typeof c === 'number') {
    if (!Number.isInteger(c) || c < 0) throw new ConfigError(`channels.${name}.compress`, `expected true, false or a byte threshold >= 0, got ${c}`);
    compressAbove = c;
  } else if (c !== undefined && c !== false) {
    throw new ConfigError(`channels.${name}.compress`, `expected true, false or a byte threshold >= 0, got ${JSON.stringify(c)}`);
  }
  return { name, topic: `${CHANNEL_TOPIC_PREFIX}${name}`, lane: opts.lane, compressAbove };
}
