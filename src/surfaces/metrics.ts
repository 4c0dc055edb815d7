/**
 * Prometheus metrics of one node.
 *
 * Every node gets its own `Registry` (never prom-client's global one), so several nodes
 * can live in one process without clobbering each other. All Foundation metrics are
 * computed at scrape time from the node's own counters (`mesh.stats()`,
 * `cluster.members()`, `health()`): nothing is pushed into the registry in between.
 *
 * Values that only grow in the mesh (messages sent, handshake failures...) are exposed
 * as real Prometheus counters: at scrape time the counter is reset and set to the
 * absolute value read from the mesh, so the exposition says `# TYPE ... counter` and the
 * value is exactly what the mesh counted (no delta bookkeeping that could drift).
 */
import { Counter, collectDefaultMetrics, Gauge, Registry } from 'prom-client';
import type { FoundationNode, LocalHealth, MeshStats } from '../api.js';
import type { TopologyStats } from '../discovery/topology.js';
import type { HandshakeFailureReason } from '../errors.js';
import { HEARTBEAT_DROP_REASONS } from '../mesh/heartbeat-protocol.js';
import { type DownReason, LANES, type LaneCounters, type Member, type MemberStatus } from '../mesh/types.js';
import type { ProcessesStats } from '../processes/types.js';
import type { PubSubStats, TopicCounters } from '../pubsub/pubsub.js';
import type { RegistryStats } from '../registry/registry.js';
import type { ClusterConfigStats } from '../services/cluster-config/cluster-config.js';
import type { EventsStats } from '../services/events/events.js';
import type { PresenceStats } from '../services/presence.js';
import type { ServicesStats } from '../services/service-mesh/services.js';

/** The part of a node that metrics are computed from. */
export type MetricsNode = Pick<FoundationNode, 'id' | 'cluster' | 'mesh' | 'health'> &
  Partial<Pick<FoundationNode, 'discovery' | 'pubsub' | 'registry' | 'processes' | 'events' | 'presence' | 'services' | 'config'>>;

/** Options of {@link createMetrics}. */
export interface MetricsOptions {
  /**
   * Also register prom-client's default process metrics (CPU, memory, GC, event loop,
   * handles), prefixed `foundation_process_`. Default `true`. Turn it off when many nodes
   * share one process and only one of them should report process-wide figures.
   */
  processMetrics?: boolean;
}

const PROCESS_PREFIX = 'foundation_process_';
const NON_COUNTER_TOTALS = ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total'];

/** Reported at 0 from the start, so the first failure shows up in `increase()`. */
const HANDSHAKE_REASONS = [
  'bad-secret',
  'version-mismatch',
  'cluster-mismatch',
  'duplicate-link',
  'stale-incarnation',
  'self-connection',
  'protocol',
  'timeout',
  'shutting-down',
  'over-capacity',
] as const satisfies readonly HandshakeFailureReason[];

const MEMBER_STATUSES: readonly MemberStatus[] = ['up', 'suspect', 'down'];
const DOWN_REASONS: readonly DownReason[] = ['connection-closed', 'heartbeat-timeout', 'left', 'superseded', 'disconnected', 'protocol-error'];

/** What one scrape reads from the node. A part is `undefined` when reading it threw. */
interface Snapshot {
  stats: MeshStats | undefined;
  members: Member[] | undefined;
  health: LocalHealth | undefined;
  /** The node's topologies; empty when it has none or reading them threw. */
  topologies: TopologyStats[];
  /** Pubsub counters, when the node has pubsub. */
  pubsub: PubSubStats | undefined;
  /** Registry counters, when the node has a registry. */
  registry: RegistryStats | undefined;
  /** Processes counters, when the node has `processes`. */
  processes: ProcessesStats | undefined;
  /** Service mesh counters, when the node has one. */
  services: ServicesStats | undefined;
  /** Cluster config counters, when the node has `config`. */
  config: ClusterConfigStats | undefined;
  /** Events counters, when the node has events. */
  events: EventsStats | undefined;
  /** Presence counters, when the node has presence. */
  presence: PresenceStats | undefined;
}

