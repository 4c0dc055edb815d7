/**
 * Main-thread side of heartbeating: spawns the heartbeat worker, keeps the main-thread tick it
 * uses to measure our loop lag, relays its events, and measures this node's own event-loop lag.
 *
 * See heartbeat-worker.ts for why heartbeats run off the main thread. The main thread wakes for
 * heartbeating only on its own tick (every {@link MAIN_TICK_INTERVAL_MS} while it has peers, every
 * {@link ALONE_TICK_INTERVAL_MS} while it has none) and for the worker's
 * `stats` (every `statsIntervalMs` while there are peers): one timer serves both the tick the
 * worker reads and this node's loop-lag figures, instead of a separate event-loop-delay monitor
 * that would wake the process 50 times a second.
 */

import { EventEmitter } from 'node:events';
import { createHistogram, performance, type RecordableHistogram } from 'node:perf_hooks';
import { Worker } from 'node:worker_threads';
import type { Logger } from 'pino';
import { ConfigError, ErrorCodes, FoundationError } from '../errors.js';
import { SESSION_KEY_BYTES } from './heartbeat-packet.js';
import {
  type AddPeerMessage,
  ALONE_TICK_INTERVAL_MS,
  HEARTBEAT_DROP_REASONS,
  type HeartbeatConfig,
  type HeartbeatDropReason,
  type HeartbeatWorkerData,
  MAIN_TICK_INTERVAL_MS,
  type MainToWorkerMessage,
  type PeerHeartbeatStats,
  type ResolvedHeartbeatConfig,
  resolveHeartbeatConfig,
  type WorkerToMainMessage,
  writeMainTick,
} from './heartbeat-protocol.js';

/** Loop-lag percentiles cover a window of this length (the max covers up to twice that). */
const LOOP_LAG_WINDOW_MS = 10_000;
/** Below this many samples (2 s of ticks) the current window is too young; report the previous one. */
const LOOP_LAG_MIN_SAMPLES = 8;
/**
 * How long start() waits for the worker to bind. Generous: on a loaded host a new worker thread
 * can take seconds just to load its modules (30 nodes starting at once on 2 busy cores took > 5 s).
 */
const START_TIMEOUT_MS = 15_000;
/** How long stop() lets the worker close its socket before terminating it. */
const STOP_GRACE_MS = 1000;

/** Options of {@link HeartbeatService.start}. */
export interface HeartbeatServiceOptions {
  /** Address to bind the heartbeat UDP socket to (e.g. `127.0.0.1`, `0.0.0.0`, `::`). */
  host: string;
  /** UDP port; 0 (an ephemeral port, see {@link HeartbeatService.port}) is allowed. */
  port: number;
  /** Heartbeat configuration; every key has a default (see {@link HeartbeatConfig}). */
  config?: HeartbeatConfig;
  /** Logger for worker errors that have no 'error' listener, and debug events. Default: none. */
  logger?: Pick<Logger, 'debug' | 'warn' | 'error'>;
}

/** A peer to heartbeat, from a completed link handshake. */
export interface HeartbeatPeer {
  /** Peer node name. */
  peer: string;
  /** Link id shared by both ends: 16 hex characters. */
  linkId: string;
  /** 32-byte session key derived during the handshake. */
  sessionKey: Uint8Array;
  /** Peer's heartbeat UDP host. */
  host: string;
  /** Peer's heartbeat UDP port. */
  port: number;
}

/** Heartbeat figures of one peer. */
export interface HeartbeatPeerStats {
  /** Last round trip, ms; null before the first echo. */
  rttMs: number | null;
  /** The peer's main-thread lag as it reported it, ms. */
  loopLagMs: number;
  /** Current φ (as of the last stats report, ~1 s old at most). */
  phi: number;
  status: 'alive' | 'suspect' | 'down';
}

