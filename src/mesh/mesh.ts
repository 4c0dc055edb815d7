/**
 * The mesh: authenticated links between nodes, membership, and node-to-node messaging. It is to
 * Foundation what Distributed Erlang is to the BEAM. This class only composes the parts, each in
 * its own file:
 *
 * - connector.ts: accepting and dialing links, handshakes, the dialer, the tie-break;
 * - peers.ts / peer.ts: one state machine per connected peer (up, replaced, superseded, down);
 * - transitive-join.ts: members learnt through members;
 * - dispatch.ts / requests.ts: handlers, system topics, loopback, request/response;
 * - interface.ts: the internal interface Foundation's layers build on (implemented here).
 */
import { EventEmitter } from 'node:events';
import { createServer as createTcpServer, type Server, type Socket } from 'node:net';
import { networkInterfaces } from 'node:os';
import { createServer as createTlsServer } from 'node:tls';
import { ErrorCodes, FoundationError, MessagingError } from '../errors.js';
import type { Logger } from '../util/logger.js';
import { RateLimitedLog } from '../util/logger.js';
import { MAX_HANDSHAKES } from './admission.js';
import { BodyPool } from './body-pool.js';
import { encode } from './codec.js';
import { Connector, type ConnectResult } from './connector.js';
import type { DialAttempt } from './dialer.js';
import { Dispatcher, type MessageHandler, type SystemMessageHandler } from './dispatch.js';
import type { HelloInfo } from './handshake.js';
import { HeartbeatService } from './heartbeat.js';
import { formatAddress } from './identity.js';
import type { InternalMesh, MembersWatch, SendManyResult } from './interface.js';
import type { Link } from './link.js';
import { Membership } from './membership.js';
import type { MeshOptions } from './mesh-options.js';
import { GatherPayload, MessageFlags, topicBytes } from './message.js';
import { Peers, TOPIC_NAME_TAKEN } from './peers.js';
import { Requests } from './requests.js';
import { TransitiveJoin } from './transitive-join.js';
import {
  type DownReason,
  LANES,
  type LaneCounters,
  type LaneName,
  type LinkReplacedEvent,
  type MembershipChange,
  type MeshEvents,
  type MeshStats,
  type NodeIdentity,
  type SelfReplacedEvent,
} from './types.js';

export type { ConnectResult } from './connector.js';
export type { MessageHandler } from './dispatch.js';
export type { MeshOptions, MeshTlsOptions } from './mesh-options.js';

const LANE_INDEX: Record<LaneName, number> = { control: 0, events: 1, telemetry: 2, bulk: 3 };

export class Mesh implements InternalMesh {
  readonly self: NodeIdentity;
  readonly membership: Membership;
  readonly events = new EventEmitter<MeshEvents>();
  private readonly log: Logger;
  private readonly requests = new Requests();
  private readonly dispatcher: Dispatcher;
  private readonly connector: Connector;
  /** Reused bodies of large received messages, shared by every link (see body-pool.ts). */
  private readonly bodyPool: BodyPool;
  private readonly peers: Peers;
  private readonly join: TransitiveJoin;
  private stopping = false;
  private nameTaken?: SelfReplacedEvent;
  private readonly counters = {
    handshakeFailures: {} as Record<string, number>,
    up: 0,
    down: {} as Record<DownReason, number>,
  };

