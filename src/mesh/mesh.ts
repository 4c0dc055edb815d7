/**
 * The mesh: a server accepting links, a dialer making them, the tie-break that leaves one link
 * per pair, transitive joins, the heartbeat worker's verdicts, and node-to-node messaging.
 * It is to Foundation what Distributed Erlang is to the BEAM.
 */
import { createServer as createTcpServer, type Server, type Socket, connect as tcpConnect } from 'node:net';
import { networkInterfaces } from 'node:os';
import { createServer as createTlsServer, type TLSSocket, connect as tlsConnect } from 'node:tls';
import type { LaneCounters, MeshStats } from '../api.js';
import { ErrorCodes, FoundationError, HandshakeError, MessagingError } from '../errors.js';
import type { Logger } from '../util/logger.js';
import { RateLimitedLog } from '../util/logger.js';
import { publish, TelemetryChannels } from '../util/telemetry.js';
import { decode, encode } from './codec.js';
import { type BackoffOptions, type DialAttempt, Dialer } from './dialer.js';
import { type AdmitDecision, acceptHandshake, type HandshakeResult, type HelloInfo, initiateHandshake } from './handshake.js';
import { HeartbeatService } from './heartbeat.js';
import type { HeartbeatConfig } from './heartbeat-protocol.js';
import { formatAddress, parseAddress } from './identity.js';
import type { OutboxOptions } from './lanes.js';
import { Link, type LinkCloseCause } from './link.js';
import { Membership } from './membership.js';
import { type InboundMessage, MessageFlags } from './message.js';
import { type DownReason, LANES, type LaneName, type NodeIdentity } from './types.js';

/** TLS for mesh links. With `requestCert`, both sides present certificates (mTLS). */
export interface MeshTlsOptions {
  /** PEM private key of this node. */
  key: string | Buffer;
  /** PEM certificate chain of this node. */
  cert: string | Buffer;
  /** PEM CA bundle that peers' certificates must chain to. */
  ca?: string | Buffer | Array<string | Buffer>;
  /** Require and verify a client certificate on inbound links (mutual TLS). Default false. */
  requestCert?: boolean;
  /** Reject peers whose certificate does not verify. Default true. */
  rejectUnauthorized?: boolean;
  /** Server name to verify in the peer's certificate, when node addresses are IPs the certificate does not list. */
  serverName?: string;
}

export interface MeshOptions {
  name: string;
  host: string;
  port: number;
  advertiseHost?: string;
  clusterName: string;
  secret: Buffer;
  hidden: boolean;
  tls?: MeshTlsOptions;
  maxFrameBytes: number;
  maxMessageBytes: number;
  handshakeTimeoutMs: number;
  connectTimeoutMs: number;
  reconnect: BackoffOptions;
  heartbeat: HeartbeatConfig;
  /** UDP port of the heartbeat worker; default: the mesh port, or any free port if that is taken. */
  heartbeatPort?: number;
  lanes: Partial<OutboxOptions>;
  logger: Logger;
  incarnation: number;
}

/** Result of one connect attempt. */
export type ConnectResult = { ok: true; peer: string; already: boolean } | { ok: false; error: Error };

interface Pending {
  resolve: (v: unknown) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
  peer: string;
}

interface LinkState {
  link: Link;
  hs: HandshakeResult;
  /** Addresses this link satisfies for the dialer. */
  addresses: Set<string>;
}

const LANE_INDEX: Record<LaneName, number> = { control: 0, events: 1, telemetry: 2, bulk: 3 };
const TOPIC_PEERS = '$mesh.peers';
/** Dialer owner for members redialed after they dropped (see `rejoin`). */
const REJOIN_OWNER = '$rejoin';
/** How long a dropped member is redialed when no topology asks for it. */
const REJOIN_WINDOW_MS = 60_000;
/**
 * Shortest wait of the larger address of a pair (found by mutual discovery, or told about each
 * other in a transitive join) for the smaller one's dial: many loopback or LAN handshakes long,
 * and short enough that a peer which did not find us yet (a slower poll) costs little. See
 * `Mesh.mutualDialDelay`.
 */
const MUTUAL_DIAL_DELAY_MS = 150;
/** Longest such wait, whatever the dials take. */
const MUTUAL_DIAL_DELAY_MAX_MS = 2000;
/** Weight of the newest dial in the running average of dial durations. */
const DIAL_AVERAGE_WEIGHT = 0.2;

type Handler = (payload: unknown, from: string, topic: string, lane: number) => unknown;

function emptyLaneCounters(): LaneCounters {
  return { messagesSent: 0, bytesSent: 0, messagesReceived: 0, bytesReceived: 0, dropped: 0, queuedBytes: 0 };
}

