/**
 * `Foundation.start()`: validates options, resolves the secret and the topologies, starts the
 * mesh, the discovery topologies and the admin surface, and returns the node handle.
 */
import { EventEmitter } from 'node:events';
import type { ClusterEvents, ClusterView, FoundationNode, LocalHealth, MeshMessaging, MessageHandler, MetricsRegistry } from './api.js';
import type { FoundationOptions } from './config/options.js';
import { resolveOptions } from './config/resolve.js';
import { Topology } from './discovery/topology.js';
import { ConfigError, ErrorCodes, FoundationError, MessagingError } from './errors.js';
import { newIncarnation } from './mesh/identity.js';
import { Mesh } from './mesh/mesh.js';
import type { Member } from './mesh/types.js';
import { Processes } from './processes/processes.js';
import { Channels, loadOtel } from './pubsub/channels.js';
import { MeshPubSubAdapter } from './pubsub/mesh-adapter.js';
import { PubSub } from './pubsub/pubsub.js';
import { RedisPubSubAdapter } from './pubsub/redis-adapter.js';
import { HybridClock } from './registry/hlc.js';
import { Registry } from './registry/registry.js';
import { ClusterConfig } from './services/cluster-config/cluster-config.js';
import { Events } from './services/events/events.js';
import { Presence } from './services/presence.js';
import { ServiceMesh } from './services/service-mesh/services.js';
import { type AdminServer, startAdminServer } from './surfaces/http.js';
import { createMetrics } from './surfaces/metrics.js';
import { defaultLogger, type Logger } from './util/logger.js';

class Cluster extends EventEmitter<ClusterEvents> implements ClusterView {
  readyAt?: number;
  /** Whether `node.config` fetched the cluster config from a peer (or has none to fetch from): readiness waits for it. */
  configSynced: () => boolean = () => true;
  constructor(
    private readonly mesh: Mesh,
    private readonly wantsPeers: () => boolean,
    private readonly startedAt: number,
  ) {
    super();
    const m = mesh.membership;
    // Hidden nodes (CLIs, tools) are connected but are not members: no member events for them.
    m.on('up', (member) => member.hidden || this.emit('up', member));
    m.on('down', (member, reason) => member.hidden || this.emit('down', member, reason));
    m.on('suspect', (member) => member.hidden || this.emit('suspect', member));
    m.on('alive', (member) => member.hidden || this.emit('alive', member));
    mesh.events.once('self-replaced', (e) => {
      this.nameTaken = true;
      this.emit('name-taken', { error: new FoundationError(ErrorCodes.NAME_TAKEN, e.message), via: e.via, byIncarnation: e.byIncarnation });
    });
  }
  /** Another live node took this node's name: not a member any more (see `ClusterEvents['name-taken']`). */
  nameTaken = false;
  get self() {
    return this.mesh.self;
  }
  members(opts?: { includeHidden?: boolean; includeDown?: boolean }): Member[] {
    return this.mesh.membership.list(opts);
  }
  member(name: string): Member | undefined {
    const m = this.mesh.membership.get(name);
    return m ? { ...m } : undefined;
  }
  isReady(): boolean {
    if (this.readyAt === undefined || !this.configSynced() || this.nameTaken) return false;
    // Joined (a member is up), or alone by design, or done waiting for peers that are not there.
    return this.mesh.membership.upNames().length > 0 || !this.wantsPeers() || Date.now() - this.startedAt > 5000;
  }
}

/**
 * The `Mesh` behind each node, for the composition root and Foundation's own layers: kept off the
 * public object (no `node.mesh.raw`), so user code cannot reach the mesh's internals at run time.
 */
const meshes = new WeakMap<FoundationNode, Mesh>();

/** The mesh of a node this module started (internal: not exported from the package). */
export function meshOf(node: FoundationNode): Mesh | undefined {
  return meshes.get(node);
}

