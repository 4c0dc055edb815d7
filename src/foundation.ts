/**
 * `Foundation.start()`: validates options, resolves the secret and the topologies, starts the
 * mesh, the discovery topologies and the admin surface, and returns the node handle.
 */
import { EventEmitter } from 'node:events';
import type { Registry } from 'prom-client';
import type { ClusterEvents, ClusterView, FoundationNode, LocalHealth, MeshMessaging, MessageHandler } from './api.js';
import { mergeEnv, optionsFromEnv } from './config/env.js';
import { parseOptions } from './config/options.js';
import { mdnsAvailable } from './discovery/mdns.js';
import type { ClusterOption } from './discovery/modes.js';
import { resolveTopologies } from './discovery/modes.js';
import { createStrategy, type TopologySpec } from './discovery/registry.js';
import { Topology } from './discovery/topology.js';
import { ConfigError, ErrorCodes, MessagingError } from './errors.js';
import { DEFAULT_BACKOFF } from './mesh/dialer.js';
import { type HeartbeatConfig, resolveHeartbeatConfig } from './mesh/heartbeat-protocol.js';
import { defaultNodeName, newIncarnation } from './mesh/identity.js';
import { Outbox, type OutboxOptions } from './mesh/lanes.js';
import { Mesh, type MeshTlsOptions } from './mesh/mesh.js';
import { resolveSecret } from './mesh/secret.js';
import type { LaneName, Member } from './mesh/types.js';
import { type AdminServer, startAdminServer } from './surfaces/http.js';
import { createMetrics } from './surfaces/metrics.js';
import { defaultLogger, type Logger } from './util/logger.js';

/** Failure detector tuning. The defaults detect a silent peer in about 2 s. */
export interface FailureDetectorOptions {
  /** Heartbeat period in ms. Default 250. */
  heartbeatIntervalMs?: number;
  /** Phi at which a silent member is declared down. Default 8. */
  phiThreshold?: number;
  /** Phi at which a member is marked `suspect`. Default 3. */
  suspectPhi?: number;
  /** Pause (ms) tolerated on top of the usual heartbeat spacing before phi climbs. Default 1000. */
  acceptablePauseMs?: number;
  /** Floor of the inter-arrival standard deviation (ms), so a very regular history does not make phi hair-triggered. Default 100. */
  minStdDevMs?: number;
  /**
   * A node whose main thread has been blocked longer than this (ms) stops heartbeating, so peers
   * declare it down: a node stuck that long is as good as dead. Shorter stalls never cause a
   * node-down; they show up as loop lag. Default 10000.
   */
  maxMainStallMs?: number;
}

/** Per-lane queue policy. */
export interface LaneOptions {
  /** Queued bytes above which `send` returns false. */
  highWaterMark?: number;
  /** Queued bytes above which a back-pressure lane throws `LaneOverflowError` and a drop lane drops its oldest messages. */
  hardLimit?: number;
  /** `backpressure` (never drop) or `drop-oldest` (bounded, counted drops). */
  overflow?: 'backpressure' | 'drop-oldest';
}