function attempt<T>(read: () => T): T | undefined {
  try {
    return read();
  } catch {
    return undefined;
  }
}

/**
 * Reads the node once per scrape: every collector of one `registry.metrics()` call runs
 * in the same synchronous pass, so they all see the same snapshot; it is dropped on the
 * next turn of the event loop.
 */
function snapshotter(node: MetricsNode): () => Snapshot {
  let cached: Snapshot | undefined;
  return () => {
    if (cached === undefined) {
      cached = {
        stats: attempt(() => node.mesh.stats()),
        members: attempt(() => node.cluster.members({ includeDown: true })),
        health: attempt(() => node.health()),
        topologies: attempt(() => node.discovery?.topologies()) ?? [],
        pubsub: attempt(() => node.pubsub?.stats()),
        registry: attempt(() => node.registry?.stats()),
        processes: attempt(() => node.processes?.stats()),
        services: attempt(() => node.services?.stats()),
        config: attempt(() => node.config?.stats()),
        events: attempt(() => node.events?.stats()),
        presence: attempt(() => node.presence?.stats()),
      };
      setImmediate(() => {
        cached = undefined;
      }).unref();
    }
    return cached;
  };
}

/** Milliseconds to seconds, rounded to the microsecond (no float noise in the exposition). */
function seconds(ms: number): number {
  return Math.round(ms * 1000) / 1e6;
}

/** A finite, non-negative number, or `undefined`. */
function count(value: unknown): number | undefined {
  return typeof value === 'number' && Number.isFinite(value) && value >= 0 ? value : undefined;
}

/** The lanes to report: the standard ones first, then any other lane the mesh counts. */
function laneNames(stats: MeshStats): string[] {
  const names: string[] = [...LANES];
  for (const lane of Object.keys(stats.lanes ?? {})) if (!names.includes(lane)) names.push(lane);
  return names;
}

function laneValue(stats: MeshStats, lane: string, key: keyof LaneCounters): unknown {
  return (stats.lanes as Record<string, Partial<LaneCounters> | undefined>)[lane]?.[key] ?? 0;
}

/** Labels and value of one sample. */
type Sample = [labels: Record<string, string>, value: unknown];

/** What a metric is computed from, read once per scrape. */
interface Reading extends Snapshot {
  node: MetricsNode;
}

/**
 * One metric: its name, help, type and labels, and how a scrape computes it. `collect` returns
 * every sample, or `undefined` when what it reads is unavailable (the metric then keeps serving
 * its last values). Counters are set to the absolute value the node counted (see the module
 * comment); a sample whose value is not a finite number (or, for a counter, is negative) is left out.
 */
interface MetricDefinition {
  name: string;
  help: string;
  type: 'counter' | 'gauge';
  labels?: readonly string[];
  collect(r: Reading): Sample[] | undefined;
}

/** A counter per lane, read from `stats.lanes[lane][key]`. */
const laneCounter = (name: string, help: string, key: keyof LaneCounters): MetricDefinition => ({
  name,
  help,
  type: 'counter',
  labels: ['lane'],
  collect: ({ stats }) => stats && laneNames(stats).map((lane) => [{ lane }, laneValue(stats, lane, key)]),
});

/** An unlabelled counter read from the mesh stats. */
const meshCounter = (name: string, help: string, read: (stats: MeshStats) => unknown): MetricDefinition => ({
  name,
  help,
  type: 'counter',
  collect: ({ stats }) => stats && [[{}, read(stats)]],
});

/** This node's loop lag in seconds, from its health. */
const loopLagGauge = (name: string, help: string, read: (lag: LocalHealth['loopLag']) => number): MetricDefinition => ({
  name,
  help,
  type: 'gauge',
  collect: ({ health }) => {
    const ms = health ? read(health.loopLag) : undefined;
    return typeof ms === 'number' && Number.isFinite(ms) ? [[{}, seconds(ms)]] : undefined;
  },
});

/** A counter by `reason`: the known reasons first (reported at 0 from the start, so the first one shows up in `increase()`), then any other. */
function byReason(known: readonly string[], counts: Record<string, unknown>): Sample[] {
  const reasons = [...known, ...Object.keys(counts).filter((r) => !known.includes(r))];
  return reasons.map((reason) => [{ reason }, counts[reason] ?? 0]);
}