export class Mesh {
  readonly self: NodeIdentity;
  readonly membership: Membership;
  private readonly log: Logger;
  private readonly warnOnce: RateLimitedLog;
  private readonly links = new Map<string, LinkState>();
  /** Outbound handshakes in flight, by dialed address; `name` once step 2 told us. */
  private readonly outbound = new Map<Link, { address: string; name?: string }>();
  private readonly inflightDials = new Map<string, Promise<ConnectResult>>();
  /**
   * Inbound handshakes in progress, by the address the peer claims in its first HELLO
   * (unauthenticated: a hint only); `done` settles when the handshake ends. See `dialUnlessDialed`.
   */
  private readonly inboundClaims = new Map<Link, { address: string; done: Promise<void> }>();
  private readonly handlers = new Map<string, Handler>();
  private readonly pending = new Map<number, Pending>();
  private readonly dialer: Dialer;
  private nextCorr = 1;
  private readonly dialListeners = new Set<(a: DialAttempt) => void>();
  private readonly sockets = new Set<Socket>();
  private stopping = false;
  private readonly closedLanes = LANES.map(() => emptyLaneCounters());
  private readonly received = LANES.map(() => ({ messages: 0, bytes: 0 }));
  private readonly counters = {
    handshakeFailures: {} as Record<string, number>,
    framesRejected: 0,
    linksOpened: 0,
    linksClosed: 0,
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
    this.warnOnce = new RateLimitedLog(this.log);
    this.membership = new Membership(this.self);
    this.membership.on('up', () => this.counters.up++);
    this.membership.on('down', (_m, reason) => {
      this.counters.down[reason] = (this.counters.down[reason] ?? 0) + 1;
    });
    this.dialer = new Dialer(
      (address) => this.connect(address).then((r) => (r.ok ? { ok: true } : { ok: false, error: r.error })),
      opts.reconnect,
      (attempt) => {
        for (const l of this.dialListeners) l(attempt);
      },
    );
    if (opts.tls) {
      // A TLS server also emits 'connection' for the raw socket: only the decrypted one is a link.
      server.on('secureConnection', (socket: TLSSocket) => this.onInbound(socket));
      server.on('tlsClientError', (err: Error, socket: TLSSocket) => {
        this.counters.handshakeFailures.tls = (this.counters.handshakeFailures.tls ?? 0) + 1;
        const remote = socket.remoteAddress ?? (socket as { _parent?: Socket })._parent?.remoteAddress ?? 'unknown address';
        this.warnOnce.warn(`tls:${remote}:${err.message}`, { remote }, `TLS handshake from ${remote} failed: ${err.message}`);
      });
    } else {
      server.on('connection', (socket: Socket) => this.onInbound(socket));
    }
    heartbeat.on('suspect', (e: { peer: string; phi: number }) => this.membership.markSuspect(e.peer, e.phi));
    heartbeat.on('alive', (e: { peer: string }) => this.membership.markAlive(e.peer));
    heartbeat.on('down', (e: { peer: string; phi: number; silentMs: number }) => {
      const st = this.links.get(e.peer);
      if (!st) return;
      this.log.warn({ peer: e.peer, silentMs: e.silentMs, phi: e.phi }, 'no heartbeat from peer: marking it down');
      this.dropLink(e.peer, st, 'heartbeat-timeout');
    });
    heartbeat.on('stats', () => {
      for (const [peer, s] of heartbeat.stats()) this.membership.updateStats(peer, s.rttMs, s.loopLagMs);
    });
    this.handle(TOPIC_PEERS, (payload, from) => this.onPeers(payload, from));
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
        })
      : createTcpServer();
    // Peers may connect the moment the port is bound, before the mesh below exists (the heartbeat
    // worker takes a while to start): hold those sockets and hand them over, never drop them.
    const early: Socket[] = [];
    const hold = (socket: Socket) => early.push(socket);
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
    for (const socket of early) mesh.onInbound(socket);
    return mesh;
  }

  private helloInfo(): HelloInfo {
    return { ...this.self, cluster: this.opts.clusterName, hidden: this.opts.hidden, heartbeatPort: this.heartbeat.port };
  }

  // ---- links -------------------------------------------------------------------------------

  /**
   * Keeps `address` connected on behalf of `owner` (a topology), retrying with backoff. With
   * `mutual` (the owner's discovery is mutual, see `Strategy.mutual`), the peer is expected to
   * find this node too: the larger address of the pair lets the smaller one dial first and only
   * dials itself if no link from it appeared after `mutualDialDelay()`.
   */
  want(address: string, owner: string, options: { mutual?: boolean } = {}): void {
    if (this.stopping) return;
    const yieldFirst = options.mutual === true && this.self.address > address;
    // The peer may have dialed us before our own discovery found it: nothing to dial then.
    const linked = this.linkAt(address) !== undefined;
    this.dialer.want(address, owner, yieldFirst ? this.mutualDialDelay() : 0, linked);
  }

  /**
   * How long the larger address waits for the smaller one's dial: twice what our own recent
   * dials took (the peer's dial to us costs about the same), at least MUTUAL_DIAL_DELAY_MS and at
   * most MUTUAL_DIAL_DELAY_MAX_MS, plus up to 50% jitter. On a loaded host (a large cluster
   * forming on few cores) connects slow down, and so does the wait, instead of both ends dialing.
   */
  private mutualDialDelay(): number {
    const base = Math.min(MUTUAL_DIAL_DELAY_MAX_MS, Math.max(MUTUAL_DIAL_DELAY_MS, 2 * this.dialMsAverage));
    return base * (1 + Math.random() * 0.5);
  }

  /** Stops keeping `address` connected for `owner`; disconnects it when no owner is left and `disconnect` is set. */
  release(address: string, owner: string, disconnect = false): void {
    this.dialer.release(address, owner);
    if (disconnect && !this.dialer.isWanted(address)) {
      const found = this.linkAt(address);
      if (found) this.dropLink(found[0], found[1], 'disconnected');
    }
  }

  /** The link (and its peer's name) that reaches `address`: dialed there, or the peer's advertised address. */
  private linkAt(address: string): [string, LinkState] | undefined {
    for (const entry of this.links) {
      const st = entry[1];
      if (st.addresses.has(address) || st.hs.peer.address === address) return entry;
    }
    return undefined;
  }

  /** Subscribes to every dial attempt the mesh makes for wanted addresses (telemetry). */
  onDialAttempt(listener: (a: DialAttempt) => void): () => void {
    this.dialListeners.add(listener);
    return () => this.dialListeners.delete(listener);
  }

  /** Names of peers with a live link. */
  connectedPeers(): string[] {
    return [...this.links.keys()];
  }

  /** One connect attempt to `address`. Resolves `{ok:true, already:true}` when a link to that address exists. */
  connect(address: string): Promise<ConnectResult> {
    if (this.stopping) return Promise.resolve({ ok: false, error: new MessagingError(ErrorCodes.NODE_STOPPED, 'node is stopping') });
    if (address === this.self.address) return Promise.resolve({ ok: true, peer: this.self.name, already: true });
    const linked = this.linkAt(address);
    if (linked) return Promise.resolve({ ok: true, peer: linked[0], already: true });
    const existing = this.inflightDials.get(address);
    if (existing) return existing;
    const p = this.dialUnlessDialed(address).finally(() => this.inflightDials.delete(address));
    this.inflightDials.set(address, p);
    return p;
  }

  /**
   * Dials `address`, unless that node is dialing us right now: then its handshake gets up to
   * MUTUAL_DIAL_DELAY_MAX_MS to finish first (bounded: the claim is not authenticated, so a
   * stranger claiming the address can only delay the dial, never prevent it), and if its link
   * came up there is nothing left to do.
   */
  private async dialUnlessDialed(address: string): Promise<ConnectResult> {
    const inbound = this.inboundHandshakeFrom(address);
    if (inbound) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([inbound, new Promise<void>((resolve) => (timer = setTimeout(resolve, MUTUAL_DIAL_DELAY_MAX_MS)))]);
      clearTimeout(timer);
      const linked = this.linkAt(address);
      if (linked) return { ok: true, peer: linked[0], already: true };
      if (this.stopping) return { ok: false, error: new MessagingError(ErrorCodes.NODE_STOPPED, 'node is stopping') };
    }
    return this.dial(address);
  }

  private async dial(address: string): Promise<ConnectResult> {
    const started = performance.now();
    const target = parseAddress(address);
    if (!target) return { ok: false, error: new FoundationError(ErrorCodes.CONFIG_INVALID, `"${address}" is not a host:port address`) };
    let socket: Socket;
    try {
      socket = await this.openSocket(target.host, target.port);
    } catch (error) {
      return { ok: false, error: error as Error };
    }
    const link = this.newLink(socket, 'outbound');
    const entry: { address: string; name?: string } = { address };
    this.outbound.set(link, entry);
    try {
      const hs = await initiateHandshake(link.handshakeChannel(), this.helloInfo(), this.opts.secret, (peer) => {
        entry.name = peer.name;
      });
      if (this.stopping) throw new HandshakeError('shutting-down', 'node is stopping');
      this.promote(link, hs, address);
      this.dialMsAverage += DIAL_AVERAGE_WEIGHT * (performance.now() - started - this.dialMsAverage);
      return { ok: true, peer: hs.peer.name, already: false };
    } catch (error) {
      this.handshakeFailed(link, error as Error, address);
      return { ok: false, error: error as Error };
    } finally {
      this.outbound.delete(link);
    }
  }

  private openSocket(host: string, port: number): Promise<Socket> {
    return new Promise((resolve, reject) => {
      const tls = this.opts.tls;
      const socket: Socket = tls
        ? tlsConnect({
            host,
            port,
            key: tls.key,
            cert: tls.cert,
            ca: tls.ca,
            rejectUnauthorized: tls.rejectUnauthorized ?? true,
            servername: tls.serverName,
          })
        : tcpConnect({ host, port });
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new Error(`connect to ${formatAddress(host, port)} timed out after ${this.opts.connectTimeoutMs} ms`));
      }, this.opts.connectTimeoutMs);
      socket.once(tls ? 'secureConnect' : 'connect', () => {
        clearTimeout(timer);
        socket.removeAllListeners('error');
        resolve(socket);
      });
      socket.once('error', (err) => {
        clearTimeout(timer);
        socket.destroy();
        reject(err);
      });
    });
  }

  private newLink(socket: Socket, direction: 'inbound' | 'outbound'): Link {
    // Every socket is tracked, links or not (handshakes in flight, tie-break losers), so stop()
    // can close them all instead of waiting on server.close() for sockets it does not know.
    this.sockets.add(socket);
    socket.once('close', () => this.sockets.delete(socket));
    return new Link(socket, direction, {
      maxFrameBytes: this.opts.maxFrameBytes,
      maxMessageBytes: this.opts.maxMessageBytes,
      outbox: this.opts.lanes,
      handshakeTimeoutMs: this.opts.handshakeTimeoutMs,
    });
  }

  private onInbound(socket: Socket): void {
    if (this.stopping) {
      socket.destroy();
      return;
    }
    socket.on('error', () => {});
    const link = this.newLink(socket, 'inbound');
    let ended: () => void = () => {};
    const done = new Promise<void>((resolve) => (ended = resolve));
    const claim = (peer: HelloInfo) => this.inboundClaims.set(link, { address: peer.address, done });
    acceptHandshake(link.handshakeChannel(), this.helloInfo(), this.opts.secret, (peer) => this.admit(peer), claim)
      .then(
        (hs) => {
          if (this.stopping) {
            link.close('shutting-down');
            return;
          }
          this.promote(link, hs, undefined);
        },
        (error: Error) => this.handshakeFailed(link, error, undefined),
      )
      .finally(() => {
        this.inboundClaims.delete(link);
        ended();
      });
  }

  /** Settles when an inbound handshake from a node claiming `address` ends; undefined if none is in progress. */
  private inboundHandshakeFrom(address: string): Promise<void> | undefined {
    for (const c of this.inboundClaims.values()) if (c.address === address) return c.done;
    return undefined;
  }

  /**
   * Deterministic tie-break: of two links between the same pair of incarnations, the one opened
   * by the node with the smaller name survives. Both ends apply the same rule, so exactly one
   * link remains. A newer incarnation supersedes an older one; an older one is refused.
   */
  private admit(peer: HelloInfo): AdmitDecision {
    if (this.stopping) return { ok: false, reason: 'shutting-down', message: 'node is stopping' };
    const existing = this.links.get(peer.name);
    if (existing) {
      const inc = existing.hs.peer.incarnation;
      if (peer.incarnation < inc) {
        return { ok: false, reason: 'stale-incarnation', message: `incarnation ${peer.incarnation} is older than the connected ${inc}` };
      }
      if (peer.incarnation > inc) return { ok: true };
      // Same incarnation. A peer re-dialing a link it already has means it saw that link die.
      if (existing.hs.initiator === peer.name) return { ok: true };
      if (peer.name < this.self.name) return { ok: true };
      return { ok: false, reason: 'duplicate-link', message: 'a link between these nodes already exists' };
    }
    for (const entry of this.outbound.values()) {
      const same = entry.name === peer.name || entry.address === peer.address;
      if (same && this.self.name < peer.name) {
        return { ok: false, reason: 'duplicate-link', message: 'simultaneous connect: the link opened by the smaller name wins' };
      }
    }
    return { ok: true };
  }

  /**
   * Of two links between the same incarnations, which one both ends keep: a peer that opened a
   * second link itself saw the first one die, so the newer wins; otherwise the link opened by the
   * node with the smaller name wins. Both ends compute the same answer.
   */
  private newLinkWins(prev: HandshakeResult, next: HandshakeResult): boolean {
    if (prev.initiator === next.initiator) return true;
    // Names are strings: compare them as strings (Math.min would coerce them to NaN).
    const smaller = this.self.name < next.peer.name ? this.self.name : next.peer.name;
    return next.initiator === smaller;
  }

  private handshakeFailed(link: Link, error: Error, address: string | undefined): void {
    link.close('handshake-failed');
    const reason = error instanceof HandshakeError ? error.reason : 'protocol';
    // A lost tie-break is the protocol working as designed, not a failure worth a warning.
    if (reason === 'duplicate-link' || reason === 'shutting-down') {
      this.log.debug({ remote: link.remote, reason }, 'handshake ended: link not needed');
      return;
    }
    this.counters.handshakeFailures[reason] = (this.counters.handshakeFailures[reason] ?? 0) + 1;
    publish(TelemetryChannels.handshakeFailed, { node: this.self.name, remote: link.remote, address, reason, message: error.message });
    const dir = link.direction === 'outbound' ? `to ${address ?? link.remote}` : `from ${link.remote}`;
    this.warnOnce.warn(
      `hs:${reason}:${address ?? link.remote}`,
      { remote: link.remote, reason, direction: link.direction },
      `handshake ${dir} failed: ${error.message}`,
    );
  }

  private promote(link: Link, hs: HandshakeResult, dialedAddress: string | undefined): void {
    const name = hs.peer.name;
    const prev = this.links.get(name);
    const addresses = new Set<string>([hs.peer.address]);
    if (dialedAddress) addresses.add(dialedAddress);
    const state: LinkState = { link, hs, addresses };
    if (prev && prev.hs.peer.incarnation === hs.peer.incarnation && !this.newLinkWins(prev.hs, hs)) {
      // Two links raced to completion; both ends keep the same one and drop the other.
      link.close('duplicate-link');
      for (const a of addresses) prev.addresses.add(a);
      return;
    }
    if (prev) {
      for (const a of prev.addresses) addresses.add(a);
      this.links.delete(name);
      this.heartbeat.removePeer(name);
      if (prev.hs.peer.incarnation !== hs.peer.incarnation) {
        this.log.info({ peer: name, old: prev.hs.peer.incarnation, new: hs.peer.incarnation }, 'peer restarted: new incarnation supersedes the old');
        this.retire(name, prev, 'superseded');
      } else {
        // Same incarnation, link replaced by the tie-break: the member stays up.
        this.failPending(name, 'replaced by a newer link to the same node');
        this.retireLink(prev);
      }
    }
    this.links.set(name, state);
    this.counters.linksOpened++;
    link.activate(hs, {
      onMessage: (msg) => this.onMessage(name, msg),
      onLeave: () => {
        this.log.info({ peer: name }, 'peer is leaving');
        this.dropLink(name, state, 'left');
      },
      onDrain: (lane) => this.onLaneDrain(name, lane),
      onClose: (cause) => this.onLinkClosed(name, state, cause),
    });
    if (link.isClosed) return;
    // Heartbeats go where the peer listens (its advertised host), not to the source address of
    // its connection, which differs on multi-homed hosts and with address aliases.
    const remoteHost = parseAddress(hs.peer.address)?.host ?? link.socket.remoteAddress ?? '127.0.0.1';
    this.heartbeat.addPeer({ peer: name, linkId: hs.linkId, sessionKey: hs.sessionKey, host: remoteHost, port: hs.peer.heartbeatPort });
    for (const a of addresses) this.dialer.connected(a);
    // A member whose old link closed while this one was finishing never went down (see
    // deferDownForReplacement): same incarnation, no second 'up'.
    const deferred = this.downDeferred.get(name);
    this.downDeferred.delete(name);
    if (deferred !== undefined && deferred !== hs.peer.incarnation) this.membership.markDown(name, 'superseded');
    const stillUp = deferred === hs.peer.incarnation && this.membership.get(name)?.status === 'up';
    if (!stillUp && (!prev || prev.hs.peer.incarnation !== hs.peer.incarnation || this.membership.get(name)?.status === 'down')) {
      this.membership.markUp(hs.peer, hs.peer.hidden);
      this.log.info({ peer: name, address: hs.peer.address, incarnation: hs.peer.incarnation, hidden: hs.peer.hidden }, 'member up');
    }
    if (!hs.peer.hidden && !this.opts.hidden) this.announce(name, hs.peer);
  }

  /** Transitive join: tell the new peer everyone we know, and everyone else about the new peer. */
  private announce(newPeer: string, info: NodeIdentity): void {
    const all = [this.self, ...this.membersForGossip()];
    this.sendInternal(newPeer, TOPIC_PEERS, all);
    // Newcomers are told to the other members in one message per member per turn of the loop:
    // a cluster forming at once would otherwise send a message per (newcomer, member) pair.
    this.announceQueue.push({ name: info.name, address: info.address, incarnation: info.incarnation });
    if (this.announceQueue.length > 1) return;
    setImmediate(() => {
      const entries = this.announceQueue;
      this.announceQueue = [];
      for (const [other, st] of this.links) {
        if (st.hs.peer.hidden) continue;
        const forOther = entries.filter((e) => e.name !== other);
        if (forOther.length > 0) this.sendInternal(other, TOPIC_PEERS, forOther);
      }
    });
  }

  private announceQueue: NodeIdentity[] = [];
  /** Members whose link closed while a replacement was completing, with the incarnation then. */
  private readonly downDeferred = new Map<string, number>();
  /** Running average of how long our successful dials took (connect + handshake), ms. */
  private dialMsAverage = 0;

  private membersForGossip(): NodeIdentity[] {
    const out: NodeIdentity[] = [];
    for (const st of this.links.values()) {
      const p = st.hs.peer;
      if (!p.hidden) out.push({ name: p.name, address: p.address, incarnation: p.incarnation });
    }
    return out;
  }

  private onPeers(payload: unknown, from: string): void {
    if (this.opts.hidden || !Array.isArray(payload)) return;
    for (const e of payload.slice(0, 10_000)) {
      if (typeof e !== 'object' || e === null) continue;
      const { name, address, incarnation } = e as Partial<NodeIdentity>;
      if (typeof name !== 'string' || typeof address !== 'string' || typeof incarnation !== 'number') continue;
      if (name === this.self.name) continue;
      const st = this.links.get(name);
      if (st && st.hs.peer.incarnation >= incarnation) continue;
      // A topology already dials it: a second, transitive dial would only race the first.
      if (this.dialer.isWanted(address) && !st) continue;
      // Both ends usually hear of each other at once: the smaller address dials now, the larger
      // one only if no link has appeared after a short wait. One connection per pair, not two.
      // (Addresses, not names: the same rule as mutual discovery in `want`, so a pair found both
      // ways still agrees on who dials.)
      const dial = () => {
        const now = this.links.get(name);
        if (this.stopping || (now && now.hs.peer.incarnation >= incarnation)) return;
        this.connect(address).then((r) => {
          if (!r.ok) this.log.debug({ address, via: from, error: r.error.message }, 'transitive connect failed');
        });
      };
      if (this.self.address < address) dial();
      else setTimeout(dial, this.mutualDialDelay()).unref();
    }
  }

  private onLinkClosed(name: string, state: LinkState, cause: LinkCloseCause): void {
    if (this.links.get(name) !== state) return;
    if (cause.kind === 'protocol-error') {
      this.counters.framesRejected++;
      this.log.warn(
        { peer: name, remote: state.link.remote, error: cause.error.message, code: (cause.error as FoundationError).code },
        'closing link: peer broke the protocol',
      );
    }
    const reason: DownReason = cause.kind === 'protocol-error' ? 'protocol-error' : cause.kind === 'left' ? 'left' : 'connection-closed';
    if (reason === 'connection-closed' && this.deferDownForReplacement(name, state)) return;
    this.retire(name, state, reason);
  }

  /** Closes a link on our initiative and marks the member down with `reason`. */
  private dropLink(name: string, state: LinkState, reason: DownReason): void {
    if (this.links.get(name) !== state) return;
    this.retire(name, state, reason);
  }

  private retire(name: string, state: LinkState, reason: DownReason): void {
    this.detach(name, state, reason);
    if (!this.links.has(name)) this.memberGone(name, state, reason);
  }

  /** Takes a link out of service: no more heartbeats or messages over it, its requests fail. */
  private detach(name: string, state: LinkState, reason: DownReason): void {
    if (this.links.get(name) === state) this.links.delete(name);
    this.heartbeat.removePeer(name);
    this.retireLink(state);
    this.failPending(name, `link to ${name} closed (${reason})`);
  }

  /** The member's last link is gone: it is down, and the dialer and rejoin take over. */
  private memberGone(name: string, state: LinkState, reason: DownReason): void {
    this.membership.markDown(name, reason);
    this.log.info({ peer: name, reason }, 'member down');
    publish(TelemetryChannels.linkClosed, { node: this.self.name, peer: name, remote: state.link.remote, reason });
    if (!this.stopping) {
      for (const a of state.addresses) this.dialer.disconnected(a);
      if (reason === 'heartbeat-timeout' || reason === 'connection-closed') this.rejoin(state.hs.peer);
    }
  }

  /**
   * The peer closed our current link to it while our own dial to it is finishing its handshake:
   * the peer's tie-break chose that new link and closed the old one, and the close may be read
   * before the new link's last HELLO (two sockets, no order between them). The old link is
   * detached now; the member goes down only if the new link does not come up.
   */
  private deferDownForReplacement(name: string, state: LinkState): boolean {
    let replacement: Promise<ConnectResult> | undefined;
    for (const entry of this.outbound.values()) {
      if (entry.name === name) replacement = this.inflightDials.get(entry.address);
      if (replacement) break;
    }
    if (!replacement) return false;
    const incarnation = state.hs.peer.incarnation;
    this.detach(name, state, 'connection-closed');
    this.downDeferred.set(name, incarnation);
    void replacement.finally(() => {
      if (this.downDeferred.get(name) !== incarnation) return;
      this.downDeferred.delete(name);
      if (!this.links.has(name)) this.memberGone(name, state, 'connection-closed');
    });
    return true;
  }

  /**
   * A member learnt through another member (not from a topology) has nobody to redial it after a
   * partition heals if that other member is gone too: keep trying it for a while ourselves.
   */
  private rejoin(peer: HelloInfo): void {
    if (peer.hidden || this.opts.hidden || this.dialer.isWanted(peer.address)) return;
    this.dialer.want(peer.address, REJOIN_OWNER);
    setTimeout(() => this.dialer.release(peer.address, REJOIN_OWNER), REJOIN_WINDOW_MS).unref();
  }

  private retireLink(state: LinkState): void {
    this.failDrainWaiters(state.link, `link to ${state.hs.peer.name} closed`);
    const counters = state.link.outbox.counters();
    for (let i = 0; i < LANES.length; i++) {
      const c = counters[i];
      const acc = this.closedLanes[i];
      if (!c || !acc) continue;
      acc.messagesSent += c.messagesSent;
      acc.bytesSent += c.bytesSent;
      acc.dropped += c.dropped;
    }
    this.counters.linksClosed++;
    state.link.close('retired');
  }

  // ---- messaging ---------------------------------------------------------------------------

  handle(topic: string, handler: Handler): () => void {
    if (this.handlers.has(topic)) throw new FoundationError(ErrorCodes.CONFIG_INVALID, `a handler for topic "${topic}" is already registered`);
    this.handlers.set(topic, handler);
    return () => {
      if (this.handlers.get(topic) === handler) this.handlers.delete(topic);
    };
  }

  private linkTo(node: string): Link {
    if (this.stopping) throw new MessagingError(ErrorCodes.NODE_STOPPED, 'node is stopped');
    const st = this.links.get(node);
    if (!st) throw new MessagingError(ErrorCodes.NODE_UNREACHABLE, `node "${node}" is not connected`);
    return st.link;
  }

  /** Sends one message. Returns false when the lane is over its high-water mark. */
  send(node: string, topic: string, payload: unknown, lane: LaneName = 'events'): boolean {
    const link = this.linkTo(node);
    const laneIdx = laneIndex(lane);
    const raw = payload instanceof Uint8Array;
    const body = raw ? payload : encode(payload);
    return link.send(laneIdx, raw ? MessageFlags.RAW : 0, 0, topic, body);
  }

  private sendInternal(node: string, topic: string, payload: unknown): void {
    try {
      this.send(node, topic, payload, 'control');
    } catch (err) {
      this.log.debug({ node, topic, error: (err as Error).message }, 'internal send failed');
    }
  }

  request<T>(node: string, topic: string, payload: unknown, lane: LaneName = 'events', timeoutMs = 5000): Promise<T> {
    let link: Link;
    let body: Uint8Array;
    const raw = payload instanceof Uint8Array;
    try {
      link = this.linkTo(node);
      body = raw ? payload : encode(payload);
    } catch (err) {
      return Promise.reject(err);
    }
    const corrId = this.nextCorr;
    this.nextCorr = this.nextCorr >= 0xffffffff ? 1 : this.nextCorr + 1;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(corrId);
        reject(new MessagingError(ErrorCodes.REQUEST_TIMEOUT, `request "${topic}" to ${node} got no reply within ${timeoutMs} ms`));
      }, timeoutMs);
      this.pending.set(corrId, { resolve: resolve as (v: unknown) => void, reject, timer, peer: node });
      try {
        link.send(laneIndex(lane), MessageFlags.REQUEST | (raw ? MessageFlags.RAW : 0), corrId, topic, body);
      } catch (err) {
        clearTimeout(timer);
        this.pending.delete(corrId);
        reject(err);
      }
    });
  }

  /** Resolves when the lane to `node` is under its high-water mark; rejects if the link closes first. */
  drained(node: string, lane: LaneName = 'events'): Promise<void> {
    let link: Link;
    let idx: number;
    try {
      link = this.linkTo(node);
      idx = laneIndex(lane);
    } catch (err) {
      return Promise.reject(err);
    }
    if (!link.outbox.isOverHighWaterMark(idx)) return Promise.resolve();
    return new Promise((resolve, reject) => {
      let waiters = this.drainWaiters.get(link);
      if (!waiters) {
        waiters = new Map();
        this.drainWaiters.set(link, waiters);
      }
      const list = waiters.get(idx) ?? [];
      list.push({ resolve, reject });
      waiters.set(idx, list);
    });
  }

  private readonly drainWaiters = new WeakMap<Link, Map<number, Array<{ resolve: () => void; reject: (e: Error) => void }>>>();

  private onLaneDrain(name: string, lane: number): void {
    const st = this.links.get(name);
    if (!st) return;
    const waiters = this.drainWaiters.get(st.link)?.get(lane);
    if (!waiters) return;
    this.drainWaiters.get(st.link)?.delete(lane);
    for (const w of waiters) w.resolve();
  }

  /** Waiters on a link that is gone will never see it drain. */
  private failDrainWaiters(link: Link, why: string): void {
    const waiters = this.drainWaiters.get(link);
    if (!waiters) return;
    this.drainWaiters.delete(link);
    for (const list of waiters.values()) for (const w of list) w.reject(new MessagingError(ErrorCodes.LINK_CLOSED, why));
  }

  private onMessage(from: string, msg: InboundMessage): void {
    const r = this.received[msg.lane];
    if (r) {
      r.messages++;
      r.bytes += msg.payload.length;
    }
    if (msg.flags & MessageFlags.REPLY) {
      const p = this.pending.get(msg.corrId);
      if (!p || p.peer !== from) return;
      this.pending.delete(msg.corrId);
      clearTimeout(p.timer);
      let value: unknown;
      try {
        value = msg.flags & MessageFlags.RAW ? msg.payload : decode(msg.payload);
      } catch (err) {
        p.reject(err as Error);
        return;
      }
      if (msg.flags & MessageFlags.ERROR) p.reject(remoteError(value, from, msg.topic));
      else p.resolve(value);
      return;
    }
    const handler = this.handlers.get(msg.topic);
    const isRequest = (msg.flags & MessageFlags.REQUEST) !== 0;
    if (!handler) {
      if (isRequest) this.reply(from, msg, { code: ErrorCodes.NO_HANDLER, message: `no handler for topic "${msg.topic}" on ${this.self.name}` }, true);
      else this.warnOnce.warn(`nohandler:${msg.topic}`, { from, topic: msg.topic }, 'message for a topic with no handler dropped');
      return;
    }
    let value: unknown;
    try {
      value = msg.flags & MessageFlags.RAW ? msg.payload : decode(msg.payload);
    } catch (err) {
      this.warnOnce.warn(`decode:${from}`, { from, topic: msg.topic, error: (err as Error).message }, 'undecodable message payload dropped');
      if (isRequest) this.reply(from, msg, { code: ErrorCodes.FRAME_INVALID, message: 'request payload could not be decoded' }, true);
      return;
    }
    if (!isRequest) {
      try {
        const r = handler(value, from, msg.topic, msg.lane);
        if (r instanceof Promise) r.catch((err) => this.handlerFailed(msg.topic, from, err));
      } catch (err) {
        this.handlerFailed(msg.topic, from, err);
      }
      return;
    }
    let result: unknown;
    try {
      result = handler(value, from, msg.topic, msg.lane);
    } catch (err) {
      this.reply(from, msg, errorPayload(err), true);
      return;
    }
    if (result instanceof Promise) {
      result.then(
        (v) => this.reply(from, msg, v, false),
        (err) => this.reply(from, msg, errorPayload(err), true),
      );
    } else {
      this.reply(from, msg, result, false);
    }
  }

  private handlerFailed(topic: string, from: string, err: unknown): void {
    this.warnOnce.warn(`handler:${topic}`, { topic, from, error: (err as Error)?.message }, 'message handler threw');
  }

  private reply(to: string, req: InboundMessage, value: unknown, isError: boolean): void {
    const st = this.links.get(to);
    if (!st) return;
    let body: Uint8Array;
    let flags = MessageFlags.REPLY | (isError ? MessageFlags.ERROR : 0);
    if (value instanceof Uint8Array && !isError) {
      body = value;
      flags |= MessageFlags.RAW;
    } else {
      try {
        body = encode(value);
      } catch (err) {
        body = encode(errorPayload(err));
        flags |= MessageFlags.ERROR;
      }
    }
    try {
      st.link.send(req.lane, flags, req.corrId, req.topic, body);
    } catch (err) {
      this.log.warn({ to, topic: req.topic, error: (err as Error).message }, 'reply could not be queued');
    }
  }

  private failPending(peer: string, why: string): void {
    for (const [id, p] of this.pending) {
      if (p.peer !== peer) continue;
      this.pending.delete(id);
      clearTimeout(p.timer);
      p.reject(new MessagingError(ErrorCodes.LINK_CLOSED, why));
    }
  }

  // ---- stats & lifecycle -------------------------------------------------------------------

  stats(): MeshStats {
    const lanes = {} as Record<LaneName, LaneCounters>;
    LANES.forEach((name, i) => {
      const acc = { ...(this.closedLanes[i] as LaneCounters) };
      acc.messagesReceived = this.received[i]?.messages ?? 0;
      acc.bytesReceived = this.received[i]?.bytes ?? 0;
      for (const st of this.links.values()) {
        const c = st.link.outbox.counters()[i];
        if (!c) continue;
        acc.messagesSent += c.messagesSent;
        acc.bytesSent += c.bytesSent;
        acc.dropped += c.dropped;
        acc.queuedBytes += st.link.outbox.queuedBytes(i);
      }
      lanes[name] = acc;
    });
    return {
      lanes,
      handshakeFailures: { ...this.counters.handshakeFailures },
      framesRejected: this.counters.framesRejected,
      heartbeatPacketsDropped: this.heartbeat.droppedPackets(),
      memberEvents: { up: this.counters.up, down: { ...this.counters.down } },
      linksOpened: this.counters.linksOpened,
      linksClosed: this.counters.linksClosed,
    };
  }

  /** Graceful leave: tell every peer, flush, close. */
  async stop(): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    this.dialer.stop();
    const leave = encode({ name: this.self.name, incarnation: this.self.incarnation });
    const closing: Promise<void>[] = [];
    const links = [...this.links];
    // Forget the links first, so their closing is not mistaken for the peers failing.
    this.links.clear();
    for (const [name, st] of links) {
      st.link.sendLeave(leave);
      closing.push(new Promise((resolve) => st.link.socket.once('close', () => resolve())));
      st.link.close('left', true);
      this.failPending(name, 'node is stopping');
      this.failDrainWaiters(st.link, 'node is stopping');
      this.counters.linksClosed++;
      publish(TelemetryChannels.linkClosed, { node: this.self.name, peer: name, remote: st.link.remote, reason: 'left' });
      this.membership.markDown(name, 'left');
    }
    await Promise.race([Promise.all(closing), new Promise((r) => setTimeout(r, 1000).unref())]);
    for (const socket of this.sockets) socket.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
    await this.heartbeat.stop();
  }
}

function laneIndex(lane: LaneName): number {
  const idx = LANE_INDEX[lane];
  if (idx === undefined) throw new FoundationError(ErrorCodes.CONFIG_INVALID, `unknown lane "${String(lane)}"; allowed: ${LANES.join(', ')}`);
  return idx;
}

function errorPayload(err: unknown): { code?: string; message: string; name?: string } {
  if (err instanceof Error) return { name: err.name, message: err.message, code: (err as { code?: string }).code };
  return { message: String(err) };
}

function remoteError(value: unknown, from: string, topic: string): MessagingError {
  const v = (typeof value === 'object' && value !== null ? value : {}) as { code?: string; message?: string; name?: string };
  if (v.code === ErrorCodes.NO_HANDLER) return new MessagingError(ErrorCodes.NO_HANDLER, v.message ?? `no handler for "${topic}" on ${from}`);
  const cause = Object.assign(new Error(v.message ?? 'remote error'), { name: v.name ?? 'Error', code: v.code });
  return new MessagingError(ErrorCodes.REMOTE_ERROR, `handler for "${topic}" on ${from} failed: ${v.message ?? 'unknown error'}`, { cause });
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