  private constructor(
    private readonly opts: MeshOptions,
    private readonly server: Server,
    readonly heartbeat: HeartbeatService,
    port: number,
  ) {
    const advertise = opts.advertiseHost ?? advertisedHost(opts.host);
    this.self = { name: opts.name, address: formatAddress(advertise, port), incarnation: opts.incarnation };
    this.log = opts.logger;
    const warnOnce = new RateLimitedLog(this.log);
    this.membership = new Membership(this.self);
    this.membership.on('up', () => this.counters.up++);
    this.membership.on('down', (_m, reason) => {
      this.counters.down[reason] = (this.counters.down[reason] ?? 0) + 1;
    });
    this.dispatcher = new Dispatcher(this.self, this.requests, this.log, warnOnce);
    // Two of the largest messages: one being received while the layer above holds the previous one.
    this.bodyPool = new BodyPool({ maxPooledBytes: 2 * opts.maxMessageBytes });
    this.connector = new Connector(
      this.self,
      { ...opts, bodyPool: this.bodyPool },
      {
        helloInfo: () => this.helloInfo(),
        peer: (name) => this.peers.get(name),
        peerAt: (address) => this.peers.at(address),
        admitted: (link, hs, dialed) => this.peers.admitted(link, hs, dialed),
        nameTaken: (via, message) => this.onNameTaken(via, message),
        countHandshakeFailure: (reason) => {
          this.counters.handshakeFailures[reason] = (this.counters.handshakeFailures[reason] ?? 0) + 1;
        },
      },
      this.log,
      warnOnce,
    );
    this.peers = new Peers(this.self, this.membership, heartbeat, this.connector.dialer, this.dispatcher, this.requests, this.events, this.log, warnOnce, {
      linked: (peer) => this.join.linked(peer),
      gone: (info, reason) => {
        if (reason === 'heartbeat-timeout' || reason === 'connection-closed') this.join.rejoin(info);
      },
      dialInFlightTo: (name) => this.connector.dialInFlightTo(name),
      isStopping: () => this.stopping,
    });
    this.join = new TransitiveJoin({
      self: this.self,
      hidden: opts.hidden,
      handleSystem: (topic, handler) => this.handleSystem(topic, handler),
      send: (node, topic, payload, lane) => this.send(node, topic, payload, lane),
      peer: (name) => this.peers.get(name),
      peers: () => this.peers.all(),
      connect: (address) => this.connector.connect(address),
      dialer: this.connector.dialer,
      mutualDialDelay: () => this.connector.mutualDialDelay(),
      isStopping: () => this.stopping,
      log: this.log,
    });
    this.handleSystem(TOPIC_NAME_TAKEN, (payload, ctx) => {
      const p = payload as { name?: unknown; incarnation?: unknown } | undefined;
      if (p?.name !== this.self.name || typeof p.incarnation !== 'number' || p.incarnation <= this.self.incarnation) return;
      this.onNameTaken(ctx.from, `node "${ctx.from}" is connected to a newer incarnation (${p.incarnation}) of this node's name`, p.incarnation);
    });
    this.connector.listen(server);
    heartbeat.on('suspect', (e: { peer: string; phi: number }) => this.membership.markSuspect(e.peer, e.phi));
    heartbeat.on('alive', (e: { peer: string }) => this.membership.markAlive(e.peer));
    heartbeat.on('down', (e: { peer: string; phi: number; silentMs: number }) => {
      if (this.peers.get(e.peer)?.state !== 'up') return;
      this.log.warn({ peer: e.peer, silentMs: e.silentMs, phi: e.phi }, 'no heartbeat from peer: marking it down');
      this.peers.drop(e.peer, 'heartbeat-timeout');
    });
    heartbeat.on('stats', () => {
      for (const [peer, s] of heartbeat.stats()) this.membership.updateStats(peer, s.rttMs, s.loopLagMs);
    });
  }

