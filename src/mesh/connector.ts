/**
 * Connection establishment: the server side (inbound sockets and their handshakes), the client
 * side (dials, one in flight per address, the dialer that keeps wanted addresses connected), and
 * the admission of an authenticated peer (tie-break, stale incarnations). A handshake that
 * succeeds hands its link to `ConnectorHooks.admitted`; from there on the link belongs to the
 * peer's state machine (peers.ts).
 *
 * Pre-authentication bounds (admission.ts): `listen` takes a handshake slot for each inbound
 * socket (or closes it at the cap), `onInbound` frees it when the handshake ends, and handshake
 * failures are logged per source address, capped overall, through `failureLog`.
 */
import type { Server, Socket } from 'node:net';
import { connect as tcpConnect } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { ErrorCodes, FoundationError, HandshakeError, MessagingError } from '../errors.js';
import type { Logger, RateLimitedLog } from '../util/logger.js';
import { publish, TelemetryChannels } from '../util/telemetry.js';
import { HandshakeAdmission, SourceRateLimitedLog, sourceAddress } from './admission.js';
import type { BodyPool } from './body-pool.js';
import { type BackoffOptions, type DialAttempt, Dialer } from './dialer.js';
import { type AdmitDecision, acceptHandshake, type HandshakeResult, type HelloInfo, initiateHandshake } from './handshake.js';
import { formatAddress, parseAddress } from './identity.js';
import type { OutboxOptions } from './lanes.js';
import { Link } from './link.js';
import type { MeshTlsOptions } from './mesh-options.js';
import { addressFirst } from './pair-order.js';
import type { Peer } from './peer.js';
import type { NodeIdentity } from './types.js';

/** Result of one connect attempt. */
export type ConnectResult = { ok: true; peer: string; already: boolean } | { ok: false; error: Error };

/**
 * Shortest wait of the larger address of a pair (found by mutual discovery, or told about each
 * other in a transitive join) for the smaller one's dial: many loopback or LAN handshakes long,
 * and short enough that a peer which did not find us yet (a slower poll) costs little.
 */
const MUTUAL_DIAL_DELAY_MS = 150;
/** Longest such wait, whatever the dials take. */
export const MUTUAL_DIAL_DELAY_MAX_MS = 2000;
/** Weight of the newest dial in the running average of dial durations. */
const DIAL_AVERAGE_WEIGHT = 0.2;

export interface ConnectorOptions {
  secret: Buffer;
  tls?: MeshTlsOptions;
  maxFrameBytes: number;
  maxMessageBytes: number;
  handshakeTimeoutMs: number;
  connectTimeoutMs: number;
  reconnect: BackoffOptions;
  lanes: Partial<OutboxOptions>;
  /** Where links take the bodies of large received messages from. */
  bodyPool?: BodyPool;
}

/** What the connector needs from the rest of the mesh. */
export interface ConnectorHooks {
  /** This node as it introduces itself in handshakes. */
  helloInfo(): HelloInfo;
  /** The connected peer of that name (up or being replaced). */
  peer(name: string): Peer | undefined;
  /** The connected peer that reaches `address` (dialed there, or advertised). */
  peerAt(address: string): Peer | undefined;
  /** A handshake succeeded: the link is the peer's now (or is closed as a duplicate). */
  admitted(link: Link, hs: HandshakeResult, dialedAddress: string | undefined): void;
  /** A peer refused our handshake because it knows a newer incarnation of our own name. */
  nameTaken(via: string, message: string): void;
  /** Handshake failures, by reason (for stats). */
  countHandshakeFailure(reason: string): void;
}

export class Connector {
  readonly dialer: Dialer;
  private readonly inflightDials = new Map<string, Promise<ConnectResult>>();
  /** Outbound handshakes in flight, by link: the dialed address, and the peer's name once step 2 told it. */
  /** Outbound handshakes in progress: the dialed address, the peer's name once it said it, and when the attempt ends. */
  private readonly outbound = new Map<Link, { address: string; name?: string; ended: Promise<void> }>();
  /**
   * Inbound handshakes in progress, by the address the peer claims in its first HELLO
   * (unauthenticated: a hint only); `done` settles when the handshake ends. See `dialUnlessDialed`.
   */
  private readonly inboundClaims = new Map<Link, { address: string; done: Promise<void> }>();
  /**
   * Our dials whose TCP connect has not completed, by socket, with the address dialed and how to
   * give the attempt up. See `abandonConnectsTo`.
   */
  private readonly connecting = new Map<Socket, { address: string; abandon: () => void }>();
  private readonly dialListeners = new Set<(a: DialAttempt) => void>();
  /** Every socket, linked or not (handshakes in flight, tie-break losers), so `stop` can close them all. */
  readonly sockets = new Set<Socket>();
  /** Running average of how long our successful dials took (connect + handshake), ms. */
  private dialMsAverage = 0;
  private stopping = false;
  /** Set once our name was taken: no more dials (see `ConnectorHooks.nameTaken`). */
  private refusedWith?: Error;
  /** Handshake failures and refusals: one line per source address per interval, capped overall. */
  private readonly failureLog: SourceRateLimitedLog;
  /** Caps the inbound connections in the handshake phase (admission.ts). */
  readonly admission: HandshakeAdmission;

