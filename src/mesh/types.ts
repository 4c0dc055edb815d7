/** Shared types of the mesh layer. */
import type { HeartbeatDropReason } from './heartbeat-protocol.js';

/** Who a node is. `incarnation` is new on every start and grows over restarts. */
export interface NodeIdentity {
  /** Cluster-unique node name. */
  readonly name: string;
  /** `host:port` where the node accepts mesh links. */
  readonly address: string;
  /** Chosen at start: milliseconds since the epoch × 1000 plus a random 0..999. A newer start has a larger value. */
  readonly incarnation: number;
}

/** Member status as the local node sees it. */
export type MemberStatus = 'up' | 'suspect' | 'down';

/** Why a member went down. */
export type DownReason =
  /** The TCP/TLS connection closed or errored (crash, kill -9, RST). */
  | 'connection-closed'
  /** No heartbeat arrived within the failure detector's threshold (pause, partition). */
  | 'heartbeat-timeout'
  /** The node announced it was leaving (`stop()`). */
  | 'left'
  /** A newer incarnation of the same node name joined. */
  | 'superseded'
  /** A discovery strategy asked for the node to be disconnected. */
  | 'disconnected'
  /** The link was closed because the peer broke the protocol (bad frame, oversized message). */
  | 'protocol-error';

/** One member of the cluster, as seen from this node. */
export interface Member extends NodeIdentity {
  status: MemberStatus;
  /** Last measured heartbeat round-trip time, in milliseconds; `null` before the first measurement. */
  rttMs: number | null;
  /** The peer's own main-thread event-loop lag, as it reported it in heartbeats (milliseconds). */
  loopLagMs: number;
  /** Whether this member is a hidden node (CLI/tool): connected but not a cluster member. */
  hidden: boolean;
  /** When the status last changed (ms since epoch). */
  since: number;
}

/** Names of the standard lanes, highest priority first. */
export type LaneName = 'control' | 'events' | 'telemetry' | 'bulk';
export const LANES: readonly LaneName[] = ['control', 'events', 'telemetry', 'bulk'];

/** Per-lane counters of one link, or summed over all links. */
export interface LaneCounters {
  messagesSent: number;
  bytesSent: number;
  messagesReceived: number;
  bytesReceived: number;
  /** Messages dropped by the lane's overflow policy (telemetry lane: drop-oldest). */
  dropped: number;
  /**
   * Messages queued for a peer and never written to a socket, because the peer went down
   * (its link closed and no replacement link to the same incarnation came up). Certainly not
   * delivered. Messages carried onto a replacement link are not lost.
   */
  lost: number;
  /**
   * Messages written to a link's socket whose delivery the peer had not acknowledged when that
   * link closed or was replaced: they may or may not have reached the peer's handlers. Counted on
   * the events, telemetry and bulk lanes; the control lane is not acknowledged, so it stays 0. An
   * upper bound, exact to within one write batch (64 KiB of frames).
   */
  possiblyLost: number;
  /** Bytes currently queued and not yet written to the socket. */
  queuedBytes: number;
}

/** Counters the mesh keeps for metrics and diagnostics. */
export interface MeshStats {
  lanes: Record<LaneName, LaneCounters>;
  handshakeFailures: Record<string, number>;
  framesRejected: number;
  heartbeatPacketsDropped: number;
  /** Heartbeat packets dropped, by reason (malformed, unknown-link, bad-mac, replay, reflected, peer-down). */
  heartbeatPacketsDroppedByReason: Record<HeartbeatDropReason, number>;
  memberEvents: { up: number; down: Record<DownReason, number> };
  linksOpened: number;
  linksClosed: number;
  /** Links to a peer replaced by a newer link to the same incarnation (tie-break, re-dial). */
  linksReplaced: number;
  /**
   * Bodies of large received messages (at least 1 MiB): how many reused pooled memory and how
   * many were newly allocated, and the bytes pooled now (see `borrowPayload` in the pubsub guide).
   */
  largeBodies: { reused: number; allocated: number; pooledBytes: number };
}

/** What a handler is told about the message it handles. */
export interface MessageContext {
  /** Sender node name (this node's own name for a message sent to itself). */
  from: string;
  topic: string;
  lane: LaneName;
  /**
   * The sender's incarnation. A layer keeping state per peer compares it with the one it has:
   * a larger value is a restarted node (resync), a smaller one a stale message (drop).
   */
  incarnation: number;
  /**
   * Id of the link the message came over (the handshake's link id; `"local"` for a message a
   * node sent to itself). It changes when the link to the same incarnation is replaced: messages
   * may have been lost between two sessions (see docs/guides/messaging.md), so a replicating
   * layer resyncs when it sees a new one.
   */
  session: string;
}

/**
 * What a system topic's handler (Foundation's own layers, `InternalMesh.handleSystem`) gets:
 * `MessageContext` plus, for a raw payload in pooled memory, how to hand that memory back.
 * Not exported to users.
 */
export interface SystemMessageContext extends MessageContext {
  /**
   * Present when the payload (sent raw) is a view of a pooled message body (a large message,
   * see src/mesh/body-pool.ts): call it once nothing references the payload, nor any view of it,
   * any more, and its memory serves a later message. Never calling it is safe (the GC collects
   * the memory as usual); calling it early lets a later message overwrite the payload.
   */
  release: (() => void) | undefined;
}

/** Messages and bytes, per lane. */
export type LaneTally = Record<LaneName, { messages: number; bytes: number }>;

/**
 * A link to a peer was replaced by a newer link to the same incarnation (the tie-break of two
 * simultaneous dials, or a peer that re-dialed because it saw the old link die).
 */
export interface LinkReplacedEvent {
  peer: string;
  incarnation: number;
  oldSession: string;
  newSession: string;
  /** Queued and not yet written to the old link: moved onto the new one, ahead of anything newer, in order. */
  carried: LaneTally;
  /** Written to the old link and not acknowledged by the peer: may be lost (control lane: not tracked). */
  possiblyLost: LaneTally;
}

/** Another live node took this node's name with a newer incarnation: this node is out of the cluster. */
export interface SelfReplacedEvent {
  /** The incarnation of the node that holds this name now (when the peer said it). */
  byIncarnation?: number;
  /** The peer that told us. */
  via: string;
  /** One line for the log. */
  message: string;
}

/** Events of the mesh itself (membership events are on `Membership`). */
export interface MeshEvents {
  'link-replaced': [event: LinkReplacedEvent];
  'self-replaced': [event: SelfReplacedEvent];
}

/** Membership changes, as a layer subscribed with `watchMembers` sees them. */
export type MembershipChange =
  | { type: 'up'; member: Member }
  | { type: 'down'; member: Member; reason: DownReason }
  | { type: 'suspect'; member: Member }
  | { type: 'alive'; member: Member };
