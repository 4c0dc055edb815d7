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
import type { HandshakeFailureReason } from '../errors.js';
import { type DownReason, LANES, type LaneName, type Member, type MemberStatus } from '../mesh/types.js';

/** The part of a node that metrics are computed from. */
export type MetricsNode = Pick<FoundationNode, 'id' | 'cluster' | 'mesh' | 'health'> & Partial<Pick<FoundationNode, 'discovery'>>;

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
] as const satisfies readonly HandshakeFailureReason[];

const MEMBER_STATUSES: readonly MemberStatus[] = ['up', 'suspect', 'down'];
const DOWN_REASONS: readonly DownReason[] = ['connection-closed', 'heartbeat-timeout', 'left', 'superseded', 'disconnected', 'protocol-error'];

/** What one scrape reads from the node. A part is `undefined` when reading it threw. */
interface Snapshot {
  stats: MeshStats | undefined;
  members: Member[] | undefined;
  health: LocalHealth | undefined;
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

/** Sets a labelled counter to absolute values (see the module comment). */
function setCounterValues<L extends string>(counter: Counter<L>, values: Iterable<[Partial<Record<L, string>>, unknown]>): void {
  counter.reset();
  for (const [labels, raw] of values) {
    const value = count(raw);
    if (value !== undefined) counter.inc(labels, value);
  }
}

/** Sets an unlabelled counter to an absolute value. */
function setCounterValue(counter: Counter<string>, raw: unknown): void {
  const value = count(raw);
  if (value === undefined) return;
  counter.reset();
  counter.inc(value);
}

/** The lanes to report: the standard ones first, then any other lane the mesh counts. */
function laneNames(stats: MeshStats): string[] {
  const names: string[] = [...LANES];
  for (const lane of Object.keys(stats.lanes ?? {})) if (!names.includes(lane)) names.push(lane);
  return names;
}

function laneValue(stats: MeshStats, lane: string, key: keyof MeshStats['lanes'][LaneName]): unknown {
  return (stats.lanes as Record<string, MeshStats['lanes'][LaneName] | undefined>)[lane]?.[key] ?? 0;
}

/**
 * Creates the Prometheus registry of one node.
 *
 * Metrics (all computed at scrape time):
 * - `foundation_node_info{name,address,incarnation}` = 1
 * - `foundation_members{status}`: members per status (`up`, `suspect`, `down`)
 * - `foundation_member_rtt_seconds{peer}`, `foundation_member_loop_lag_seconds{peer}`: per
 *   member that is not down (RTT only once measured)
 * - `foundation_event_loop_lag_p50_seconds`, `..._p99_seconds`, `..._max_seconds`: this node's own loop lag
 * - `foundation_lane_{messages,bytes}_{sent,received}_total{lane}`, `foundation_lane_dropped_total{lane}`,
 *   `foundation_lane_queued_bytes{lane}`
 * - `foundation_handshake_failures_total{reason}`, `foundation_frames_rejected_total`,
 *   `foundation_heartbeat_packets_dropped_total`
 * - `foundation_member_up_total`, `foundation_member_down_total{reason}`
 * - `foundation_links_opened_total`, `foundation_links_closed_total`
 * - prom-client's default process metrics, prefixed `foundation_process_` (see {@link MetricsOptions.processMetrics}),
 *   minus the three `nodejs_active_*_total` gauges that promtool rejects
 */
export function createMetrics(node: MetricsNode, options: MetricsOptions = {}): Registry {
  const register = new Registry();
  const registers = [register];
  const snapshot = snapshotter(node);

  if (options.processMetrics !== false) {
    collectDefaultMetrics({ register, prefix: PROCESS_PREFIX });
    // prom-client names these gauges `*_total`, which promtool rejects for non-counters; the
    // same figures remain available, by type, in the `..._nodejs_active_{handles,requests,resources}` gauges.
    for (const name of NON_COUNTER_TOTALS) register.removeSingleMetric(`${PROCESS_PREFIX}${name}`);
  }

  new Gauge({
    name: 'foundation_node_info',
    help: 'Identity of this node; always 1',
    labelNames: ['name', 'address', 'incarnation'],
    registers,
    collect() {
      this.reset();
      this.set({ name: node.id.name, address: node.id.address, incarnation: String(node.id.incarnation) }, 1);
    },
  });

  // --- Membership -------------------------------------------------------------------
  new Gauge({
    name: 'foundation_members',
    help: 'Cluster members this node knows, by status (hidden nodes excluded)',
    labelNames: ['status'],
    registers,
    collect() {
      const { members } = snapshot();
      if (!members) return;
      this.reset();
      for (const status of MEMBER_STATUSES) {
        this.set({ status }, members.filter((m) => m.status === status).length);
      }
    },
  });

  new Gauge({
    name: 'foundation_member_rtt_seconds',
    help: 'Last heartbeat round-trip time to each member that is not down',
    labelNames: ['peer'],
    registers,
    collect() {
      const { members } = snapshot();
      if (!members) return;
      this.reset();
      for (const m of members) {
        if (m.status !== 'down' && typeof m.rttMs === 'number' && Number.isFinite(m.rttMs)) {
          this.set({ peer: m.name }, seconds(m.rttMs));
        }
      }
    },
  });

  new Gauge({
    name: 'foundation_member_loop_lag_seconds',
    help: 'Event-loop lag each member that is not down reported in its heartbeats',
    labelNames: ['peer'],
    registers,
    collect() {
      const { members } = snapshot();
      if (!members) return;
      this.reset();
      for (const m of members) {
        if (m.status !== 'down' && Number.isFinite(m.loopLagMs)) this.set({ peer: m.name }, seconds(m.loopLagMs));
      }
    },
  });

  const loopLagGauge = (name: string, help: string, read: (lag: LocalHealth['loopLag']) => number) =>
    new Gauge({
      name,
      help,
      registers,
      collect() {
        const { health } = snapshot();
        const ms = health ? read(health.loopLag) : undefined;
        if (typeof ms === 'number' && Number.isFinite(ms)) this.set(seconds(ms));
      },
    });
  // Separate gauges rather than one with a `quantile` label: promtool rejects `quantile` outside summaries.
  loopLagGauge('foundation_event_loop_lag_p50_seconds', "This node's main-thread event-loop delay, median", (l) => l.p50Ms);
  loopLagGauge('foundation_event_loop_lag_p99_seconds', "This node's main-thread event-loop delay, 99th percentile", (l) => l.p99Ms);
  loopLagGauge('foundation_event_loop_lag_max_seconds', "This node's main-thread event-loop delay, maximum", (l) => l.maxMs);

  // --- Lanes ------------------------------------------------------------------------
  const laneCounter = (name: string, help: string, key: keyof MeshStats['lanes'][LaneName]) =>
    new Counter({
      name,
      help,
      labelNames: ['lane'],
      registers,
      collect() {
        const { stats } = snapshot();
        if (!stats) return;
        setCounterValues(
          this,
          laneNames(stats).map((lane) => [{ lane }, laneValue(stats, lane, key)]),
        );
      },
    });
  laneCounter('foundation_lane_messages_sent_total', 'Messages sent, summed over all links', 'messagesSent');
  laneCounter('foundation_lane_bytes_sent_total', 'Bytes sent, summed over all links', 'bytesSent');
  laneCounter('foundation_lane_messages_received_total', 'Messages received, summed over all links', 'messagesReceived');
  laneCounter('foundation_lane_bytes_received_total', 'Bytes received, summed over all links', 'bytesReceived');
  laneCounter('foundation_lane_dropped_total', "Messages dropped by the lane's overflow policy", 'dropped');

  new Gauge({
    name: 'foundation_lane_queued_bytes',
    help: 'Bytes queued and not yet written to the socket, summed over all links',
    labelNames: ['lane'],
    registers,
    collect() {
      const { stats } = snapshot();
      if (!stats) return;
      this.reset();
      for (const lane of laneNames(stats)) {
        const value = count(laneValue(stats, lane, 'queuedBytes'));
        if (value !== undefined) this.set({ lane }, value);
      }
    },
  });

  // --- Links and failures -----------------------------------------------------------
  new Counter({
    name: 'foundation_handshake_failures_total',
    help: 'Link handshakes refused, by reason',
    labelNames: ['reason'],
    registers,
    collect() {
      const { stats } = snapshot();
      if (!stats) return;
      const failures: Record<string, number> = { ...(stats.handshakeFailures ?? {}) };
      const reasons = new Set<string>([...HANDSHAKE_REASONS, ...Object.keys(failures)]);
      setCounterValues(
        this,
        [...reasons].map((reason) => [{ reason }, failures[reason] ?? 0]),
      );
    },
  });

  const plainCounter = (name: string, help: string, read: (stats: MeshStats) => unknown) =>
    new Counter({
      name,
      help,
      registers,
      collect() {
        const { stats } = snapshot();
        if (stats) setCounterValue(this, read(stats));
      },
    });
  plainCounter('foundation_frames_rejected_total', 'Frames rejected as malformed or oversized', (s) => s.framesRejected);
  plainCounter(
    'foundation_heartbeat_packets_dropped_total',
    'Heartbeat packets dropped (unauthenticated, stale or malformed)',
    (s) => s.heartbeatPacketsDropped,
  );
  plainCounter('foundation_member_up_total', 'Times a member came up', (s) => s.memberEvents?.up);
  plainCounter('foundation_links_opened_total', 'Links opened (after a successful handshake)', (s) => s.linksOpened);
  plainCounter('foundation_links_closed_total', 'Links closed', (s) => s.linksClosed);

  // --- Discovery --------------------------------------------------------------------
  const topologies = () => attempt(() => node.discovery?.topologies()) ?? [];
  new Counter({
    name: 'foundation_discovery_connects_total',
    help: 'Connect attempts made for discovered nodes, by topology, strategy and result',
    labelNames: ['topology', 'strategy', 'result'],
    registers,
    collect() {
      setCounterValues(
        this,
        topologies().flatMap((t) => [
          [{ topology: t.topology, strategy: t.strategy, result: 'ok' }, t.connects.ok],
          [{ topology: t.topology, strategy: t.strategy, result: 'error' }, t.connects.failed],
        ]),
      );
    },
  });
  new Counter({
    name: 'foundation_discovery_disconnects_total',
    help: 'Nodes dropped because their topology no longer found them',
    labelNames: ['topology', 'strategy'],
    registers,
    collect() {
      setCounterValues(
        this,
        topologies().map((t) => [{ topology: t.topology, strategy: t.strategy }, t.disconnects]),
      );
    },
  });
  new Counter({
    name: 'foundation_discovery_lookup_errors_total',
    help: 'Failed discovery lookups (the members were kept)',
    labelNames: ['topology', 'strategy'],
    registers,
    collect() {
      setCounterValues(
        this,
        topologies().map((t) => [{ topology: t.topology, strategy: t.strategy }, t.lookupErrors]),
      );
    },
  });
  new Gauge({
    name: 'foundation_discovery_peers',
    help: 'Addresses each topology currently keeps connected',
    labelNames: ['topology', 'strategy'],
    registers,
    collect() {
      this.reset();
      for (const t of topologies()) this.set({ topology: t.topology, strategy: t.strategy }, t.peers);
    },
  });

  new Counter({
    name: 'foundation_member_down_total',
    help: 'Times a member went down, by reason',
    labelNames: ['reason'],
    registers,
    collect() {
      const { stats } = snapshot();
      if (!stats) return;
      const down: Record<string, number> = { ...(stats.memberEvents?.down ?? {}) };
      const reasons = [...DOWN_REASONS, ...Object.keys(down).filter((r) => !DOWN_REASONS.includes(r as DownReason))];
      setCounterValues(
        this,
        reasons.map((reason) => [{ reason }, down[reason] ?? 0]),
      );
    },
  });

  return register;
}