/** This node's main-thread event-loop lag, ms: how late the main tick (every 250 ms with peers) fires. */
export interface LoopLag {
  /** Median over the last ~10 s. */
  p50Ms: number;
  /** 99th percentile over the last ~10 s. */
  p99Ms: number;
  /** Maximum over the last 10–20 s. */
  maxMs: number;
  /** How late the most recent main tick fired, or how overdue the next one is if that is more. */
  currentMs: number;
}

/** Events of {@link HeartbeatService}. */
export interface HeartbeatEvents {
  /** φ of `peer` reached `suspectPhi`. */
  suspect: [e: { peer: string; phi: number }];
  /** A suspected `peer` is fine again. */
  alive: [e: { peer: string }];
  /** φ of `peer` reached `phiThreshold`; it is no longer heartbeated until re-added. `silentMs`: since its last heartbeat. */
  down: [e: { peer: string; phi: number; silentMs: number }];
  /** This process was paused `ms` (SIGSTOP, starvation); detectors were reset. */
  'self-pause': [e: { ms: number }];
  /** Datagrams dropped (rate-limited report; `count` is the running total for `reason`). */
  dropped: [info: { reason: HeartbeatDropReason; from: string; count: number }];
  /** Periodic per-peer figures (every `statsIntervalMs`). */
  stats: [peers: ReadonlyMap<string, HeartbeatPeerStats>];
  /** Socket or worker errors. Only emitted when a listener exists; otherwise logged. */
  error: [err: Error];
}

/**
 * Heartbeats the mesh peers from a worker thread and reports suspicion / failure.
 *
 * The worker is unref'd (it never keeps the process alive on its own); call {@link stop} to
 * close it cleanly.
 */
export class HeartbeatService extends EventEmitter<HeartbeatEvents> {
  /** The UDP port actually bound. */
  readonly port: number;
  /** The configuration in effect, defaults applied. */
  readonly config: ResolvedHeartbeatConfig;

  private readonly worker: Worker;
  private readonly logger: HeartbeatServiceOptions['logger'];
  private tickTimer!: NodeJS.Timeout;
  /** The tick's current period: `MAIN_TICK_INTERVAL_MS` with peers, `ALONE_TICK_INTERVAL_MS` without. */
  private tickIntervalMs = ALONE_TICK_INTERVAL_MS;
  private readonly tickView: BigInt64Array;
  private lastTickAt: number;
  private lastTickLateMs = 0;
  /** Lateness of the main ticks in the current window, µs + 1 (a histogram records integers ≥ 1). */
  private lagWindow: RecordableHistogram = createHistogram();
  private lagWindowStart: number;
  private previousWindow: { p50Ms: number; p99Ms: number; maxMs: number } = { p50Ms: 0, p99Ms: 0, maxMs: 0 };
  private peerStats = new Map<string, HeartbeatPeerStats>();
  private droppedCounts: Record<HeartbeatDropReason, number> = Object.fromEntries(HEARTBEAT_DROP_REASONS.map((r) => [r, 0])) as Record<
    HeartbeatDropReason,
    number
  >;
  private workerMainLagMs = 0;
  private stopping: Promise<void> | undefined;