/**
 * Heartbeat drops by reason: from `heartbeatPacketsDroppedByReason` (what `Heartbeat.droppedPacketsByReason()`
 * returns) when the mesh stats carry it, else from `heartbeatPacketsDropped`, a record per reason or
 * one total; a total is reported under `reason="unknown"`.
 */
function heartbeatDrops(stats: MeshStats): Sample[] {
  const s = stats as { heartbeatPacketsDroppedByReason?: unknown; heartbeatPacketsDropped?: unknown };
  const raw = s.heartbeatPacketsDroppedByReason ?? s.heartbeatPacketsDropped;
  if (typeof raw === 'number') return [[{ reason: 'unknown' }, raw]];
  if (raw && typeof raw === 'object') return byReason(HEARTBEAT_DROP_REASONS, raw as Record<string, unknown>);
  return [];
}

/**
 * A pubsub counter per topic prefix (the topic up to its first `.` or `:`; at most 64 prefixes,
 * the rest under `other`, so the label's cardinality is bounded whatever topics are used).
 */
const pubsubPrefixCounter = (name: string, help: string, key: keyof TopicCounters): MetricDefinition => ({
  name,
  help,
  type: 'counter',
  labels: ['prefix'],
  collect: ({ pubsub }) => pubsub && Object.entries(pubsub.topics).map(([prefix, c]) => [{ prefix }, c[key]]),
});

/** An unlabelled pubsub counter. */
const pubsubCounter = (name: string, help: string, read: (s: PubSubStats) => unknown): MetricDefinition => ({
  name,
  help,
  type: 'counter',
  collect: ({ pubsub }) => pubsub && [[{}, read(pubsub)]],
});