  /** Binds the mesh port and the heartbeat worker. */
  static async start(opts: MeshOptions): Promise<Mesh> {
    const server = opts.tls
      ? createTlsServer({
          key: opts.tls.key,
          cert: opts.tls.cert,
          ca: opts.tls.ca,
          requestCert: opts.tls.requestCert ?? false,
          rejectUnauthorized: opts.tls.rejectUnauthorized ?? true,
          // A TLS handshake holds a handshake slot (admission.ts): bound it like ours (default 120 s).
          handshakeTimeout: opts.handshakeTimeoutMs,
        })
      : createTcpServer();
    // Peers may connect the moment the port is bound, before the mesh below exists (the heartbeat
    // worker takes a while to start): hold those sockets and hand them over, never drop them.
    // (At most MAX_HANDSHAKES of them, like handshakes in progress later: see admission.ts.)
    const early: Socket[] = [];
    const hold = (socket: Socket) => (early.length < MAX_HANDSHAKES ? early.push(socket) : socket.destroy());
    server.on(opts.tls ? 'secureConnection' : 'connection', hold);
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen({ host: opts.host, port: opts.port }, () => {
        server.off('error', reject);
        resolve();
      });
    });
    const port = (server.address() as { port: number }).port;
    let heartbeat: HeartbeatService;
    try {
      heartbeat = await startHeartbeat(opts, port);
    } catch (err) {
      server.close();
      throw err;
    }
    const mesh = new Mesh(opts, server, heartbeat, port);
    server.off(opts.tls ? 'secureConnection' : 'connection', hold);
    for (const socket of early) if (opts.tls || mesh.connector.admission.accept(socket)) mesh.connector.onInbound(socket);
    return mesh;
  }

  private helloInfo(): HelloInfo {
    return { ...this.self, cluster: this.opts.clusterName, hidden: this.opts.hidden, heartbeatPort: this.heartbeat.port };
  }

  /** Another live node holds our name (a newer incarnation): say so once, stop dialing. */
  private onNameTaken(via: string, message: string, byIncarnation?: number): void {
    if (this.nameTaken || this.stopping) return;
    const line = `another live node took this node's name "${this.self.name}" (${message}); this node (incarnation ${this.self.incarnation}) is no longer a member and stops dialing: node names must be unique in a cluster`;
    this.nameTaken = { via, byIncarnation, message: line };
    this.log.error({ via, byIncarnation, code: ErrorCodes.NAME_TAKEN }, line);
    this.connector.refuseDials(new MessagingError(ErrorCodes.NAME_TAKEN, line));
    this.events.emit('self-replaced', this.nameTaken);
  }

  // ---- connections (for discovery) ----------------------------------------------------------

  /** Keeps `address` connected on behalf of `owner` (a topology). See `Connector.want`. */
  want(address: string, owner: string, options: { mutual?: boolean } = {}): void {
    if (this.stopping) return;
    this.connector.want(address, owner, options);
  }

  /** Stops keeping `address` connected for `owner`; disconnects it when no owner is left and `disconnect` is set. */
  release(address: string, owner: string, disconnect = false): void {
    this.connector.dialer.release(address, owner);
    if (disconnect && !this.connector.dialer.isWanted(address)) {
      const peer = this.peers.at(address);
      if (peer) this.peers.drop(peer.name, 'disconnected');
    }
  }

  /** One connect attempt to `address`. Resolves `{ok:true, already:true}` when a link to that address exists. */
  connect(address: string): Promise<ConnectResult> {
    return this.connector.connect(address);
  }

  /** Subscribes to every dial attempt the mesh makes for wanted addresses (telemetry). */
  onDialAttempt(listener: (a: DialAttempt) => void): () => void {
    return this.connector.onDialAttempt(listener);
  }

  /** Names of peers with a link. */
  connectedPeers(): string[] {
    return this.peers.names();
  }

  // ---- messaging -----------------------------------------------------------------------------

  /** Registers the handler of a user topic (not starting with `$`). */
  handle(topic: string, handler: MessageHandler): () => void {
    return this.dispatcher.handle(topic, handler);
  }

  onLinkReplaced(listener: (event: LinkReplacedEvent) => void): () => void {
    this.events.on('link-replaced', listener);
    return () => this.events.off('link-replaced', listener);
  }

  handleSystem(topic: string, handler: SystemMessageHandler): () => void {
    return this.dispatcher.handleSystem(topic, handler);
  }

  /** The link to `node`; undefined for this node itself (loopback). */
  private linkTo(node: string): Link | undefined {
    if (this.stopping) throw new MessagingError(ErrorCodes.NODE_STOPPED, 'node is stopped');
    const peer = this.peers.get(node);
    if (peer !== undefined) return peer.link;
    if (node === this.self.name) return undefined;
    throw new MessagingError(ErrorCodes.NODE_UNREACHABLE, `node "${node}" is not connected`);
  }

  /** Sends one message. Returns false when the lane is over its high-water mark. */
  send(node: string, topic: string, payload: unknown, lane: LaneName = 'events'): boolean {
    const link = this.linkTo(node);
    const laneIdx = laneIndex(lane);
    const raw = payload instanceof Uint8Array || payload instanceof GatherPayload;
    const body = raw ? payload : encode(payload);
    if (link === undefined) return this.loopback(laneIdx, raw ? MessageFlags.RAW : 0, 0, topic, body);
    return link.send(laneIdx, raw ? MessageFlags.RAW : 0, 0, topic, body);
  }

  private loopback(lane: number, flags: number, corrId: number, topic: string, body: Uint8Array | GatherPayload): boolean {
    topicBytes(topic); // the same topic check as a link's
    this.dispatcher.loopback(lane, flags, corrId, topic, body instanceof GatherPayload ? body.concat() : body);
    return true;
  }

  sendMany(nodes: Iterable<string>, topic: string, payload: unknown, lane: LaneName = 'events'): SendManyResult {
    const result: SendManyResult = { sent: 0, full: [], failed: [] };
    const laneIdx = laneIndex(lane);
    const raw = payload instanceof Uint8Array || payload instanceof GatherPayload;
    const flags = raw ? MessageFlags.RAW : 0;
    // Encoded once; every link keeps a reference to the same bytes (nobody writes to them).
    const body = raw ? payload : encode(payload);
    for (const node of nodes) {
      try {
        const link = this.linkTo(node);
        const below = link === undefined ? this.loopback(laneIdx, flags, 0, topic, body) : link.send(laneIdx, flags, 0, topic, body);
        result.sent++;
        if (!below) result.full.push(node);
      } catch (err) {
        result.failed.push({ node, error: err as Error });
      }
    }
    return result;
  }

  request<T>(node: string, topic: string, payload: unknown, lane: LaneName = 'events', timeoutMs = 5000): Promise<T> {
    let link: Link | undefined;
    let body: Uint8Array;
    let laneIdx: number;
    const raw = payload instanceof Uint8Array;
    try {
      link = this.linkTo(node);
      laneIdx = laneIndex(lane);
      body = raw ? payload : encode(payload);
    } catch (err) {
      return Promise.reject(err);
    }
    const flags = MessageFlags.REQUEST | (raw ? MessageFlags.RAW : 0);
    return this.requests.start<T>(node, topic, timeoutMs, (corrId) => {
      if (link === undefined) this.loopback(laneIdx, flags, corrId, topic, body);
      else link.send(laneIdx, flags, corrId, topic, body);
    });
  }

  /** Resolves when the lane to `node` is under its high-water mark; rejects if the peer goes down first. */
  drained(node: string, lane: LaneName = 'events'): Promise<void> {
    let link: Link | undefined;
    let idx: number;
    try {
      link = this.linkTo(node);
      idx = laneIndex(lane);
    } catch (err) {
      return Promise.reject(err);
    }
    if (link === undefined || !link.outbox.isOverHighWaterMark(idx)) return Promise.resolve();
    return (this.peers.get(node) as NonNullable<ReturnType<Peers['get']>>).waitDrain(idx);
  }

  watchMembers(listener: (change: MembershipChange) => void, opts: { includeHidden?: boolean } = {}): MembersWatch {
    const all = opts.includeHidden === true;
    const members = this.membership.list({ includeHidden: all });
    const m = this.membership;
    const up = (member: MembershipChange['member']) => (all || !member.hidden) && listener({ type: 'up', member });
    const down = (member: MembershipChange['member'], reason: DownReason) => (all || !member.hidden) && listener({ type: 'down', member, reason });
    const suspect = (member: MembershipChange['member']) => (all || !member.hidden) && listener({ type: 'suspect', member });
    const alive = (member: MembershipChange['member']) => (all || !member.hidden) && listener({ type: 'alive', member });
    m.on('up', up);
    m.on('down', down);
    m.on('suspect', suspect);
    m.on('alive', alive);
    return {
      members,
      stop: () => {
        m.off('up', up);
        m.off('down', down);
        m.off('suspect', suspect);
        m.off('alive', alive);
      },
    };
  }

  // ---- stats & lifecycle -------------------------------------------------------------------

  stats(): MeshStats {
    const lanes = {} as Record<LaneName, LaneCounters>;
    LANES.forEach((name, i) => {
      const closed = this.peers.closedLanes[i];
      const acc: LaneCounters = {
        messagesSent: closed?.messagesSent ?? 0,
        bytesSent: closed?.bytesSent ?? 0,
        messagesReceived: this.dispatcher.received[i]?.messages ?? 0,
        bytesReceived: this.dispatcher.received[i]?.bytes ?? 0,
        dropped: closed?.dropped ?? 0,
        lost: closed?.lost ?? 0,
        possiblyLost: closed?.possiblyLost ?? 0,
        queuedBytes: 0,
      };
      for (const peer of this.peers.all()) {
        const c = peer.link.outbox.counters()[i];
        if (!c) continue;
        acc.messagesSent += c.messagesSent;
        acc.bytesSent += c.bytesSent;
        acc.dropped += c.dropped;
        acc.queuedBytes += peer.link.outbox.queuedBytes(i);
      }
      lanes[name] = acc;
    });
    const pc = this.peers.counters;
    return {
      lanes,
      handshakeFailures: { ...this.counters.handshakeFailures },
      framesRejected: pc.framesRejected,
      heartbeatPacketsDropped: this.heartbeat.droppedPackets(),
      heartbeatPacketsDroppedByReason: this.heartbeat.droppedPacketsByReason(),
      memberEvents: { up: this.counters.up, down: { ...this.counters.down } },
      linksOpened: pc.linksOpened,
      linksClosed: pc.linksClosed,
      linksReplaced: pc.linksReplaced,
      largeBodies: { ...this.bodyPool.stats, pooledBytes: this.bodyPool.pooledBytes },
    };
  }

  /** Graceful leave: tell every peer, flush, close. */
  async stop(): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    this.connector.stop();
    await this.peers.leaveAll();
    for (const socket of this.connector.sockets) socket.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
    await this.heartbeat.stop();
    this.bodyPool.clear();
  }
}

