/**
 * The transport under pubsub. Two implementations pass the same compliance suite
 * (test/compliance/pubsub-adapter-compliance.ts): `mesh` (the default, over Foundation's own
 * links) and `redis` (over Redis pub/sub, for teams whose nodes cannot dial each other).
 *
 * An adapter carries two things and decides nothing: published frames (built once by the
 * engine, the same bytes to every destination) and the interest protocol's messages. It tells
 * the engine which nodes are up, and when messages to or from a node may have been lost (so the
 * engine resends its interest).
 */
import type { LaneName } from '../mesh/types.js';
import type { InterestMessage } from './interest.js';

/** What the engine offers its adapter. */
export interface PubSubAdapterHost {
  /** This node's name. */
  readonly self: string;
  /** This node's incarnation (the interest protocol checks that messages carry the sender's). */
  readonly incarnation: number;
  /**
   * A published frame from another node. `release`, when the transport received the frame into
   * pooled memory, hands that memory back: the engine calls it once nothing references the
   * frame (or never, and the GC collects it).
   */
  receive(from: string, lane: LaneName, frame: Buffer, release?: () => void): void;
  /** An interest message from another node; `incarnation` is the sender's, as the transport vouches for it. */
  interest(from: string, incarnation: number, msg: unknown): void;
  /** A node is up (or back): it gets this node's whole interest. */
  peerUp(node: string, incarnation: number): void;
  /** A node is down: its interest goes. */
  peerDown(node: string): void;
  /** Messages between this node and `node` may have been lost (a replaced link): resend the interest. */
  peerResync(node: string): void;
}

/** A pubsub transport. */
export interface PubSubAdapter {
  /** `mesh`, `redis`, or a custom name. */
  readonly name: string;
  /** Starts carrying. Calls `host.peerUp` for every node already up before it resolves. */
  start(host: PubSubAdapterHost): Promise<void>;
  /**
   * Queues one frame for each node (never this node). Returns the nodes whose queue is over
   * its high-water mark (the frame is queued anyway), so the publisher can wait; never throws
   * for a single node: an unreachable node is counted as a failed send.
   */
  send(nodes: readonly string[], frame: Buffer, lane: LaneName): { full: readonly string[]; failed: number };
  /**
   * Optional: `send` of the frame `head` + `body` without joining them into one buffer (a gather
   * write; the receiver gets the same bytes as from `send`). The engine uses it when present, so
   * a large payload is never copied into a frame. Same result as `send`.
   */
  sendParts?(nodes: readonly string[], head: Buffer, body: Uint8Array, lane: LaneName): { full: readonly string[]; failed: number };
  /** Sends an interest message to one node, or to every up node when `to` is null. */
  sendInterest(to: string | null, msg: InterestMessage): void;
  /** Resolves when the lane to `node` is under its high-water mark again (or the node is gone). */
  drained(node: string, lane: LaneName): Promise<void>;
  /** True when the transport suspects `node` (queue groups then prefer other members). */
  isSuspect(node: string): boolean;
  /** Stops carrying and releases what it holds. */
  stop(): Promise<void>;
}