/** Options of `Foundation.start`. Every key is optional. */
export interface FoundationOptions {
  /** Cluster-unique node name. Default `<hostname>-<pid>`. */
  name?: string;
  /** Address to listen on for mesh links. Default `127.0.0.1`; use `0.0.0.0` to accept links from other hosts. */
  host?: string;
  /** Mesh TCP port; the heartbeat worker uses the same UDP port when free. Default 0 (any free port). */
  port?: number;
  /** Host peers should dial, when it differs from `host` (NAT, wildcard binds). Default: `host`, or the first non-internal IPv4 for a wildcard bind. */
  advertiseHost?: string;
  /** Nodes only link with nodes of the same cluster name. Default `foundation`. */
  clusterName?: string;
  /** Shared secret that authenticates every link (HMAC challenge-response; never sent). Default: FOUNDATION_SECRET, else the development cookie file. */
  secret?: string | Uint8Array;
  /** Run without authentication. Required to start without a secret when NODE_ENV=production. Default false. */
  insecure?: boolean;
  /** Development cookie file. Default `~/.foundation-cookie` (or FOUNDATION_COOKIE_FILE). */
  cookieFile?: string;
  /** Connect without joining: for CLIs and tools. Hidden nodes are not gossiped and not listed as members. Default false. */
  hidden?: boolean;
  /** TLS (and mTLS with `requestCert`) for mesh links. Default: plain TCP (links are still authenticated). */
  tls?: MeshTlsOptions;
  /** Mortal mode (`true`) or an Apprentice shorthand such as `{ strategy: 'static', hosts: [...] }`. */
  cluster?: ClusterOption;
  /** Wizard mode: named topologies, passed through untouched. Several run at once. */
  topologies?: Record<string, TopologySpec>;
  /** Failure detector tuning. */
  failureDetector?: FailureDetectorOptions;
  /** UDP port of the heartbeat worker. Default: the mesh port (or any free port if taken). */
  heartbeatPort?: number;
  /** HTTP admin server (`/health`, `/ready`, `/metrics`, `/cluster`). Default: disabled. */
  http?: false | { host?: string; port: number };
  /** Largest frame accepted on a link, in bytes. Default 1 MiB. Must exceed `fragmentBytes`. */
  maxFrameBytes?: number;
  /** Largest reassembled message, in bytes. Default 64 MiB. */
  maxMessageBytes?: number;
  /** Fragment size for large messages, in bytes. Default 64 KiB: the most a control message waits behind bulk data. */
  fragmentBytes?: number;
  /**
   * Flow-control window of a link, in bytes: how much events/telemetry/bulk data may be in flight
   * (written but not yet acknowledged by the receiver). It bounds what a control message waits
   * behind, and caps one link's throughput at about window ÷ round-trip time: raise it on
   * high-latency links. Default 512 KiB; use the same value on every node.
   */
  windowBytes?: number;
  /** Lane queue policies, and `mode: 'fifo'` (one queue, no priority; for comparison only). */
  lanes?: Partial<Record<LaneName, LaneOptions>> & { mode?: 'priority' | 'fifo' };
  /** Handshake deadline in ms. Default 5000. */
  handshakeTimeoutMs?: number;
  /** TCP connect deadline in ms. Default 1500. */
  connectTimeoutMs?: number;
  /** Reconnect backoff: exponential from `baseMs` to `maxMs`, with jitter. Default 100 → 1000. */
  reconnect?: { baseMs: number; maxMs: number };
  /** Loop-lag p99 (ms) above which `/health` reports `degraded`. Default 200. */
  degradedLoopLagMs?: number;
  /** A pino (or pino-compatible) logger. Default: pino to stderr. */
  logger?: Logger;
}

/** The message of a ConfigError without its "Invalid configuration at" prefix, to re-key it. */
function bareMessage(err: ConfigError): string {
  return err.message.replace(/^Invalid configuration at "[^"]*": /, '');
}

/** Maps the heartbeat worker's config keys back to the `failureDetector` option names users write. */
function failureDetectorKey(key: string): string {
  const names: Record<string, string> = {
    'heartbeat.intervalMs': 'failureDetector.heartbeatIntervalMs',
    'heartbeat.detector.acceptablePauseMs': 'failureDetector.acceptablePauseMs',
    'heartbeat.detector.minStdDevMs': 'failureDetector.minStdDevMs',
  };
  return names[key] ?? key.replace(/^heartbeat\.(detector\.)?/, 'failureDetector.');
}

class Cluster extends EventEmitter<ClusterEvents> implements ClusterView {
  readyAt?: number;
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
  }
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
    if (this.readyAt === undefined) return false;
    // Joined (a member is up), or alone by design, or done waiting for peers that are not there.
    return this.mesh.membership.upNames().length > 0 || !this.wantsPeers() || Date.now() - this.startedAt > 5000;
  }
}