  constructor(
    private readonly self: NodeIdentity,
    private readonly opts: ConnectorOptions,
    private readonly hooks: ConnectorHooks,
    private readonly log: Logger,
    /** Unused since handshake failures go to `failureLog`; kept so callers need not change. */
    _warnOnce: RateLimitedLog,
  ) {
    this.failureLog = new SourceRateLimitedLog(log);
    this.admission = new HandshakeAdmission((reason) => hooks.countHandshakeFailure(reason), this.failureLog);
    this.dialer = new Dialer(
      (address) => this.connect(address).then((r) => (r.ok ? { ok: true } : { ok: false, error: r.error })),
      opts.reconnect,
      (attempt) => {
        for (const l of this.dialListeners) l(attempt);
      },
    );
  }

  /** Takes the inbound sockets of `server` (TLS: only the decrypted ones). */
  listen(server: Server): void {
    if (this.opts.tls) {
      server.on('connection', (raw: Socket) => this.admission.accept(raw));
      server.on('secureConnection', (socket: Socket) => this.onInbound(socket));
      server.on('tlsClientError', (err: Error, socket: Socket) => {
        if (this.admission.wasRefused(socket)) return; // counted and logged as over-capacity
        this.hooks.countHandshakeFailure('tls');
        const remote = socket.remoteAddress ?? (socket as { _parent?: Socket })._parent?.remoteAddress ?? 'unknown address';
        this.failureLog.warn(sourceAddress(remote), { remote }, `TLS handshake from ${remote} failed: ${err.message}`);
      });
    } else {
      server.on('connection', (socket: Socket) => {
        if (this.admission.accept(socket)) this.onInbound(socket);
      });
    }
  }

  /** Subscribes to every dial attempt made for wanted addresses (telemetry). */
  onDialAttempt(listener: (a: DialAttempt) => void): () => void {
    this.dialListeners.add(listener);
    return () => this.dialListeners.delete(listener);
  }

  /**
   * Keeps `address` connected on behalf of `owner`, retrying with backoff. With `mutual`, the
   * peer is expected to find this node too: the pair's second address (see pair-order.ts) lets
   * the first one dial and only dials itself if no link from it appeared after `mutualDialDelay()`.
   */
  want(address: string, owner: string, options: { mutual?: boolean } = {}): void {
    if (this.stopping) return;
    const yieldFirst = options.mutual === true && !addressFirst(this.self.address, address);
    // The peer may have dialed us before our own discovery found it: nothing to dial then.
    const linked = this.hooks.peerAt(address) !== undefined;
    this.dialer.want(address, owner, yieldFirst ? this.mutualDialDelay() : 0, linked);
  }

  /**
   * How long the second address of a pair waits for the first one's dial: twice what our own
   * recent dials took (the peer's dial to us costs about the same), at least MUTUAL_DIAL_DELAY_MS
   * and at most MUTUAL_DIAL_DELAY_MAX_MS, plus up to 50% jitter. On a loaded host (a large
   * cluster forming on few cores) connects slow down, and so does the wait.
   */
  mutualDialDelay(): number {
    const base = Math.min(MUTUAL_DIAL_DELAY_MAX_MS, Math.max(MUTUAL_DIAL_DELAY_MS, 2 * this.dialMsAverage));
    return base * (1 + Math.random() * 0.5);
  }

  /** One connect attempt to `address`. Resolves `{ok:true, already:true}` when a link to that address exists. */
  connect(address: string): Promise<ConnectResult> {
    if (this.stopping) return Promise.resolve({ ok: false, error: new MessagingError(ErrorCodes.NODE_STOPPED, 'node is stopping') });
    if (this.refusedWith) return Promise.resolve({ ok: false, error: this.refusedWith });
    if (address === this.self.address) return Promise.resolve({ ok: true, peer: this.self.name, already: true });
    const linked = this.hooks.peerAt(address);
    if (linked) return Promise.resolve({ ok: true, peer: linked.name, already: true });
    const existing = this.inflightDials.get(address);
    if (existing) return existing;
    const p = this.dialUnlessDialed(address).finally(() => this.inflightDials.delete(address));
    this.inflightDials.set(address, p);
    return p;
  }

