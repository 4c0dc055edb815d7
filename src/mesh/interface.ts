/**
 * The internal interface for Foundation's own layers (pubsub, registry, cluster services): what
 * they build on, implemented by `Mesh`. Not exported to users (src/index.ts does not name it).
 * Documented in docs/architecture.md ("The internal interface for layers").
 *
 * Guarantees a layer may rely on:
 * - per (sender, receiver, lane), messages are handled in the order they were sent, including
 *   across a link replacement (docs/guides/messaging.md says what may be lost there, and how it
 *   is counted and evented);
 * - a message from a peer is never handled before that peer's `up` has fired, nor one of a new
 *   session before its `link-replaced`;
 * - `ctx.incarnation` and `ctx.session` say which incarnation of the sender sent it, over which
 *   link; this node's messages to itself carry its own incarnation and session `"local"`.
 */
import type { EventEmitter } from 'node:events';
import type { SystemMessageHandler } from './dispatch.js';
import type { Membership } from './membership.js';
import type { LaneName, LinkReplacedEvent, Member, MembershipChange, MeshEvents, NodeIdentity } from './types.js';

/** What `sendMany` did. */
export interface SendManyResult {
  /** Nodes the message was queued for (this node included, when named). */
  sent: number;
  /** Of those, the nodes whose lane is now over its high-water mark: await `drained` before sending them more. */
  full: string[];
  /** Nodes it was not queued for, and why (not connected, lane over its hard limit, node stopping). */
  failed: Array<{ node: string; error: Error }>;
}

/** A membership subscription: the members up when it started, then every change through the listener. */
export interface MembersWatch {
  /** Members up (or suspect) at the moment of the call, hidden nodes excluded unless asked. */
  readonly members: Member[];
  /** Stops the listener. */
  stop(): void;
}

export interface InternalMesh {
  /** This node. */
  readonly self: NodeIdentity;
  /** The member table, with typed events (`up`, `down`, `suspect`, `alive`). */
  readonly membership: Membership;
  /** `link-replaced` (a peer's link replaced, same incarnation) and `self-replaced` (this node's name was taken). */
  readonly events: EventEmitter<MeshEvents>;

  /**
   * Calls `listener` on every `link-replaced` event (messages to or from that peer may have been
   * lost between two sessions: a replicating layer resyncs with it). Returns the function that
   * stops it.
   */
  onLinkReplaced(listener: (event: LinkReplacedEvent) => void): () => void;

  /**
   * Registers the handler of a system topic: it must start with `$` (user code cannot register
   * those: `handle` refuses them). One handler per topic; a second one throws
   * `FOUNDATION_HANDLER_EXISTS`. Returns the unregister function. A large raw payload may come
   * with `ctx.release` (pooled memory: see `SystemMessageContext`).
   */
  handleSystem(topic: string, handler: SystemMessageHandler): () => void;

  /**
   * Sends one message. `node` may be this node's own name: the message then loops back through
   * the same dispatch (same handler, same context shape, `session` `"local"`), asynchronously,
   * never inside this call. Returns false when the lane is over its high-water mark (the message
   * is queued anyway). Throws `FOUNDATION_NODE_UNREACHABLE` when no link to `node` exists.
   * A `Uint8Array` payload is sent raw; a `GatherPayload` (message.ts) is sent raw as its head
   * then its body, the body never copied into one buffer with the head (large payloads).
   */
  send(node: string, topic: string, payload: unknown, lane?: LaneName): boolean;

  /**
   * Sends the same message to several nodes: the payload is encoded once and the same bytes are
   * queued on each link (and looped back, when this node is named). Never throws for one node;
   * see the result.
   */
  sendMany(nodes: Iterable<string>, topic: string, payload: unknown, lane?: LaneName): SendManyResult;

  /** Request/response; `node` may be this node (loopback, as `send`). Rejects with the `MessagingError`s of docs/errors.md. */
  request<T>(node: string, topic: string, payload: unknown, lane?: LaneName, timeoutMs?: number): Promise<T>;

  /** Resolves when the lane to `node` is under its high-water mark; rejects if the peer goes down first. */
  drained(node: string, lane?: LaneName): Promise<void>;

  /**
   * Snapshot plus subscription, with no gap and no duplicate: returns the members up now, and
   * calls `listener` with every membership change after that (both done in the same tick, and
   * membership changes are emitted synchronously, so none falls between them).
   */
  watchMembers(listener: (change: MembershipChange) => void, opts?: { includeHidden?: boolean }): MembersWatch;
}
