/**
 * The redis pubsub transport (Phoenix.PubSub.Redis is the reference), for teams that already run
 * Redis or whose nodes cannot dial each other. Needs the optional peer dependency `ioredis`,
 * loaded when the adapter starts.
 *
 * Every node subscribes to two Redis channels: `<prefix>:all` (presence and interest broadcasts)
 * and `<prefix>:n:<node>` (frames and interest addressed to it). A publish is one PUBLISH per
 * interested node, pipelined, with the same bytes. Nodes learn of each other by presence
 * messages every `presenceMs`; a node not heard for `3 × presenceMs` is down, and one that says
 * goodbye is down at once. Redis pub/sub is FIFO per connection, so FIFO per publisher holds;
 * it has one connection per node and no lanes, so head-of-line isolation between channels does
 * not hold on this transport (docs/guides/pubsub.md).
 *
 * Messages: `[u8 kind][u8 nameLength][sender name][f64 incarnation][u8 lane][body]`.
 */
import { ConfigError } from '../errors.js';
import { decode, encode } from '../mesh/codec.js';
import { LANES, type LaneName } from '../mesh/types.js';
import { type Logger, RateLimitedLog } from '../util/logger.js';
import type { PubSubAdapter, PubSubAdapterHost } from './adapter.js';
import type { InterestMessage } from './interest.js';

/** Options of the redis adapter. */
export interface RedisAdapterOptions {
  /** Redis URL (`redis://[:password@]host:port[/db]`, `rediss://` for TLS). Default `redis://127.0.0.1:6379`. */
  url?: string;
  /** Prefix of the Redis channels; nodes of one cluster share it. Default `foundation:<clusterName>`. */
  prefix?: string;
  /** How often a node announces itself; a node not heard for three periods is down. Default 1000 ms. */
  presenceMs?: number;
}

const Kind = { FRAME: 1, INTEREST: 2, HELLO: 3, BYE: 4 } as const;

/** The slice of ioredis the adapter uses. */
interface RedisClient {
  connect(): Promise<void>;
  publish(channel: string | Buffer, message: Buffer): Promise<number>;
  subscribe(...channels: string[]): Promise<unknown>;
  pipeline(): { publish(channel: string, message: Buffer): unknown; exec(): Promise<unknown> };
  on(event: string, fn: (...args: never[]) => void): unknown;
  quit(): Promise<unknown>;
  disconnect(): void;
}
type RedisCtor = new (url: string, opts: Record<string, unknown>) => RedisClient;

async function loadIoredis(): Promise<RedisCtor> {
  const name = 'ioredis';
  try {
    const mod = (await import(name)) as { default?: RedisCtor; Redis?: RedisCtor };
    const ctor = mod.Redis ?? mod.default;
    if (!ctor) throw new Error('ioredis exports no Redis class');
    return ctor;
  } catch (err) {
    throw new ConfigError('pubsub.adapter', `the redis adapter needs the optional package "ioredis" (npm install ioredis): ${(err as Error).message}`);
  }
}

export class RedisPubSubAdapter implements PubSubAdapter {
  readonly name = 'redis';
  private pub?: RedisClient;
  private sub?: RedisClient;
  private host?: PubSubAdapterHost;
  private timer?: NodeJS.Timeout;
  /** Nodes heard from: incarnation and when last heard. */
  private readonly peers = new Map<string, { incarnation: number; lastSeen: number }>();
  private readonly url: string;
  private readonly prefix: string;
  private readonly presenceMs: number;
  private readonly warn: RateLimitedLog;
  private selfHeader = Buffer.alloc(0);
  private self = '';
  private stopped = false;