  /**
   * Settles when our dial to the node named `name` ends, if one is finishing its handshake (see
   * `Peers.onLinkClosed`): whichever path started it, `connect` or a direct `dial`.
   */
  dialInFlightTo(name: string): Promise<unknown> | undefined {
    for (const entry of this.outbound.values()) if (entry.name === name) return entry.ended;
    return undefined;
  }

  /** No more dials, ever: our name was taken by a newer incarnation. */
  refuseDials(error: Error): void {
    this.refusedWith = error;
    this.dialer.stop();
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
      const linked = this.hooks.peerAt(address);
      if (linked) return { ok: true, peer: linked.name, already: true };
      if (this.stopping) return { ok: false, error: new MessagingError(ErrorCodes.NODE_STOPPED, 'node is stopping') };
    }
    return this.dial(address);
  }

  private async dial(address: string): Promise<ConnectResult> {
    const started = performance.now();
    const target = parseAddress(address);
    if (!target) return { ok: false, error: new FoundationError(ErrorCodes.CONFIG_INVALID, `"${address}" is not a host:port address`) };
    let socket: Socket | undefined;
    try {
      socket = await this.openSocket(address, target.host, target.port);
    } catch (error) {
      return { ok: false, error: error as Error };
    }
    if (!socket) {
      // Given up while connecting: a link to that address came up the other way meanwhile.
      const linked = this.hooks.peerAt(address);
      if (linked) return { ok: true, peer: linked.name, already: true };
      return { ok: false, error: new MessagingError(ErrorCodes.NODE_UNREACHABLE, `connect to ${address} given up: its link came up and went`) };
    }
    const link = this.newLink(socket, 'outbound');
    let ended!: () => void;
    const entry: { address: string; name?: string; ended: Promise<void> } = { address, ended: new Promise<void>((resolve) => (ended = resolve)) };
    this.outbound.set(link, entry);
    try {
      const hs = await initiateHandshake(link.handshakeChannel(), this.hooks.helloInfo(), this.opts.secret, (peer) => {
        entry.name = peer.name;
      });
      if (this.stopping) throw new HandshakeError('shutting-down', 'node is stopping');
      this.admitted(link, hs, address);
      this.dialMsAverage += DIAL_AVERAGE_WEIGHT * (performance.now() - started - this.dialMsAverage);
      return { ok: true, peer: hs.peer.name, already: false };
    } catch (error) {
      this.handshakeFailed(link, error as Error, address);
      return { ok: false, error: error as Error };
    } finally {
      this.outbound.delete(link);
      // After `admitted`: a link replaced by this dial is already the peer's current one.
      ended();
    }
  }

  /**
   * Opens a socket to `host:port`; resolves undefined when the attempt was given up while the TCP
   * connect was in progress (`abandonConnectsTo`).
   */
  private openSocket(address: string, host: string, port: number): Promise<Socket | undefined> {
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
      const settle = () => {
        clearTimeout(timer);
        this.connecting.delete(socket);
      };
      const timer = setTimeout(() => {
        settle();
        socket.destroy();
        reject(new MessagingError(ErrorCodes.NODE_UNREACHABLE, `connect to ${formatAddress(host, port)} timed out after ${this.opts.connectTimeoutMs} ms`));
      }, this.opts.connectTimeoutMs);
      this.connecting.set(socket, {
        address,
        abandon: () => {
          settle();
          socket.removeAllListeners('error');
          socket.on('error', () => {});
          socket.destroy();
          resolve(undefined);
        },
      });
      socket.once(tls ? 'secureConnect' : 'connect', () => {
        settle();
        socket.removeAllListeners('error');
        resolve(socket);
      });
      socket.once('error', (err) => {
        settle();
        socket.destroy();
        reject(err);
      });
    });
  }

  /** A handshake succeeded (either direction): the link goes to the peers, then dials it made pointless are given up. */
  private admitted(link: Link, hs: HandshakeResult, dialedAddress: string | undefined): void {
    this.hooks.admitted(link, hs, dialedAddress);
    this.abandonConnectsTo(hs.peer.name);
  }

  /**
   * The link to `name` is up: our dials to its addresses whose TCP connect is still in progress
   * are given up. Such a dial was started while the peer was unreachable (a partition, its
   * restart) and its SYN is being retransmitted; left alone it would connect up to seconds after
   * the heal and, if the tie-break favoured it, replace the link that just came up, failing the
   * requests in flight on it. A socket still connecting was never seen by the peer's acceptor,
   * so giving it up costs the peer nothing; a dial past its TCP connect goes on to the tie-break.
   */
  private abandonConnectsTo(name: string): void {
    for (const [socket, entry] of this.connecting) {
      if (!socket.connecting) continue;
      const peer = this.hooks.peerAt(entry.address);
      if (peer?.name === name && peer.state === 'up') entry.abandon();
    }
  }

  private newLink(socket: Socket, direction: 'inbound' | 'outbound'): Link {
    this.sockets.add(socket);
    socket.once('close', () => this.sockets.delete(socket));
    return new Link(socket, direction, {
      maxFrameBytes: this.opts.maxFrameBytes,
      maxMessageBytes: this.opts.maxMessageBytes,
      bodyPool: this.opts.bodyPool,
      outbox: this.opts.lanes,
      handshakeTimeoutMs: this.opts.handshakeTimeoutMs,
    });
  }

  /** An inbound socket: run the acceptor's handshake on it. (Admission control goes here, see the file comment.) */
  onInbound(socket: Socket): void {
    if (this.stopping) {
      socket.destroy();
      return;
    }
    socket.on('error', () => {});
    const link = this.newLink(socket, 'inbound');
    let ended: () => void = () => {};
    const done = new Promise<void>((resolve) => (ended = resolve));
    const claim = (peer: HelloInfo) => this.inboundClaims.set(link, { address: peer.address, done });
    acceptHandshake(link.handshakeChannel(), this.hooks.helloInfo(), this.opts.secret, (peer) => this.admit(peer), claim)
      .then(
        (hs) => {
          if (this.stopping) {
            link.close('shutting-down');
            return;
          }
          this.admitted(link, hs, undefined);
        },
        (error: Error) => this.handshakeFailed(link, error, undefined),
      )
      .finally(() => {
        this.inboundClaims.delete(link);
        this.admission.done(socket);
        ended();
      });
  }

  /** Settles when an inbound handshake from a node claiming `address` ends; undefined if none is in progress. */
  private inboundHandshakeFrom(address: string): Promise<void> | undefined {
    for (const c of this.inboundClaims.values()) if (c.address === address) return c.done;
    return undefined;
  }

  /**
   * The acceptor's decision on an authenticated peer. Of two links between the same pair of
   * incarnations, the one opened by the node with the smaller address survives (pair-order.ts);
   * both ends apply the same rule, so exactly one link remains. A newer incarnation supersedes
   * an older one; an older one is refused.
   */
  private admit(peer: HelloInfo): AdmitDecision {
    if (this.stopping) return { ok: false, reason: 'shutting-down', message: 'node is stopping' };
    const existing = this.hooks.peer(peer.name);
    if (existing) {
      const inc = existing.incarnation;
      if (peer.incarnation < inc) {
        return {
          ok: false,
          reason: 'stale-incarnation',
          message: `node name "${peer.name}" is connected with a newer incarnation (${inc}) than yours (${peer.incarnation})`,
        };
      }
      if (peer.incarnation > inc || existing.state === 'replacing') return { ok: true };
      // Same incarnation. A peer re-dialing a link it already has means it saw that link die.
      if (existing.hs.initiator === peer.name) return { ok: true };
      if (addressFirst(peer.address, this.self.address)) return { ok: true };
      return { ok: false, reason: 'duplicate-link', message: 'a link between these nodes already exists' };
    }
    for (const entry of this.outbound.values()) {
      const same = entry.name === peer.name || entry.address === peer.address;
      if (same && addressFirst(this.self.address, peer.address)) {
        return { ok: false, reason: 'duplicate-link', message: 'simultaneous connect: the link opened by the smaller address wins' };
      }
    }
    return { ok: true };
  }

  private handshakeFailed(link: Link, error: Error, address: string | undefined): void {
    link.close('handshake-failed');
    const reason = error instanceof HandshakeError ? error.reason : 'protocol';
    // A lost tie-break is the protocol working as designed, not a failure worth a warning.
    if (reason === 'duplicate-link' || reason === 'shutting-down') {
      this.log.debug({ remote: link.remote, reason }, 'handshake ended: link not needed');
      return;
    }
    this.hooks.countHandshakeFailure(reason);
    publish(TelemetryChannels.handshakeFailed, { node: this.self.name, remote: link.remote, address, reason, message: error.message });
    if (reason === 'stale-incarnation' && link.direction === 'outbound') {
      // The peer knows a newer incarnation of OUR name: another live node took it.
      this.hooks.nameTaken(address ?? link.remote, error.message);
      return;
    }
    const dir = link.direction === 'outbound' ? `to ${address ?? link.remote}` : `from ${link.remote}`;
    // Inbound: per source host, not host:port (every retry comes from a new port).
    const source = link.direction === 'outbound' ? (address ?? link.remote) : sourceAddress(link.socket.remoteAddress);
    this.failureLog.warn(source, { remote: link.remote, reason, direction: link.direction }, `handshake ${dir} failed: ${error.message}`);
  }

  stop(): void {
    this.stopping = true;
    this.dialer.stop();
  }
}