/** Every Foundation metric. Names and labels are part of the public interface (dashboards, alerts). */
const METRICS: readonly MetricDefinition[] = [
  {
    name: 'foundation_node_info',
    help: 'Identity of this node; always 1',
    type: 'gauge',
    labels: ['name', 'address', 'incarnation'],
    collect: ({ node }) => [[{ name: node.id.name, address: node.id.address, incarnation: String(node.id.incarnation) }, 1]],
  },

  // --- Membership
  {
    name: 'foundation_members',
    help: 'Cluster members this node knows, by status (hidden nodes excluded)',
    type: 'gauge',
    labels: ['status'],
    collect: ({ members }) => members && MEMBER_STATUSES.map((status) => [{ status }, members.filter((m) => m.status === status).length]),
  },
  {
    name: 'foundation_member_rtt_seconds',
    help: 'Last heartbeat round-trip time to each member that is not down',
    type: 'gauge',
    labels: ['peer'],
    collect: ({ members }) =>
      members?.flatMap((m): Sample[] =>
        m.status !== 'down' && typeof m.rttMs === 'number' && Number.isFinite(m.rttMs) ? [[{ peer: m.name }, seconds(m.rttMs)]] : [],
      ),
  },
  {
    name: 'foundation_member_loop_lag_seconds',
    help: 'Event-loop lag each member that is not down reported in its heartbeats',
    type: 'gauge',
    labels: ['peer'],
    collect: ({ members }) =>
      members?.flatMap((m): Sample[] => (m.status !== 'down' && Number.isFinite(m.loopLagMs) ? [[{ peer: m.name }, seconds(m.loopLagMs)]] : [])),
  },
  // Separate gauges rather than one with a `quantile` label: promtool rejects `quantile` outside summaries.
  loopLagGauge('foundation_event_loop_lag_p50_seconds', "This node's main-thread event-loop delay, median", (l) => l.p50Ms),
  loopLagGauge('foundation_event_loop_lag_p99_seconds', "This node's main-thread event-loop delay, 99th percentile", (l) => l.p99Ms),
  loopLagGauge('foundation_event_loop_lag_max_seconds', "This node's main-thread event-loop delay, maximum", (l) => l.maxMs),

  // --- Lanes
  laneCounter('foundation_lane_messages_sent_total', 'Messages sent, summed over all links', 'messagesSent'),
  laneCounter('foundation_lane_bytes_sent_total', 'Bytes sent, summed over all links', 'bytesSent'),
  laneCounter('foundation_lane_messages_received_total', 'Messages received, summed over all links', 'messagesReceived'),
  laneCounter('foundation_lane_bytes_received_total', 'Bytes received, summed over all links', 'bytesReceived'),
  laneCounter('foundation_lane_dropped_total', "Messages dropped by the lane's overflow policy", 'dropped'),
  laneCounter('foundation_lane_lost_total', 'Messages queued for a peer that went down and never written to a socket (certainly not delivered)', 'lost'),
  laneCounter(
    'foundation_lane_possibly_lost_total',
    'Messages written to a link that closed or was replaced before the peer acknowledged them (delivery unknown)',
    'possiblyLost',
  ),
  {
    name: 'foundation_lane_queued_bytes',
    help: 'Bytes queued and not yet written to the socket, summed over all links',
    type: 'gauge',
    labels: ['lane'],
    collect: ({ stats }) => stats && laneNames(stats).map((lane) => [{ lane }, count(laneValue(stats, lane, 'queuedBytes'))]),
  },

  // --- Links and failures
  {
    name: 'foundation_handshake_failures_total',
    help: 'Link handshakes refused, by reason',
    type: 'counter',
    labels: ['reason'],
    collect: ({ stats }) => stats && byReason(HANDSHAKE_REASONS, { ...(stats.handshakeFailures ?? {}) }),
  },
  meshCounter('foundation_frames_rejected_total', 'Frames rejected as malformed or oversized', (s) => s.framesRejected),
  {
    name: 'foundation_large_message_bodies_total',
    help: 'Bodies of received messages of 1 MiB or more, by where their memory came from (reused: a pooled body a borrowing subscriber handed back)',
    type: 'counter',
    labels: ['source'],
    collect: ({ stats }) =>
      stats && [
        [{ source: 'reused' }, stats.largeBodies?.reused ?? 0],
        [{ source: 'allocated' }, stats.largeBodies?.allocated ?? 0],
      ],
  },
  {
    name: 'foundation_large_message_pool_bytes',
    help: 'Bytes of large-message bodies kept for reuse (dropped after 10 s unused)',
    type: 'gauge',
    collect: ({ stats }) => stats && [[{}, stats.largeBodies?.pooledBytes ?? 0]],
  },
  {
    name: 'foundation_heartbeat_packets_dropped_total',
    help: 'Heartbeat packets dropped, by reason (malformed, unknown-link, bad-mac, replay, reflected, peer-down)',
    type: 'counter',
    labels: ['reason'],
    collect: ({ stats }) => stats && heartbeatDrops(stats),
  },
  meshCounter('foundation_member_up_total', 'Times a member came up', (s) => s.memberEvents?.up),
  meshCounter('foundation_links_opened_total', 'Links opened (after a successful handshake)', (s) => s.linksOpened),
  meshCounter('foundation_links_closed_total', 'Links closed', (s) => s.linksClosed),
  meshCounter(
    'foundation_links_replaced_total',
    'Links to a peer replaced by a newer link to the same incarnation (tie-break, re-dial)',
    (s) => (s as { linksReplaced?: unknown }).linksReplaced ?? 0,
  ),
  {
    name: 'foundation_member_down_total',
    help: 'Times a member went down, by reason',
    type: 'counter',
    labels: ['reason'],
    collect: ({ stats }) => stats && byReason(DOWN_REASONS, { ...(stats.memberEvents?.down ?? {}) }),
  },

  // --- PubSub
  pubsubPrefixCounter('foundation_pubsub_published_total', 'Messages published from this node, by topic prefix', 'published'),
  pubsubPrefixCounter('foundation_pubsub_delivered_total', "Messages handed to this node's subscribers, by topic prefix", 'delivered'),
  pubsubPrefixCounter('foundation_pubsub_dropped_total', "Messages dropped by a subscriber's overflow policy on this node, by topic prefix", 'dropped'),
  pubsubPrefixCounter('foundation_pubsub_handler_errors_total', 'Subscription handler calls that threw or rejected, by topic prefix', 'handlerErrors'),
  {
    name: 'foundation_pubsub_subscriptions',
    help: 'Subscriptions on this node',
    type: 'gauge',
    collect: ({ pubsub }) => pubsub && [[{}, pubsub.subscriptions]],
  },
  pubsubCounter('foundation_pubsub_frames_received_total', 'Published messages received from other nodes', (s) => s.framesReceived),
  pubsubCounter('foundation_pubsub_frames_dropped_total', 'Published messages from other nodes dropped as malformed or undecodable', (s) => s.framesDropped),
  pubsubCounter(
    'foundation_pubsub_unrouted_total',
    'Published messages that arrived with no matching subscriber (interest changed in flight)',
    (s) => s.unrouted,
  ),

  // --- Registry
  {
    name: 'foundation_registry_names',
    help: 'Names registered in the cluster as this node sees them (scope=cluster), and those this node holds (scope=local)',
    type: 'gauge',
    labels: ['scope'],
    collect: ({ registry }) =>
      registry && [
        [{ scope: 'cluster' }, registry.names],
        [{ scope: 'local' }, registry.own],
      ],
  },
  {
    name: 'foundation_registry_events_total',
    help: 'Registry changes this node has seen, by type (register, update, unregister, conflict)',
    type: 'counter',
    labels: ['type'],
    collect: ({ registry }) =>
      registry && [
        [{ type: 'register' }, registry.registers],
        [{ type: 'update' }, registry.updates],
        [{ type: 'unregister' }, registry.unregisters],
        [{ type: 'conflict' }, registry.conflicts],
      ],
  },
  {
    name: 'foundation_registry_messages_dropped_total',
    help: 'Registry replication messages from peers dropped as malformed',
    type: 'counter',
    collect: ({ registry }) => registry && [[{}, registry.messagesDropped]],
  },

  // --- Processes
  {
    name: 'foundation_processes_running',
    help: 'Workers running on this node (singletons, replicated copies, placed children)',
    type: 'gauge',
    collect: ({ processes }) => processes && [[{}, processes.running]],
  },
  {
    name: 'foundation_processes_events_total',
    help: 'Worker lifecycle events on this node: restarts (local supervision), failovers (started here because the host died), conflicts (stopped: name_conflict), gave_up (restart intensity exceeded)',
    type: 'counter',
    labels: ['type'],
    collect: ({ processes }) =>
      processes && [
        [{ type: 'restart' }, processes.restarts],
        [{ type: 'failover' }, processes.failovers],
        [{ type: 'conflict' }, processes.conflicts],
        [{ type: 'gave_up' }, processes.gaveUp],
      ],
  },
  {
    name: 'foundation_processes_handoffs_total',
    help: 'Workers moved with their state, off this node (direction=out) and onto it (direction=in)',
    type: 'counter',
    labels: ['direction'],
    collect: ({ processes }) =>
      processes && [
        [{ direction: 'out' }, processes.handoffsOut],
        [{ direction: 'in' }, processes.handoffsIn],
      ],
  },
  {
    name: 'foundation_processes_orphans',
    help: 'Children whose host died and that no node has adopted yet, as this node sees them',
    type: 'gauge',
    collect: ({ processes }) => processes && [[{}, processes.orphans]],
  },
  {
    name: 'foundation_processes_mailbox_depth',
    help: "Messages waiting in this node's worker mailboxes: the sum (stat=sum) and the deepest mailbox (stat=max)",
    type: 'gauge',
    labels: ['stat'],
    collect: ({ processes }) =>
      processes && [
        [{ stat: 'sum' }, processes.mailboxDepth],
        [{ stat: 'max' }, processes.maxMailboxDepth],
      ],
  },
  {
    name: 'foundation_processes_messages_dropped_total',
    help: 'Process-table replication messages and process requests from peers dropped as malformed',
    type: 'counter',
    collect: ({ processes }) => processes && [[{}, processes.messagesDropped]],
  },

  // --- Events
  {
    name: 'foundation_events_emitted_total',
    help: 'Events this node emitted, by scope (local: emit; cluster: emitDistributed)',
    type: 'counter',
    labels: ['scope'],
    collect: ({ events }) =>
      events && [
        [{ scope: 'local' }, events.emittedLocal],
        [{ scope: 'cluster' }, events.emittedDistributed],
      ],
  },
  {
    name: 'foundation_events_received_total',
    help: "Distributed events received (every node's, this one's own included), by outcome (stored, duplicate: origin and sequence number seen already)",
    type: 'counter',
    labels: ['outcome'],
    collect: ({ events }) =>
      events && [
        [{ outcome: 'stored' }, events.received],
        [{ outcome: 'duplicate' }, events.duplicates],
      ],
  },
  {
    name: 'foundation_events_gaps_total',
    help: "Distributed events missed, counted from jumps in an origin's sequence numbers",
    type: 'counter',
    collect: ({ events }) => events && [[{}, events.gaps]],
  },
  {
    name: 'foundation_events_stored',
    help: "Events held by this node's bounded store (scope=held), and its bound (scope=capacity)",
    type: 'gauge',
    labels: ['scope'],
    collect: ({ events }) =>
      events && [
        [{ scope: 'held' }, events.stored],
        [{ scope: 'capacity' }, events.storeSize],
      ],
  },
  {
    name: 'foundation_events_evicted_total',
    help: "Events pushed out of this node's store by its bound",
    type: 'counter',
    collect: ({ events }) => events && [[{}, events.evicted]],
  },
  {
    name: 'foundation_events_queries_total',
    help: 'Cluster-wide event queries made from this node, by result (complete, partial: a member did not answer)',
    type: 'counter',
    labels: ['result'],
    collect: ({ events }) =>
      events && [
        [{ result: 'complete' }, events.queries - events.queriesPartial],
        [{ result: 'partial' }, events.queriesPartial],
      ],
  },
  {
    name: 'foundation_events_query_retries_total',
    help: 'Members asked again in a cluster-wide event query because their link was replaced under the first request',
    type: 'counter',
    collect: ({ events }) => events && [[{}, events.queryRetries]],
  },
  {
    name: 'foundation_events_handler_errors_total',
    help: 'Event handler calls that threw or rejected',
    type: 'counter',
    collect: ({ events }) => events && [[{}, events.handlerErrors]],
  },
  {
    name: 'foundation_events_messages_dropped_total',
    help: 'Malformed events and event queries from peers, dropped',
    type: 'counter',
    collect: ({ events }) => events && [[{}, events.messagesDropped]],
  },

  // --- Presence
  {
    name: 'foundation_presence_presences',
    help: 'Presences in the cluster as this node sees them (scope=cluster), and those this node tracks (scope=local)',
    type: 'gauge',
    labels: ['scope'],
    collect: ({ presence }) =>
      presence && [
        [{ scope: 'cluster' }, presence.presences],
        [{ scope: 'local' }, presence.own],
      ],
  },
  {
    name: 'foundation_presence_diffs_total',
    help: 'Presence joins and leaves this node has seen, by type',
    type: 'counter',
    labels: ['type'],
    collect: ({ presence }) =>
      presence && [
        [{ type: 'join' }, presence.joins],
        [{ type: 'leave' }, presence.leaves],
      ],
  },
  {
    name: 'foundation_presence_messages_dropped_total',
    help: 'Presence replication messages from peers dropped as malformed',
    type: 'counter',
    collect: ({ presence }) => presence && [[{}, presence.messagesDropped]],
  },

  // --- Services
  {
    name: 'foundation_services_instances',
    help: 'Service instances in the cluster as this node sees them, by health',
    type: 'gauge',
    labels: ['health'],
    collect: ({ services }) => services && (['passing', 'warning', 'critical'] as const).map((health): Sample => [{ health }, services.instances[health]]),
  },
  {
    name: 'foundation_services_local_instances',
    help: 'Service instances registered by this node',
    type: 'gauge',
    collect: ({ services }) => services && [[{}, services.local]],
  },
  {
    name: 'foundation_services_checks_total',
    help: 'Health check runs on this node, by result',
    type: 'counter',
    labels: ['result'],
    collect: ({ services }) => services && (['passing', 'warning', 'critical'] as const).map((result): Sample => [{ result }, services.checks[result]]),
  },
  {
    name: 'foundation_services_health_changes_total',
    help: "Health changes of this node's instances, published through the registry",
    type: 'counter',
    collect: ({ services }) => services && [[{}, services.healthChanges]],
  },
  {
    name: 'foundation_services_calls_total',
    help: 'services.call made from this node, by outcome (ok, error: the handler threw, no_method, unavailable)',
    type: 'counter',
    labels: ['outcome'],
    collect: ({ services }) =>
      services && [
        [{ outcome: 'ok' }, services.calls.ok],
        [{ outcome: 'error' }, services.calls.error],
        [{ outcome: 'no_method' }, services.calls.noMethod],
        [{ outcome: 'unavailable' }, services.calls.unavailable],
      ],
  },
  {
    name: 'foundation_services_call_retries_total',
    help: 'services.call attempts retried on another instance',
    type: 'counter',
    collect: ({ services }) => services && [[{}, services.retries]],
  },
  {
    name: 'foundation_services_calls_served_total',
    help: "Calls this node's instances handled",
    type: 'counter',
    collect: ({ services }) => services && [[{}, services.served]],
  },

  // --- Cluster config
  {
    name: 'foundation_config_version',
    help: 'The cluster config version on this node (bumped by every cluster-wide commit)',
    type: 'gauge',
    collect: ({ config }) => config && [[{}, config.version]],
  },
  {
    name: 'foundation_config_transactions_total',
    help: 'Cluster-wide config transactions ended on this node (as coordinator or participant), by outcome',
    type: 'counter',
    labels: ['outcome'],
    collect: ({ config }) =>
      config && [
        [{ outcome: 'committed' }, config.committed],
        [{ outcome: 'aborted' }, config.aborted],
      ],
  },
  {
    name: 'foundation_config_in_doubt',
    help: 'Config transactions this node holds prepared without a decision (recovering, or blocked)',
    type: 'gauge',
    collect: ({ config }) => config && [[{}, config.inDoubt]],
  },
  {
    name: 'foundation_config_divergence_total',
    help: 'Anti-entropy digests that found this node behind a peer (a commit it missed) or different at the same version (conflict); each is repaired from the higher one',
    type: 'counter',
    labels: ['kind'],
    collect: ({ config }) =>
      config && [
        [{ kind: 'behind' }, config.divergences.behind],
        [{ kind: 'conflict' }, config.divergences.conflict],
      ],
  },
  {
    name: 'foundation_config_vetoes_total',
    help: "Votes of this node's validators that vetoed a cluster-wide change",
    type: 'counter',
    collect: ({ config }) => config && [[{}, config.vetoes]],
  },
  {
    name: 'foundation_config_messages_dropped_total',
    help: 'Cluster config messages from peers dropped as malformed',
    type: 'counter',
    collect: ({ config }) => config && [[{}, config.messagesDropped]],
  },

  // --- Discovery
  {
    name: 'foundation_discovery_connects_total',
    help: 'Connect attempts made for discovered nodes, by topology, strategy and result',
    type: 'counter',
    labels: ['topology', 'strategy', 'result'],
    collect: ({ topologies }) =>
      topologies.flatMap((t): Sample[] => [
        [{ topology: t.topology, strategy: t.strategy, result: 'ok' }, t.connects.ok],
        [{ topology: t.topology, strategy: t.strategy, result: 'error' }, t.connects.failed],
      ]),
  },
  {
    name: 'foundation_discovery_disconnects_total',
    help: 'Nodes dropped because their topology no longer found them',
    type: 'counter',
    labels: ['topology', 'strategy'],
    collect: ({ topologies }) => topologies.map((t) => [{ topology: t.topology, strategy: t.strategy }, t.disconnects]),
  },
  {
    name: 'foundation_discovery_lookup_errors_total',
    help: 'Failed discovery lookups (the members were kept)',
    type: 'counter',
    labels: ['topology', 'strategy'],
    collect: ({ topologies }) => topologies.map((t) => [{ topology: t.topology, strategy: t.strategy }, t.lookupErrors]),
  },
  {
    name: 'foundation_discovery_peers',
    help: 'Addresses each topology currently keeps connected',
    type: 'gauge',
    labels: ['topology', 'strategy'],
    collect: ({ topologies }) => topologies.map((t) => [{ topology: t.topology, strategy: t.strategy }, t.peers]),
  },
];