  /**
   * Spawns the worker, binds the UDP socket and starts the main-thread tick.
   * @throws ConfigError on an invalid configuration; rejects with the bind error (its `code`,
   *   e.g. `EADDRINUSE`, preserved) if the socket cannot be bound.
   */
  static async start(options: HeartbeatServiceOptions): Promise<HeartbeatService> {
    const config = resolveHeartbeatConfig(options.config);
    if (typeof options.host !== 'string' || options.host.length === 0) throw new ConfigError('heartbeat.host', 'expected a host to bind');
    if (!Number.isInteger(options.port) || options.port < 0 || options.port > 65535) {
      throw new ConfigError('heartbeat.port', `expected an integer in 0..65535, got ${String(options.port)}`);
    }
    const tick = new SharedArrayBuffer(8);
    const tickView = new BigInt64Array(tick);
    // Tick before the worker starts, so its first packets already carry a real lag figure.
    writeMainTick(tickView);
    const workerData: HeartbeatWorkerData = { host: options.host, port: options.port, mainTick: tick };
    // Ref'd while start() waits for the bind (the caller is awaiting it); unref'd by the constructor.
    const worker = new Worker(new URL('./heartbeat-worker.js', import.meta.url), { workerData });

    const port = await new Promise<number>((resolve, reject) => {
      const cleanup = () => {
        clearTimeout(timer);
        worker.off('message', onMessage);
        worker.off('error', onError);
        worker.off('exit', onExit);
      };
      const fail = (err: Error) => {
        cleanup();
        void worker.terminate();
        reject(err);
      };
      const onMessage = (m: WorkerToMainMessage) => {
        if (m.type === 'listening') {
          cleanup();
          resolve(m.port);
        } else if (m.type === 'error') {
          // Like the mesh and admin ports: a port that cannot be bound rejects with the system
          // code (`EADDRINUSE`...), which the mesh's fallback to an ephemeral port relies on.
          fail(Object.assign(new Error(`Heartbeat socket could not bind ${options.host}:${options.port}: ${m.message}`), { code: m.code }));
        }
      };
      const onError = (err: Error) => fail(err);
      const onExit = (code: number) => fail(new FoundationError(ErrorCodes.HEARTBEAT_FAILED, `Heartbeat worker exited with code ${code} during start`));
      const timer = setTimeout(
        () =>
          fail(new FoundationError(ErrorCodes.HEARTBEAT_FAILED, `Heartbeat worker did not bind ${options.host}:${options.port} within ${START_TIMEOUT_MS} ms`)),
        START_TIMEOUT_MS,
      );
      worker.on('message', onMessage);
      worker.on('error', onError);
      worker.on('exit', onExit);
      worker.postMessage({ type: 'config', ...config, detector: config.detector } satisfies MainToWorkerMessage);
    });
    return new HeartbeatService(worker, port, config, tickView, options.logger);
  }

  private constructor(worker: Worker, port: number, config: ResolvedHeartbeatConfig, tickView: BigInt64Array, logger: HeartbeatServiceOptions['logger']) {
    super();
    this.worker = worker;
    this.port = port;
    this.config = config;
    this.tickView = tickView;
    this.logger = logger;

    this.lastTickAt = performance.now();
    this.lagWindowStart = this.lastTickAt;
    this.startTick(ALONE_TICK_INTERVAL_MS);

    worker.on('message', (m: WorkerToMainMessage) => this.onWorkerMessage(m));
    worker.on('error', (err) => this.reportError(err));
    worker.on('exit', (code) => {
      if (!this.stopping) {
        this.reportError(
          new FoundationError(ErrorCodes.HEARTBEAT_FAILED, `Heartbeat worker exited unexpectedly with code ${code}; peers will see this node down`),
        );
      }
    });
    // Only now: attaching a 'message' listener re-refs the worker, and it must never keep the process alive.
    worker.unref();
  }

  /** (Re)starts the main tick with period `ms`, writing a tick now (the worker never reads a stale one across the switch). */
  private startTick(ms: number): void {
    clearInterval(this.tickTimer);
    this.tickIntervalMs = ms;
    this.lastTickAt = performance.now();
    writeMainTick(this.tickView);
    this.tickTimer = setInterval(() => this.onMainTick(), ms);
    this.tickTimer.unref();
  }

  /** The main thread is running: tell the worker, and record how late this tick came (loop lag). */
  private onMainTick(): void {
    const now = performance.now();
    this.lastTickLateMs = Math.max(0, now - this.lastTickAt - this.tickIntervalMs);
    this.lastTickAt = now;
    writeMainTick(this.tickView);
    this.lagWindow.record(Math.round(this.lastTickLateMs * 1000) + 1);
    if (now - this.lagWindowStart >= LOOP_LAG_WINDOW_MS) {
      const w = this.currentWindow();
      if (w) this.previousWindow = w;
      this.lagWindow.reset();
      this.lagWindowStart = now;
    }
  }

