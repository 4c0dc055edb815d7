/**
 * What a peer that has not proved the secret can make a node hold: a slot among a bounded number
 * of handshakes in progress (in total and per source address), and log lines bounded per source
 * address and per interval. The frame size such a peer may send is bounded by the link's decoder
 * (`HANDSHAKE_MAX_FRAME_BYTES` in handshake.ts). The figures are in docs/guides/security.md.
 */
import type { Socket } from 'node:net';
import type { HandshakeFailureReason } from '../errors.js';
import type { Logger } from '../util/logger.js';

/**
 * Inbound connections that may be in the handshake phase at once (TLS handshake included). One
 * costs at most a socket read (64 KiB) plus an 8 KiB frame until it authenticates or times out,
 * so 128 hold at most ~10 MB; a connection over the cap is closed at once. Legitimate handshakes
 * take milliseconds: even a 100-node cluster forming at once stays well under it.
 */
export const MAX_HANDSHAKES = 128;

/**
 * Of `MAX_HANDSHAKES`, how many one source address may hold, so one host cannot take every slot
 * from the others. Loopback sources are exempt (only the total applies): a local attacker owns all
 * of 127.0.0.0/8 anyway, and every node of a cluster run on one host dials from 127.0.0.1.
 */
export const MAX_HANDSHAKES_PER_ADDRESS = 8;

/** The reason a connection refused at the cap is counted under in `MeshStats.handshakeFailures`. */
export const OVER_CAPACITY: HandshakeFailureReason = 'over-capacity';

/** How often a source address (any port) may add a handshake-failure line to the log. */
export const FAILURE_LOG_INTERVAL_MS = 10_000;

/** Lines about handshake failures per `FAILURE_LOG_INTERVAL_MS`, all sources together. */
export const FAILURE_LOG_LINES_PER_INTERVAL = 20;

/** Sources remembered by the log before the ones past their interval are forgotten. */
const LOG_SOURCES_KEPT = 1000;

/** The address a connection comes from, without its port; IPv4-mapped IPv6 as plain IPv4. */
export function sourceAddress(remoteAddress: string | undefined): string {
  if (remoteAddress === undefined) return 'unknown';
  return remoteAddress.startsWith('::ffff:') && remoteAddress.includes('.') ? remoteAddress.slice(7) : remoteAddress;
}

/** Whether `source` (from `sourceAddress`) is a loopback address. */
export function isLoopback(source: string): boolean {
  return source === '::1' || source.startsWith('127.');
}

/** Limits of a `HandshakeAdmission`; the defaults are the constants above. */
export interface AdmissionLimits {
  /** Handshakes in progress at once, all sources together. */
  total: number;
  /** Handshakes in progress at once from one source address. */
  perAddress: number;
  /** Whether loopback sources are exempt from `perAddress` (default true; see `MAX_HANDSHAKES_PER_ADDRESS`). */
  loopbackExempt: boolean;
}

/**
 * Log lines about what remote parties do, at most one per source address (whatever the port) per
 * interval, and at most `linesPerInterval` per interval in all, so neither one address nor many
 * can turn a flood of connections into a flood of lines. Each line says how many were held back:
 * `suppressedSinceLast` for its source, `suppressedOverall` for lines the overall cap dropped
 * since the previous line.
 */
export class SourceRateLimitedLog {
  private readonly sources = new Map<string, { at: number; suppressed: number }>();
  private windowStart = Number.NEGATIVE_INFINITY;
  private linesInWindow = 0;
  private heldBack = 0;

  constructor(
    private readonly log: Logger,
    private readonly intervalMs = FAILURE_LOG_INTERVAL_MS,
    private readonly linesPerInterval = FAILURE_LOG_LINES_PER_INTERVAL,
    private readonly now: () => number = Date.now,
  ) {}

  /** Logs `msg` at warn level unless `source` logged within the interval or the overall budget is spent. */
  warn(source: string, obj: object, msg: string): void {
    const now = this.now();
    const entry = this.sources.get(source);
    if (entry && now - entry.at < this.intervalMs) {
      entry.suppressed++;
      return;
    }
    if (now - this.windowStart >= this.intervalMs) {
      this.windowStart = now;
      this.linesInWindow = 0;
    }
    if (this.linesInWindow >= this.linesPerInterval) {
      this.heldBack++;
      return;
    }
    this.linesInWindow++;
    this.log.warn({ ...obj, source, suppressedSinceLast: entry?.suppressed ?? 0, suppressedOverall: this.heldBack }, msg);
    this.heldBack = 0;
    this.sources.set(source, { at: now, suppressed: 0 });
    if (this.sources.size > LOG_SOURCES_KEPT) this.forgetExpired(now);
  }