class Node implements FoundationNode {
  httpAddress: string | undefined;
  metrics!: MetricsRegistry;
  /** Layer 5's events, on the channels facade and the mesh: set by `start` right after construction. */
  events!: Events;
  /** Layer 5's presence, replicated on the mesh like the registry: set by `start` right after construction. */
  presence!: Presence;
  /** Layer 4's workers, on the registry: set by `start` right after construction. */
  processes!: Processes;
  /** Layer 5's service mesh, on the registry: set by `start` right after construction. */
  services!: ServiceMesh;
  /** Layer 5's cluster-wide config (two-phase commit on `$config`): set by `start` right after construction. */
  config!: ClusterConfig;
  admin?: AdminServer;
  private stopped?: Promise<void>;
  readonly #mesh: Mesh;
  readonly channels: Channels;
  constructor(
    inner: Mesh,
    readonly mesh: MeshMessaging,
    readonly pubsub: PubSub,
    readonly registry: Registry,
    readonly cluster: Cluster,
    private readonly topologies: Topology[],
    private readonly degradedLoopLagMs: number,
    private readonly log: Logger,
  ) {
    this.#mesh = inner;
    this.channels = new Channels(pubsub);
    meshes.set(this, inner);
  }
  get id() {
    return this.#mesh.self;
  }
  readonly discovery = { topologies: () => this.topologies.map((t) => t.stats()) };
  health(): LocalHealth {
    const lag = this.#mesh.heartbeat.loopLag();
    return {
      loopLag: { p50Ms: lag.p50Ms, p99Ms: lag.p99Ms, maxMs: lag.maxMs },
      status: this.cluster.nameTaken ? 'name-taken' : lag.p99Ms > this.degradedLoopLagMs ? 'degraded' : 'ok',
    };
  }
  stop(): Promise<void> {
    this.stopped ??= (async () => {
      // The worker and the close timers are unref'd; hold the loop open until the leave is done,
      // or a process with nothing else to do would exit halfway through `await node.stop()`.
      const hold = setInterval(() => {}, 60_000);
      try {
        this.log.info({}, 'stopping: leaving the cluster');
        // Workers move off first (handoff), while the links they move over are still up.
        await this.processes.stop();
        await Promise.allSettled(this.topologies.map((t) => t.stop()));
        await this.pubsub.stop();
        this.services?.stop();
        this.config?.stop();
        this.events?.stop();
        this.presence?.stop();
        this.registry.stop();
        await this.#mesh.stop();
        await this.admin?.close();
      } finally {
        clearInterval(hold);
      }
    })();
    return this.stopped;
  }
}

function assertUserTopic(topic: string): void {
  if (typeof topic !== 'string' || topic.length === 0) throw new ConfigError('topic', 'expected a non-empty string');
  if (topic.startsWith('$')) throw new ConfigError('topic', `topics starting with "$" are reserved for Foundation (got "${topic}")`);
}

function messaging(mesh: Mesh): MeshMessaging {
  return {
    send: (node, topic, payload, opts) => {
      assertUserTopic(topic);
      return mesh.send(node, topic, payload, opts?.lane ?? 'events');
    },
    request: (node, topic, payload, opts) => {
      try {
        assertUserTopic(topic);
        const timeoutMs = opts?.timeoutMs ?? 5000;
        if (!Number.isFinite(timeoutMs) || timeoutMs <= 0)
          throw new ConfigError('timeoutMs', `must be a positive number of milliseconds, got ${String(timeoutMs)}`);
        return mesh.request(node, topic, payload, opts?.lane ?? 'events', timeoutMs);
      } catch (err) {
        return Promise.reject(err);
      }
    },
    handle: (topic: string, handler: MessageHandler) => {
      assertUserTopic(topic);
      return mesh.handle(topic, handler);
    },
    drained: (node, lane) => mesh.drained(node, lane ?? 'events'),
    stats: () => mesh.stats(),
  };
}