  private onWorkerMessage(m: WorkerToMainMessage): void {
    switch (m.type) {
      case 'suspect':
        this.setStatus(m.peer, 'suspect', m.phi);
        this.emit('suspect', { peer: m.peer, phi: m.phi });
        return;
      case 'alive':
        this.setStatus(m.peer, 'alive');
        this.emit('alive', { peer: m.peer });
        return;
      case 'down':
        this.setStatus(m.peer, 'down', m.phi);
        this.emit('down', { peer: m.peer, phi: m.phi, silentMs: m.silentMs });
        return;
      case 'self-pause':
        this.logger?.warn({ ms: m.ms }, 'heartbeat: this process was paused; failure detectors reset');
        this.emit('self-pause', { ms: m.ms });
        return;
      case 'dropped':
        this.droppedCounts[m.reason] = Math.max(this.droppedCounts[m.reason], m.count);
        this.logger?.debug({ reason: m.reason, from: m.from, count: m.count }, 'heartbeat: datagram dropped');
        this.emit('dropped', { reason: m.reason, from: m.from, count: m.count });
        return;
      case 'stats': {
        const map = new Map<string, HeartbeatPeerStats>();
        for (const p of m.peers) map.set(p.peer, toStats(p));
        this.peerStats = map;
        this.droppedCounts = { ...m.dropped };
        this.workerMainLagMs = m.mainLagMs;
        this.emit('stats', map);
        return;
      }
      case 'error': {
        const cause = m.code === undefined || m.code.startsWith('FOUNDATION_') ? undefined : Object.assign(new Error(m.message), { code: m.code });
        this.reportError(new FoundationError(ErrorCodes.HEARTBEAT_FAILED, `Heartbeat: ${m.message}`, { cause }));
        return;
      }
      case 'listening':
        return;
    }
  }

  private setStatus(peer: string, status: HeartbeatPeerStats['status'], phi?: number): void {
    const s = this.peerStats.get(peer);
    if (s) this.peerStats.set(peer, { ...s, status, phi: phi ?? s.phi });
  }

  private reportError(err: Error): void {
    // An 'error' event without a listener would throw and take the process down.
    if (this.listenerCount('error') > 0) this.emit('error', err);
    else this.logger?.error({ err }, 'heartbeat error');
  }

  private post(msg: MainToWorkerMessage): void {
    if (this.stopping) return;
    this.worker.postMessage(msg);
  }

  /**
   * Starts heartbeating `peer` (replacing its previous link, if any).
   * @throws ConfigError when an argument is invalid.
   */
  addPeer(peer: HeartbeatPeer): void {
    if (typeof peer.peer !== 'string' || peer.peer.length === 0) throw new ConfigError('peer.peer', 'expected a node name');
    if (typeof peer.linkId !== 'string' || !/^[0-9a-f]{16}$/i.test(peer.linkId)) throw new ConfigError('peer.linkId', 'expected 16 hex characters');
    if (!(peer.sessionKey instanceof Uint8Array) || peer.sessionKey.length !== SESSION_KEY_BYTES) {
      throw new ConfigError('peer.sessionKey', `expected ${SESSION_KEY_BYTES} bytes`);
    }
    if (typeof peer.host !== 'string' || peer.host.length === 0) throw new ConfigError('peer.host', 'expected a host');
    if (!Number.isInteger(peer.port) || peer.port < 1 || peer.port > 65535) throw new ConfigError('peer.port', 'expected an integer in 1..65535');
    this.peerStats.set(peer.peer, { rttMs: null, loopLagMs: 0, phi: 0, status: 'alive' });
    if (this.tickIntervalMs !== MAIN_TICK_INTERVAL_MS && !this.stopping) this.startTick(MAIN_TICK_INTERVAL_MS);
    // Copy the key: the caller's buffer may be pooled or zeroed later.
    const msg: AddPeerMessage = {
      type: 'add',
      peer: peer.peer,
      linkId: peer.linkId.toLowerCase(),
      sessionKey: new Uint8Array(peer.sessionKey),
      host: peer.host,
      port: peer.port,
    };
    this.post(msg);
  }