  /** Drops sources past their interval (their held-back counts were never going to be logged sooner). */
  private forgetExpired(now: number): void {
    for (const [source, e] of this.sources) if (now - e.at >= this.intervalMs) this.sources.delete(source);
    // All recent: forgetting them only lets them log again, and the overall cap still holds.
    if (this.sources.size > LOG_SOURCES_KEPT) this.sources.clear();
  }
}

/**
 * Caps the inbound connections in the handshake phase. `accept` is called with every accepted
 * socket (for TLS, the raw socket of the 'connection' event, so TLS handshakes count too); over
 * the cap the socket is destroyed at once and counted under `OVER_CAPACITY`. The slot is freed by
 * `done` when the handshake ends either way, or when the socket closes, whichever comes first.
 */
export class HandshakeAdmission {
  /** Slots taken, by remote endpoint (address and port: a TLS socket and its raw socket share it). */
  private readonly slots = new Map<string, string>();
  private readonly perSource = new Map<string, number>();
  private readonly limits: AdmissionLimits;
  private refusals = 0;
  /** Sockets refused here: a TLS server still reports their hang-up as a TLS client error. */
  private readonly refusedSockets = new WeakSet<Socket>();

  constructor(
    /** Told of each refusal, with reason `OVER_CAPACITY` (the mesh counts it in `handshakeFailures`). */
    private readonly countFailure: (reason: HandshakeFailureReason) => void,
    private readonly log: SourceRateLimitedLog,
    limits: Partial<AdmissionLimits> = {},
  ) {
    this.limits = {
      total: limits.total ?? MAX_HANDSHAKES,
      perAddress: limits.perAddress ?? MAX_HANDSHAKES_PER_ADDRESS,
      loopbackExempt: limits.loopbackExempt ?? true,
    };
  }

  /** Handshakes in progress. */
  get inProgress(): number {
    return this.slots.size;
  }

  /** Connections refused at the cap so far. */
  get refused(): number {
    return this.refusals;
  }

  /** Takes a handshake slot for `socket`, or destroys it and returns false when none is free. */
  accept(socket: Socket): boolean {
    if (socket.remoteAddress === undefined || socket.remotePort === undefined) {
      // Reset before we saw it: nothing to hand-shake with.
      socket.destroy();
      return false;
    }
    const source = sourceAddress(socket.remoteAddress);
    const endpoint = `${source}|${socket.remotePort}`;
    const fromSource = this.perSource.get(source) ?? 0;
    const overTotal = this.slots.size >= this.limits.total;
    if (overTotal || (fromSource >= this.limits.perAddress && !(this.limits.loopbackExempt && isLoopback(source)))) {
      socket.destroy();
      this.refusedSockets.add(socket);
      this.refusals++;
      this.countFailure(OVER_CAPACITY);
      const why = overTotal
        ? `${this.slots.size} handshakes in progress (cap ${this.limits.total})`
        : `${fromSource} handshakes in progress from this address (cap ${this.limits.perAddress})`;
      this.log.warn(source, { remote: source, reason: OVER_CAPACITY }, `connection from ${source} refused: ${why}`);
      return false;
    }
    this.slots.set(endpoint, source);
    this.perSource.set(source, fromSource + 1);
    socket.once('close', () => this.release(endpoint));
    return true;
  }

  /**
   * Whether `socket` (or, for a TLS socket, the raw socket under it) was refused here: its TLS
   * "socket hang up" is then no TLS failure, and is neither counted again nor logged.
   */
  wasRefused(socket: Socket): boolean {
    const parent = (socket as { _parent?: unknown })._parent;
    return this.refusedSockets.has(socket) || (typeof parent === 'object' && parent !== null && this.refusedSockets.has(parent as Socket));
  }

  /** The handshake on `socket` ended (authenticated or failed): frees its slot. */
  done(socket: Socket): void {
    this.release(`${sourceAddress(socket.remoteAddress)}|${socket.remotePort}`);
  }

  private release(endpoint: string): void {
    const source = this.slots.get(endpoint);
    if (source === undefined) return;
    this.slots.delete(endpoint);
    const n = (this.perSource.get(source) ?? 1) - 1;
    if (n > 0) this.perSource.set(source, n);
    else this.perSource.delete(source);
  }
}
