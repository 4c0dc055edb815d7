/**
 * The public shape of a running node. `Foundation.start()` returns a `FoundationNode`.
 * Surfaces (HTTP, CLI) are written against these interfaces only.
 */
import type { EventEmitter } from 'node:events';
import type { TopologyStats } from './discovery/topology.js';
import type { FoundationError } from './errors.js';
import type { DownReason, LaneName, Member, MeshStats, MessageContext, NodeIdentity } from './mesh/types.js';
import type { ProcessesApi } from './processes/types.js';
import type { Channels } from './pubsub/channels.js';
import type { PubSubApi } from './pubsub/pubsub.js';
import type { RegistryApi } from './registry/registry.js';
import type { ClusterConfigApi } from './services/cluster-config/cluster-config.js';
import type { EventsApi } from './services/events/events.js';
import type { PresenceApi } from './services/presence.js';
import type { ServicesApi } from './services/service-mesh/services.js';

export type { LaneCounters, MeshStats, MessageContext } from './mesh/types.js';

/** The discovery topologies this node runs. */
export interface DiscoveryView {
  /** Counters of each topology: peers it keeps, connect results, disconnects, lookup errors. */
  topologies(): TopologyStats[];
}

/** This node's own health as seen from inside. */
export interface LocalHealth {
  /** Main-thread event-loop delay, in milliseconds. */
  loopLag: { p50Ms: number; p99Ms: number; maxMs: number };
  /**
   * `ok`; `degraded` when the loop lag p99 is above `degradedLoopLagMs`; `name-taken` when another
   * live node took this node's name (see `ClusterEvents['name-taken']`): this process is no longer a
   * member and should be stopped.
   */
  status: 'ok' | 'degraded' | 'name-taken';
}

/** What `ClusterEvents['name-taken']` carries. */
export interface NameTakenEvent {
  /** A `FoundationError` with code `FOUNDATION_NAME_TAKEN`, its message the line this node logged. */
  error: FoundationError;
  /** The peer that told this node. */
  via: string;
  /** The incarnation of the node that holds the name now, when the peer said it. */
  byIncarnation?: number;
}

/** Events of `ClusterView`: a member came up, went down (with why), became suspect, or is alive again; this node's name was taken. */
export interface ClusterEvents {
  up: [member: Member];
  down: [member: Member, reason: DownReason];
  suspect: [member: Member];
  alive: [member: Member];
  /**
   * Another live node started with this node's name and a newer incarnation, and a peer said so:
   * this node is no longer a member, has stopped dialing and stays isolated; `isReady()` is false
   * from now on and `health().status` is `name-taken`. Emitted once. Stop this process (or rename
   * one of the two): node names must be unique in a cluster.
   */
  'name-taken': [event: NameTakenEvent];
}

/** Cluster membership as this node sees it, with typed events (`ClusterEvents`). */
export interface ClusterView extends EventEmitter<ClusterEvents> {
  /** This node. */
  readonly self: NodeIdentity;
  /** Current members other than this node, including down ones that have not been forgotten yet. Hidden nodes are excluded unless asked. */
  members(opts?: { includeHidden?: boolean; includeDown?: boolean }): Member[];
  /** A member by name, if known. */
  member(name: string): Member | undefined;
  /** True once the node has started and, if it has static/discovered peers, has tried to join them. */
  isReady(): boolean;
}

/** Options of one send. */
export interface SendOptions {
  /** Lane to carry the message. Default `events`. */
  lane?: LaneName;
}

/** Options of one request. */
export interface RequestOptions extends SendOptions {
  /** Milliseconds to wait for the reply. Default 5000. */
  timeoutMs?: number;
}

export type MessageHandler = (payload: unknown, ctx: MessageContext) => unknown | Promise<unknown>;

/** Node-to-node messaging over the authenticated links. */
export interface MeshMessaging {
  /** Send to one node. Returns false when the lane is over its high-water mark (the message is queued anyway); await `drained()` before sending more. */
  send(node: string, topic: string, payload: unknown, opts?: SendOptions): boolean;
  /** Request/response: resolves with the handler's return value on the remote node. */
  request<T = unknown>(node: string, topic: string, payload: unknown, opts?: RequestOptions): Promise<T>;
  /** Register the handler for a topic. Replies to requests with its return value. Returns an unregister function. */
  handle(topic: string, handler: MessageHandler): () => void;
  /** Resolves when the lane to `node` is back under its high-water mark. */
  drained(node: string, lane?: LaneName): Promise<void>;
  /** Counters. */
  stats(): MeshStats;
}

/**
 * This node's metrics, as Foundation exposes them: the Prometheus text exposition and its
 * content type. Foundation's own interface, so the public API does not depend on the metrics
 * library behind it (prom-client today).
 */
export interface MetricsRegistry {
  /** Every metric of this node in the Prometheus text format, collected now. */
  metrics(): Promise<string>;
  /** The HTTP `Content-Type` of that text. */
  readonly contentType: string;
}

/** A running Foundation node. */
export interface FoundationNode {
  /** Name, address and incarnation. */
  readonly id: NodeIdentity;
  readonly cluster: ClusterView;
  readonly mesh: MeshMessaging;
  /** Discovery topologies and their counters. */
  readonly discovery: DiscoveryView;
  /** Cluster-wide publish/subscribe: topics with wildcards and queue groups (docs/guides/pubsub.md). */
  readonly pubsub: PubSubApi;
  /** Cluster-wide registry of names: local lookups, replicated registrations, deterministic conflict resolution (docs/guides/registry.md). */
  readonly registry: RegistryApi;
  /** Cluster-wide configuration: local reads and overrides, watches, validators that can veto, `setClusterWide` by a real two-phase commit, versions and history (docs/guides/config.md). */
  readonly config: ClusterConfigApi;
  /** Local and distributed events with ids, per-origin sequence numbers and HLC stamps; a bounded store per node and a cluster-wide query (docs/guides/events.md). `emitDistributed` is `channels.broadcast('events', ...)`. */
  readonly events: EventsApi;
  /** Who is present on which topic, from every node, with join/leave diffs (Phoenix.Presence; docs/guides/presence.md). Replicated like the registry. */
  readonly presence: PresenceApi;
  /** Workers across the cluster: singletons, one per node, placed children, calls by name (docs/guides/processes.md). */
  readonly processes: ProcessesApi;
  /** Service discovery with health, a facade over `registry` (`discover` is a registry select shaped into records); `call` routes to healthy instances (docs/guides/services.md). */
  readonly services: ServicesApi;
  /** The channel facade over `pubsub`: `control`, `events`, `telemetry`, `config` and user channels, each on a lane (docs/guides/channels.md). */
  readonly channels: Channels;
  /** This node's metrics, in the Prometheus text format (what `/metrics` serves). */
  readonly metrics: MetricsRegistry;
  /** Address of the HTTP admin server (`host:port`), when enabled. */
  readonly httpAddress: string | undefined;
  health(): LocalHealth;
  /** Leave the cluster gracefully (peers see reason `left`) and release every resource. */
  stop(): Promise<void>;
}
