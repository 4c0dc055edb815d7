/**
 * Dispatch: the topic → handler table, and the one path every inbound message takes to its
 * handler (or, for a reply, to its waiting request), whether it came over a link or from this
 * node itself. System topics (starting with `$`) belong to Foundation's own layers; user code
 * cannot claim them.
 */
import { ConfigError, ErrorCodes, FoundationError } from '../errors.js';
import type { Logger, RateLimitedLog } from '../util/logger.js';
import { decode, encode } from './codec.js';
import { type InboundMessage, MessageFlags } from './message.js';
import { errorPayload, type Requests } from './requests.js';
import { LANES, type LaneName, type MessageContext, type NodeIdentity, type SystemMessageContext } from './types.js';

/** A handler of one topic. Its return value (or what its promise resolves to) answers a request. */
export type MessageHandler = (payload: unknown, ctx: MessageContext) => unknown;
/** The handler of a system topic (Foundation's own layers): its context may carry `release`. */
export type SystemMessageHandler = (payload: unknown, ctx: SystemMessageContext) => unknown;

/** Where a message came from, and how to answer it. One per link (and one for this node). */
export interface MessageSource {
  readonly name: string;
  readonly incarnation: number;
  readonly session: string;
  /** Queues a reply (or an error reply) back to the source. */
  reply(lane: number, flags: number, corrId: number, topic: string, body: Uint8Array): void;
}

/** Session id of messages a node sends to itself. */
export const LOCAL_SESSION = 'local';

/** Prefix of the topics reserved to Foundation's layers. */
export const SYSTEM_TOPIC_PREFIX = '$';

const LANE_NAMES: readonly LaneName[] = LANES;

export class Dispatcher {
  private readonly handlers = new Map<string, MessageHandler>();
  /** Messages and payload bytes received over links, per lane (loopback not included). */
  readonly received = LANES.map(() => ({ messages: 0, bytes: 0 }));
  /** This node as a message source: what it sends itself comes back through `onMessage`. */
  readonly local: MessageSource;
  private loopQueue: InboundMessage[] = [];
  private loopScheduled = false;

  constructor(
    private readonly self: NodeIdentity,
    private readonly requests: Requests,
    private readonly log: Logger,
    private readonly warnOnce: RateLimitedLog,
  ) {
    this.local = {
      name: self.name,
      incarnation: self.incarnation,
      session: LOCAL_SESSION,
      reply: (lane, flags, corrId, topic, body) => this.loopback(lane, flags, corrId, topic, body),
    };
  }

  /**
   * Registers the handler of a user topic. A topic starting with `$` is refused: those are
   * system topics (`handleSystem`).
   */
  handle(topic: string, handler: MessageHandler): () => void {
    if (typeof topic !== 'string' || topic.length === 0) throw new ConfigError('topic', 'expected a non-empty string');
    if (topic.startsWith(SYSTEM_TOPIC_PREFIX)) throw new ConfigError('topic', `topics starting with "$" are reserved for Foundation (got "${topic}")`);
    return this.register(topic, handler);
  }

  /** Registers the handler of a system topic (it must start with `$`): for Foundation's own layers. */
  handleSystem(topic: string, handler: SystemMessageHandler): () => void {
    if (typeof topic !== 'string' || !topic.startsWith(SYSTEM_TOPIC_PREFIX) || topic.length < 2) {
      throw new ConfigError('topic', `a system topic starts with "$" and names something after it (got "${String(topic)}")`);
    }
    return this.register(topic, handler as MessageHandler);
  }

  private register(topic: string, handler: MessageHandler): () => void {
    if (this.handlers.has(topic)) throw new FoundationError(ErrorCodes.HANDLER_EXISTS, `a handler for topic "${topic}" is already registered`);
    this.handlers.set(topic, handler);
    return () => {
      if (this.handlers.get(topic) === handler) this.handlers.delete(topic);
    };
  }

