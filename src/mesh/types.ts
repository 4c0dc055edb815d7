/** Shared types of the mesh layer. */

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