/**
 * Starts a node. Options not given fall back to `FOUNDATION_*` environment variables (see
 * docs/guides/configuration.md), so a twelve-factor deploy needs no code. Rejects with
 * `ConfigError` (naming the key) on bad options.
 */
async function start(options: FoundationOptions = {}): Promise<FoundationNode> {
  // The same resolver as `foundation config explain`: everything is checked before binding.
  const c = await resolveOptions(options, process.env, 'start');
  const incarnation = newIncarnation();
  const log = c.logger ? c.logger.child({ node: c.name }) : defaultLogger({ node: c.name });
  if (c.secret.warning) log.warn({ source: c.secret.source }, c.secret.warning);
  const mesh = await Mesh.start({
    name: c.name,
    host: c.host,
    port: c.port,
    advertiseHost: c.advertiseHost,
    clusterName: c.clusterName,
    secret: c.secret.secret,
    hidden: c.hidden,
    tls: c.tls,
    maxFrameBytes: c.maxFrameBytes,
    maxMessageBytes: c.maxMessageBytes,
    handshakeTimeoutMs: c.handshakeTimeoutMs,
    connectTimeoutMs: c.connectTimeoutMs,
    reconnect: c.reconnect,
    heartbeat: c.heartbeat,
    heartbeatPort: c.heartbeatPort,
    lanes: c.lanes,
    logger: log,
    incarnation,
  });
  const topologies = c.strategies.map(([tname, strategy]) => new Topology(tname, strategy, mesh, c.clusterName, log));
  const startedAt = Date.now();
  const cluster = new Cluster(mesh, () => topologies.some((t) => t.stats().peers > 0), startedAt);
  // Layer 3 on the mesh's internal interface; it sees members already up through watchMembers.
  const adapter = c.pubsub.adapter === 'redis' ? new RedisPubSubAdapter(c.clusterName, c.pubsub.redis, log) : new MeshPubSubAdapter(mesh);
  const pubsub = new PubSub(c.name, incarnation, adapter, log);
  // Layer 4's registry, on the same interface.
  // One hybrid logical clock per node: registry stamps and event stamps order against each other.
  const clock = new HybridClock();
  const registry = new Registry(mesh, log, clock);
  const node = new Node(mesh, messaging(mesh), pubsub, registry, cluster, topologies, c.degradedLoopLagMs, log);
  // Events on the `events` channel (pubsub) and `$events` queries; presence on `$presence`, as the registry.
  node.events = new Events(mesh, node.channels, log, clock);
  node.presence = new Presence(mesh, log);
  // Workers placed over the registry; singletons wait for the node to have joined (isReady).
  node.processes = new Processes(mesh, registry, log, () => cluster.isReady());
  // Service discovery over the registry; calls on the system topic $svc.call.
  node.services = new ServiceMesh(mesh, registry, log);
  // Cluster-wide config on `$config`; a node is ready once it fetched the config from a peer.
  node.config = new ClusterConfig(mesh, log);
  cluster.configSynced = () => node.config.isSynced();
  node.metrics = createMetrics(node);
  try {
    await pubsub.start();
    registry.start();
    node.events.start();
    node.presence.start();
    node.services.start();
    node.config.start();
    // After the registry: on a member's up, its registry map goes out before its process table (same lane).
    node.processes.start();
    await loadOtel();
    for (const t of topologies) await t.start();
    if (c.http) {
      node.admin = await startAdminServer(node, { ...c.http, logger: log });
      node.httpAddress = node.admin.address;
    }
  } catch (err) {
    await node.stop();
    throw err;
  }
  cluster.readyAt = Date.now();
  log.info({ address: mesh.self.address, incarnation, http: node.httpAddress, mode: c.mode, topologies: Object.keys(c.topologies) }, 'node started');
  return node;
}

/** Foundation's entry point. */
export const Foundation = { start } as const;

export { ErrorCodes, MessagingError };