class Node implements FoundationNode {
  httpAddress: string | undefined;
  metrics!: Registry;
  admin?: AdminServer;
  private stopped?: Promise<void>;
  constructor(
    readonly mesh: MeshMessaging & { raw: Mesh },
    readonly cluster: Cluster,
    private readonly topologies: Topology[],
    private readonly degradedLoopLagMs: number,
    private readonly log: Logger,
  ) {}
  get id() {
    return this.mesh.raw.self;
  }
  readonly discovery = { topologies: () => this.topologies.map((t) => t.stats()) };
  health(): LocalHealth {
    const lag = this.mesh.raw.heartbeat.loopLag();
    return {
      loopLag: { p50Ms: lag.p50Ms, p99Ms: lag.p99Ms, maxMs: lag.maxMs },
      status: lag.p99Ms > this.degradedLoopLagMs ? 'degraded' : 'ok',
    };
  }
  stop(): Promise<void> {
    this.stopped ??= (async () => {
      // The worker and the close timers are unref'd; hold the loop open until the leave is done,
      // or a process with nothing else to do would exit halfway through `await node.stop()`.
      const hold = setInterval(() => {}, 60_000);
      try {
        this.log.info({}, 'stopping: leaving the cluster');
        await Promise.allSettled(this.topologies.map((t) => t.stop()));
        await this.mesh.raw.stop();
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

function messaging(mesh: Mesh): MeshMessaging & { raw: Mesh } {
  return {
    raw: mesh,
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
  const o = parseOptions(mergeEnv(options, optionsFromEnv(process.env)));
  const name = o.name ?? defaultNodeName();
  const incarnation = newIncarnation();
  const baseLogger = (o.logger as Logger | undefined) ?? defaultLogger({ node: name });
  const log = o.logger ? baseLogger.child({ node: name }) : baseLogger;
  const secret = resolveSecret({ secret: o.secret, insecure: o.insecure, cookieFile: o.cookieFile });
  if (secret.warning) log.warn({ source: secret.source }, secret.warning);
  const fragmentBytes = o.fragmentBytes ?? 64 * 1024;
  const maxFrameBytes = o.maxFrameBytes ?? 1024 * 1024;
  if (maxFrameBytes < fragmentBytes + 1024) throw new ConfigError('maxFrameBytes', `must exceed fragmentBytes (${fragmentBytes}) by at least 1024`);
  const fd = o.failureDetector ?? {};
  const heartbeat: HeartbeatConfig = {
    intervalMs: fd.heartbeatIntervalMs,
    phiThreshold: fd.phiThreshold,
    suspectPhi: fd.suspectPhi,
    detector: { acceptablePauseMs: fd.acceptablePauseMs, minStdDevMs: fd.minStdDevMs },
    maxMainStallMs: fd.maxMainStallMs,
    // Lets the worker reject this node's own packets reflected back at it.
    self: name,
  };
  try {
    resolveHeartbeatConfig(heartbeat);
  } catch (err) {
    if (err instanceof ConfigError) throw new ConfigError(failureDetectorKey(err.key), bareMessage(err));
    throw err;
  }
  const resolved = resolveTopologies(o.cluster as ClusterOption | undefined, o.topologies as Record<string, TopologySpec> | undefined, {
    port: o.port ?? 0,
    secret: secret.source === 'insecure' ? undefined : secret.secret,
    mdnsAvailable: o.cluster === true ? await mdnsAvailable() : false,
  });
  const specs = resolved.topologies;
  // Build every strategy before binding anything, so a bad topology fails fast.
  const strategies = Object.entries(specs).map(([tname, spec]) => [tname, createStrategy(tname, spec)] as const);
  const { mode: laneMode, ...lanePolicies } = o.lanes ?? {};
  const lanes: Partial<OutboxOptions> = { fragmentBytes, mode: laneMode ?? 'priority', lanes: lanePolicies };
  if (o.windowBytes !== undefined) lanes.windowBytes = o.windowBytes;
  try {
    // Links build their outboxes later, on a socket callback: check the lane policies now.
    new Outbox(lanes);
  } catch (err) {
    if (err instanceof ConfigError) throw new ConfigError(err.key === 'fragmentBytes' ? err.key : `lanes.${err.key}`, bareMessage(err));
    throw err;
  }
  const mesh = await Mesh.start({
    name,
    host: o.host ?? '127.0.0.1',
    port: o.port ?? 0,
    advertiseHost: o.advertiseHost,
    clusterName: o.clusterName ?? 'foundation',
    secret: secret.secret,
    hidden: o.hidden ?? false,
    tls: o.tls as MeshTlsOptions | undefined,
    maxFrameBytes,
    maxMessageBytes: o.maxMessageBytes ?? 64 * 1024 * 1024,
    handshakeTimeoutMs: o.handshakeTimeoutMs ?? 5000,
    connectTimeoutMs: o.connectTimeoutMs ?? 1500,
    reconnect: o.reconnect ?? DEFAULT_BACKOFF,
    heartbeat,
    heartbeatPort: o.heartbeatPort,
    lanes,
    logger: log,
    incarnation,
  });
  const topologies = strategies.map(([tname, strategy]) => new Topology(tname, strategy, mesh, o.clusterName ?? 'foundation', log));
  const startedAt = Date.now();
  const cluster = new Cluster(mesh, () => topologies.some((t) => t.stats().peers > 0), startedAt);
  const node = new Node(messaging(mesh), cluster, topologies, o.degradedLoopLagMs ?? 200, log);
  node.metrics = createMetrics(node);
  try {
    for (const t of topologies) await t.start();
    if (o.http) {
      node.admin = await startAdminServer(node, { host: o.http.host ?? '127.0.0.1', port: o.http.port, logger: log });
      node.httpAddress = node.admin.address;
    }
  } catch (err) {
    await node.stop();
    throw err;
  }
  cluster.readyAt = Date.now();
  log.info({ address: mesh.self.address, incarnation, http: node.httpAddress, mode: resolved.mode, topologies: Object.keys(specs) }, 'node started');
  return node;
}

/** Foundation's entry point. */
export const Foundation = { start } as const;

export { ErrorCodes, MessagingError };