  /** Stops heartbeating `peer`. Unknown names are ignored. */
  removePeer(peer: string): void {
    this.peerStats.delete(peer);
    if (this.peerStats.size === 0 && this.tickIntervalMs !== ALONE_TICK_INTERVAL_MS && !this.stopping) this.startTick(ALONE_TICK_INTERVAL_MS);
    this.post({ type: 'remove', peer });
  }

  /** Last known figures per peer (refreshed every `statsIntervalMs`, statuses immediately). */
  stats(): Map<string, HeartbeatPeerStats> {
    return new Map(this.peerStats);
  }

  /** Datagrams dropped since start, per reason (refreshed with stats and drop reports). */
  dropped(): Record<HeartbeatDropReason, number> {
    return { ...this.droppedCounts };
  }

  /**
   * Datagrams dropped since start, per reason (every reason of {@link HEARTBEAT_DROP_REASONS}
   * present, 0 when none): the `reason` label of the drop metric. Same as {@link dropped}.
   */
  droppedPacketsByReason(): Record<HeartbeatDropReason, number> {
    return this.dropped();
  }

  /** Total datagrams dropped since start, all reasons together. */
  droppedPackets(): number {
    let n = 0;
    for (const r of HEARTBEAT_DROP_REASONS) n += this.droppedCounts[r];
    return n;
  }

  /** This node's main-thread lag as the worker measured it at the last stats report, ms. */
  mainLagSeenByWorker(): number {
    return this.workerMainLagMs;
  }

  private currentWindow(): { p50Ms: number; p99Ms: number; maxMs: number } | undefined {
    const h = this.lagWindow;
    // Alone (a 1 s tick) a window holds 10 samples: half of them make it current.
    if (h.count < Math.min(LOOP_LAG_MIN_SAMPLES, LOOP_LAG_WINDOW_MS / this.tickIntervalMs / 2)) return undefined;
    return { p50Ms: lagMsOf(h.percentile(50)), p99Ms: lagMsOf(h.percentile(99)), maxMs: lagMsOf(h.max) };
  }

  /** This node's own main-thread event-loop lag. */
  loopLag(): LoopLag {
    const cur = this.currentWindow();
    const prev = this.previousWindow;
    const sinceTick = Math.max(0, performance.now() - this.lastTickAt - this.tickIntervalMs);
    return {
      p50Ms: (cur ?? prev).p50Ms,
      p99Ms: (cur ?? prev).p99Ms,
      maxMs: Math.max(prev.maxMs, cur?.maxMs ?? 0, this.lagWindow.count > 0 ? lagMsOf(this.lagWindow.max) : 0),
      currentMs: Math.max(this.lastTickLateMs, sinceTick),
    };
  }

  /** Stops heartbeating, closes the socket and ends the worker. Idempotent. */
  stop(): Promise<void> {
    if (this.stopping) return this.stopping;
    clearInterval(this.tickTimer);
    this.worker.postMessage({ type: 'stop' } satisfies MainToWorkerMessage);
    this.stopping = new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        void this.worker.terminate().then(() => resolve());
      }, STOP_GRACE_MS);
      timer.unref();
      this.worker.once('exit', () => {
        clearTimeout(timer);
        resolve();
      });
    });
    return this.stopping;
  }
}

/** A recorded tick lateness (µs + 1) back in ms. */
function lagMsOf(recorded: number): number {
  return Math.max(0, (recorded - 1) / 1000);
}

function toStats(p: PeerHeartbeatStats): HeartbeatPeerStats {
  return { rttMs: p.rttMs, loopLagMs: p.loopLagMs, phi: p.phi, status: p.status };
}