/** The value a sample may take: for a counter a finite count (≥ 0), for a gauge any finite number. */
function valid(type: MetricDefinition['type'], raw: unknown): number | undefined {
  if (type === 'counter') return count(raw);
  return typeof raw === 'number' && Number.isFinite(raw) ? raw : undefined;
}

/** Registers one definition: at scrape time, the metric is reset and set to what `collect` returns. */
function register(def: MetricDefinition, registers: Registry[], read: () => Reading): void {
  const labelNames = [...(def.labels ?? [])];
  const collect = function (this: Counter<string> | Gauge<string>) {
    const samples = def.collect(read());
    if (samples === undefined) return;
    const values = samples.flatMap(([labels, raw]): Array<[Record<string, string>, number]> => {
      const value = valid(def.type, raw);
      return value === undefined ? [] : [[labels, value]];
    });
    // An unlabelled metric with no valid value keeps its last one rather than dropping to 0.
    if (labelNames.length === 0 && values.length === 0) return;
    this.reset();
    for (const [labels, value] of values) {
      if (this instanceof Counter) this.inc(labels, value);
      else this.set(labels, value);
    }
  };
  if (def.type === 'counter') new Counter({ name: def.name, help: def.help, labelNames, registers, collect });
  else new Gauge({ name: def.name, help: def.help, labelNames, registers, collect });
}