function laneIndex(lane: LaneName): number {
  const idx = LANE_INDEX[lane];
  if (idx === undefined) throw new FoundationError(ErrorCodes.CONFIG_INVALID, `unknown lane "${String(lane)}"; allowed: ${LANES.join(', ')}`);
  return idx;
}

/** For a wildcard bind, advertise the first non-internal IPv4 address (or loopback if there is none). */
function advertisedHost(host: string): string {
  if (host !== '0.0.0.0' && host !== '::') return host;
  for (const list of Object.values(networkInterfaces())) {
    for (const a of list ?? []) if (a.family === 'IPv4' && !a.internal) return a.address;
  }
  return '127.0.0.1';
}

async function startHeartbeat(opts: MeshOptions, meshPort: number): Promise<HeartbeatService> {
  const host = opts.host;
  const preferred = opts.heartbeatPort ?? meshPort;
  try {
    return await HeartbeatService.start({ host, port: preferred, config: opts.heartbeat, logger: opts.logger });
  } catch (err) {
    if (opts.heartbeatPort !== undefined || (err as NodeJS.ErrnoException).code !== 'EADDRINUSE') throw err;
    // The mesh port number is taken on UDP by someone else: any free port will do, since the
    // handshake tells peers which port to use.
    return HeartbeatService.start({ host, port: 0, config: opts.heartbeat, logger: opts.logger });
  }
}