  /**
   * Queues a message from this node to itself. It is dispatched later (never inside the caller's
   * call), in order, by the same `onMessage` as a message from a link. `body` is the encoded
   * payload, so the handler gets its own copy, as a remote one would.
   */
  loopback(lane: number, flags: number, corrId: number, topic: string, body: Uint8Array): void {
    const payload = Buffer.isBuffer(body) ? body : Buffer.from(body.buffer, body.byteOffset, body.length);
    this.loopQueue.push({ lane, flags, corrId, topic, payload, release: undefined });
    if (this.loopScheduled) return;
    this.loopScheduled = true;
    setImmediate(() => {
      this.loopScheduled = false;
      const batch = this.loopQueue;
      this.loopQueue = [];
      for (const msg of batch) this.onMessage(this.local, msg);
    });
  }

  /** Counts a message received over a link, then dispatches it. */
  onLinkMessage(src: MessageSource, msg: InboundMessage): void {
    const r = this.received[msg.lane];
    if (r) {
      r.messages++;
      r.bytes += msg.payload.length;
    }
    this.onMessage(src, msg);
  }

  /** Hands a message to its handler, or a reply to its request. */
  onMessage(src: MessageSource, msg: InboundMessage): void {
    if (msg.flags & MessageFlags.REPLY) {
      this.requests.settle(src.name, msg);
      return;
    }
    const from = src.name;
    const handler = this.handlers.get(msg.topic);
    const isRequest = (msg.flags & MessageFlags.REQUEST) !== 0;
    if (!handler) {
      msg.release?.();
      if (isRequest) this.reply(src, msg, { code: ErrorCodes.NO_HANDLER, message: `no handler for topic "${msg.topic}" on ${this.self.name}` }, true);
      else this.warnOnce.warn(`nohandler:${msg.topic}`, { from, topic: msg.topic }, 'message for a topic with no handler dropped');
      return;
    }
    let value: unknown;
    try {
      value = msg.flags & MessageFlags.RAW ? msg.payload : decode(msg.payload);
    } catch (err) {
      this.warnOnce.warn(`decode:${from}`, { from, topic: msg.topic, error: (err as Error).message }, 'undecodable message payload dropped');
      if (isRequest) this.reply(src, msg, { code: ErrorCodes.FRAME_INVALID, message: 'request payload could not be decoded' }, true);
      return;
    }
    // A pooled body goes to a system topic's handler only as a raw payload (a decoded value may
    // hold views of it that no one could account for); user handlers never see `release`.
    const release = msg.release !== undefined && msg.flags & MessageFlags.RAW && msg.topic.startsWith(SYSTEM_TOPIC_PREFIX) ? msg.release : undefined;
    const ctx: SystemMessageContext = {
      from,
      topic: msg.topic,
      lane: LANE_NAMES[msg.lane] as LaneName,
      incarnation: src.incarnation,
      session: src.session,
      release,
    };
    if (!isRequest) {
      try {
        const r = handler(value, ctx);
        if (r instanceof Promise) r.catch((err) => this.handlerFailed(msg.topic, from, err));
      } catch (err) {
        this.handlerFailed(msg.topic, from, err);
      }
      return;
    }
    let result: unknown;
    try {
      result = handler(value, ctx);
    } catch (err) {
      this.reply(src, msg, errorPayload(err), true);
      return;
    }
    if (result instanceof Promise) {
      result.then(
        (v) => this.reply(src, msg, v, false),
        (err) => this.reply(src, msg, errorPayload(err), true),
      );
    } else {
      this.reply(src, msg, result, false);
    }
  }

  private handlerFailed(topic: string, from: string, err: unknown): void {
    this.warnOnce.warn(`handler:${topic}`, { topic, from, error: (err as Error)?.message }, 'message handler threw');
  }

  private reply(src: MessageSource, req: InboundMessage, value: unknown, isError: boolean): void {
    let body: Uint8Array;
    let flags = MessageFlags.REPLY | (isError ? MessageFlags.ERROR : 0);
    if (value instanceof Uint8Array && !isError) {
      body = value;
      flags |= MessageFlags.RAW;
    } else {
      try {
        body = encode(value);
      } catch (err) {
        body = encode(errorPayload(err));
        flags |= MessageFlags.ERROR;
      }
    }
    try {
      src.reply(req.lane, flags, req.corrId, req.topic, body);
    } catch (err) {
      this.log.warn({ to: src.name, topic: req.topic, error: (err as Error).message }, 'reply could not be queued');
    }
  }
}