/**
 * Creates the Prometheus registry of one node.
 *
 * Metrics (all computed at scrape time, see `METRICS`):
 * - `foundation_node_info{name,address,incarnation}` = 1
 * - `foundation_members{status}`: members per status (`up`, `suspect`, `down`)
 * - `foundation_member_rtt_seconds{peer}`, `foundation_member_loop_lag_seconds{peer}`: per
 *   member that is not down (RTT only once measured)
 * - `foundation_event_loop_lag_p50_seconds`, `..._p99_seconds`, `..._max_seconds`: this node's own loop lag
 * - `foundation_lane_{messages,bytes}_{sent,received}_total{lane}`, `foundation_lane_dropped_total{lane}`,
 *   `foundation_lane_lost_total{lane}`, `foundation_lane_possibly_lost_total{lane}`, `foundation_lane_queued_bytes{lane}`
 * - `foundation_handshake_failures_total{reason}`, `foundation_frames_rejected_total`,
 *   `foundation_heartbeat_packets_dropped_total{reason}`
 * - `foundation_member_up_total`, `foundation_member_down_total{reason}`
 * - `foundation_links_opened_total`, `foundation_links_closed_total`, `foundation_links_replaced_total`
 * - `foundation_discovery_{connects,disconnects,lookup_errors}_total`, `foundation_discovery_peers`
 * - prom-client's default process metrics, prefixed `foundation_process_` (see {@link MetricsOptions.processMetrics}),
 *   minus the three `nodejs_active_*_total` gauges that promtool rejects
 */
export function createMetrics(node: MetricsNode, options: MetricsOptions = {}): Registry {
  const registry = new Registry();
  const snapshot = snapshotter(node);

  if (options.processMetrics !== false) {
    // A coarse event-loop monitor: prom-client's default (10 ms) wakes an idle node 100 times a
    // second, about 0.9% of a core (bench/idle.mjs); Foundation's own loop-lag gauges do not use it.
    collectDefaultMetrics({ register: registry, prefix: PROCESS_PREFIX, eventLoopMonitoringPrecision: 1000 });
    // prom-client names these gauges `*_total`, which promtool rejects for non-counters; the
    // same figures remain available, by type, in the `..._nodejs_active_{handles,requests,resources}` gauges.
    for (const name of NON_COUNTER_TOTALS) registry.removeSingleMetric(`${PROCESS_PREFIX}${name}`);
  }

  const read = (): Reading => ({ ...snapshot(), node });
  for (const def of METRICS) register(def, [registry], read);
  return registry;
}