  constructor(clusterName: string, opts: RedisAdapterOptions, log: Logger) {
    this.url = opts.url ?? 'redis://127.0.0.1:6379';
    if (!/^rediss?:\/\//.test(this.url)) throw new ConfigError('pubsub.redis.url', `expected a redis:// or rediss:// URL, got ${JSON.stringify(this.url)}`);
    this.prefix = opts.prefix ?? `foundation:${clusterName}`;
    this.presenceMs = opts.presenceMs ?? 1000;
    if (!Number.isInteger(this.presenceMs) || this.presenceMs < 50) {
      throw new ConfigError('pubsub.redis.presenceMs', `expected an integer >= 50, got ${String(opts.presenceMs)}`);
    }
    this.warn = new RateLimitedLog(log);
  }

  private channelOf(node: string): string {
    return `${this.prefix}:n:${node}`;
  }

  private get allChannel(): string {
    return `${this.prefix}:all`;
  }

  async start(host: PubSubAdapterHost): Promise<void> {
    this.host = host;
    this.self = host.self;
    const name = Buffer.from(host.self, 'utf8');
    if (name.length > 255) throw new ConfigError('name', 'node names used with the redis adapter are at most 255 bytes');
    this.selfHeader = Buffer.alloc(2 + name.length + 8);
    this.selfHeader[1] = name.length;
    name.copy(this.selfHeader, 2);
    this.selfHeader.writeDoubleBE(host.incarnation, 2 + name.length);
    const Redis = await loadIoredis();
    const opts = { lazyConnect: true, enableAutoPipelining: false, maxRetriesPerRequest: 2 };
    this.pub = new Redis(this.url, opts);
    this.sub = new Redis(this.url, opts);
    for (const c of [this.pub, this.sub]) {
      c.on('error', (err: Error) => this.warn.warn(`redis:${err.message}`, { error: err.message }, 'redis pubsub connection error'));
    }
    await Promise.all([this.pub.connect(), this.sub.connect()]);
    this.sub.on('messageBuffer', (_channel: Buffer, message: Buffer) => this.onMessage(message));
    await this.sub.subscribe(this.allChannel, this.channelOf(this.self));
    this.hello();
    this.timer = setInterval(() => {
      this.hello();
      this.expire();
    }, this.presenceMs);
    this.timer.unref();
  }

  private message(kind: number, lane: LaneName, body: Uint8Array): Buffer {
    const out = Buffer.allocUnsafe(this.selfHeader.length + 1 + body.length);
    this.selfHeader.copy(out, 0);
    out[0] = kind;
    out[this.selfHeader.length] = LANES.indexOf(lane);
    out.set(body, this.selfHeader.length + 1);
    return out;
  }

  private hello(): void {
    this.pub?.publish(this.allChannel, this.message(Kind.HELLO, 'control', Buffer.alloc(0))).catch(() => {});
  }

  /** Nodes not heard for three presence periods are down. */
  private expire(): void {
    const now = Date.now();
    for (const [node, p] of this.peers) {
      if (now - p.lastSeen > 3 * this.presenceMs) {
        this.peers.delete(node);
        this.host?.peerDown(node);
      }
    }
  }

  private onMessage(msg: Buffer): void {
    const host = this.host;
    if (!host || this.stopped) return;
    // Untrusted bytes: every length is checked before it is used.
    if (msg.length < 2) {
      this.bad('short message');
      return;
    }
    const kind = msg[0] as number;
    const nameLen = msg[1] as number;
    if (msg.length < 2 + nameLen + 9) {
      this.bad('short header');
      return;
    }
    const from = msg.toString('utf8', 2, 2 + nameLen);
    if (from === this.self || from.length === 0) return;
    const incarnation = msg.readDoubleBE(2 + nameLen);
    const lane = LANES[msg[2 + nameLen + 8] as number];
    if (!Number.isFinite(incarnation) || lane === undefined) {
      this.bad('bad header');
      return;
    }
    const body = msg.subarray(2 + nameLen + 9);
    if (kind === Kind.BYE) {
      const p = this.peers.get(from);
      if (p && p.incarnation === incarnation) {
        this.peers.delete(from);
        host.peerDown(from);
      }
      return;
    }
    if (!this.seen(from, incarnation)) return;
    if (kind === Kind.HELLO) return;
    if (kind === Kind.FRAME) host.receive(from, lane, body);
    else if (kind === Kind.INTEREST) {
      let value: unknown;
      try {
        value = decode(body);
      } catch {
        this.bad('undecodable interest message');
        return;
      }
      host.interest(from, incarnation, value);
    } else this.bad(`unknown kind ${kind}`);
  }

  /**
   * Records that `from` is alive; a new node or a new incarnation comes up (the old incarnation
   * goes down first). Returns false for a message of an older incarnation than the one known.
   */
  private seen(from: string, incarnation: number): boolean {
    const host = this.host as PubSubAdapterHost;
    const p = this.peers.get(from);
    if (p && incarnation < p.incarnation) return false;
    if (p && incarnation === p.incarnation) {
      p.lastSeen = Date.now();
      return true;
    }
    if (p) host.peerDown(from);
    this.peers.set(from, { incarnation, lastSeen: Date.now() });
    host.peerUp(from, incarnation);
    // It may not know us yet: say hello at once instead of at the next period.
    this.hello();
    return true;
  }

  private bad(reason: string): void {
    this.warn.warn(`bad:${reason}`, { reason }, 'malformed redis pubsub message dropped');
  }

  send(nodes: readonly string[], frame: Buffer, lane: LaneName): { full: readonly string[]; failed: number } {
    const pub = this.pub;
    if (!pub || this.stopped) return { full: [], failed: nodes.length };
    const msg = this.message(Kind.FRAME, lane, frame);
    if (nodes.length === 1) {
      pub.publish(this.channelOf(nodes[0] as string), msg).catch(() => {});
      return { full: [], failed: 0 };
    }
    const p = pub.pipeline();
    for (const n of nodes) p.publish(this.channelOf(n), msg);
    p.exec().catch(() => {});
    return { full: [], failed: 0 };
  }

  sendInterest(to: string | null, msg: InterestMessage): void {
    if (!this.pub || this.stopped) return;
    const bytes = this.message(Kind.INTEREST, 'control', encode(msg));
    this.pub.publish(to === null ? this.allChannel : this.channelOf(to), bytes).catch(() => {});
  }

  /** Redis takes what it is given (its own output buffers are the limit): nothing to wait for. */
  async drained(): Promise<void> {}

  isSuspect(node: string): boolean {
    const p = this.peers.get(node);
    return p !== undefined && Date.now() - p.lastSeen > 1.5 * this.presenceMs;
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    clearInterval(this.timer);
    try {
      await this.pub?.publish(this.allChannel, this.message(Kind.BYE, 'control', Buffer.alloc(0)));
    } catch {
      // Redis is gone: peers will expire us.
    }
    this.stopped = true;
    await Promise.allSettled([this.pub?.quit(), this.sub?.quit()]);
    this.pub?.disconnect();
    this.sub?.disconnect();
    this.peers.clear();
  }
}
