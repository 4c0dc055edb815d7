/**
 * Messages between the main thread ({@link ./heartbeat.ts}) and the heartbeat worker
 * ({@link ./heartbeat-worker.ts}), the worker's startup data, the heartbeat configuration and
 * the main-thread tick shared through a `SharedArrayBuffer`.
 *
 * Heartbeats live in a worker so that a busy main thread (a 2 s synchronous loop) keeps
 * heartbeating and is reported as loop lag instead of being declared down; a stopped process
 * (SIGSTOP) stops the worker too and is still detected.
 */

import { ConfigError } from '../errors.js';
import { epochNowMs } from '../util/grid-timer.js';
import {
  DEFAULT_HEARTBEAT_INTERVAL_MS,
  DEFAULT_PHI_THRESHOLD,
  MAX_PHI,
  type PhiAccrualOptions,
  type ResolvedPhiAccrualOptions,
  resolvePhiAccrualOptions,
} from './failure-detector.js';

/** Default φ at or above which a peer is reported as suspect: 3. */
export const DEFAULT_SUSPECT_PHI = 3;
/** Default main-thread stall after which the worker stops heartbeating (the node plays dead): 10000 ms. */
export const DEFAULT_MAX_MAIN_STALL_MS = 10_000;
/** How often the worker posts `stats` while it has peers: 1000 ms. */
export const DEFAULT_STATS_INTERVAL_MS = 1000;
/**
 * How often the main thread writes its tick into the shared buffer (and samples its own loop
 * lag): 250 ms, the heartbeat interval's default. Every tick wakes an idle process, which costs
 * on the order of 250 µs of CPU on a small VM (it was the largest single item of an idle node's
 * cost at 100 ms), so this is coarse on purpose: a stall estimate accurate to a quarter of a
 * second (the stall limit, `maxMainStallMs`, defaults to 10 s), and a loop-lag window of 40
 * samples per 10 s, whose p99 is its maximum: a block that holds the loop for 2.5 % of the time
 * or more shows up in it. A loop lag is measured, not sampled away: a tick that comes late is
 * late by the whole block that held it.
 */
export const MAIN_TICK_INTERVAL_MS = 250;
/**
 * The main thread's tick while the node has no peer to heartbeat: 1000 ms. Alone, nothing reads
 * the tick but this node's own loop-lag figures, so an idle lone node wakes once a second for
 * it instead of ten times; the first peer brings the tick back to {@link MAIN_TICK_INTERVAL_MS}
 * (written at once, before the worker hears of the peer).
 */
export const ALONE_TICK_INTERVAL_MS = 1000;
/** Smallest accepted `maxMainStallMs`, ms: 100. */
export const MIN_MAX_MAIN_STALL_MS = 100;
/** At most one `dropped` message per reason per this many ms (all drops are still counted): 10000 ms. */
export const DROPPED_REPORT_INTERVAL_MS = 10_000;

/** Heartbeat configuration (all optional; defaults documented per key). */
export interface HeartbeatConfig {
  /** Interval between heartbeats to each peer, in ms (10..60000). Default 250. */
  intervalMs?: number;
  /** φ at or above which a peer is declared down (> suspectPhi). Default 8. */
  phiThreshold?: number;
  /** φ at or above which a peer is reported suspect (> 0, < phiThreshold). Default 3. */
  suspectPhi?: number;
  /** Phi accrual detector options. `firstHeartbeatEstimateMs` defaults to `intervalMs`. */
  detector?: PhiAccrualOptions;
  /**
   * Main-thread stall (ms) beyond which the worker stops sending and answering heartbeats, so
   * that peers see a node whose main thread is stuck for that long as down. It resumes when the
   * main thread ticks again. Must exceed 100 ms. Default 10000.
   */
  maxMainStallMs?: number;
  /**
   * This node's name. When set, the worker stamps {@link FLAG_SENDER_LOW} on its packets and
   * rejects packets whose direction bit is not the peer's, which defeats reflection of this
   * node's own packets (both ends share the session key). Strongly recommended; both ends of a
   * link must set it. Default: unset (no reflection check).
   */
  self?: string;
  /**
   * How often `stats` is posted while there are peers, in ms (100..60000), at the first heartbeat
   * tick after it is due. Default 1000.
   */
  statsIntervalMs?: number;
}

/** {@link HeartbeatConfig} with defaults applied. */
export interface ResolvedHeartbeatConfig {
  intervalMs: number;
  phiThreshold: number;
  suspectPhi: number;
  detector: ResolvedPhiAccrualOptions;
  maxMainStallMs: number;
  self: string | undefined;
  statsIntervalMs: number;
}

/**
 * Applies defaults and validates a heartbeat configuration.
 * @throws ConfigError (key prefixed with `heartbeat.`) when a value is out of range.
 */
export function resolveHeartbeatConfig(config: HeartbeatConfig = {}): ResolvedHeartbeatConfig {
  const num = (key: string, v: unknown, ok: (n: number) => boolean, what: string): number => {
    if (typeof v !== 'number' || !Number.isFinite(v) || !ok(v)) throw new ConfigError(`heartbeat.${key}`, `expected ${what}, got ${String(v)}`);
    return v;
  };
  const intervalMs = num('intervalMs', config.intervalMs ?? DEFAULT_HEARTBEAT_INTERVAL_MS, (n) => n >= 10 && n <= 60_000, 'a number of ms in 10..60000');
  const phiThreshold = num('phiThreshold', config.phiThreshold ?? DEFAULT_PHI_THRESHOLD, (n) => n > 0 && n < MAX_PHI, `a number in (0, ${MAX_PHI})`);
  const suspectPhi = num('suspectPhi', config.suspectPhi ?? DEFAULT_SUSPECT_PHI, (n) => n > 0 && n < phiThreshold, 'a number > 0 and < phiThreshold');
  const maxMainStallMs = num(
    'maxMainStallMs',
    config.maxMainStallMs ?? DEFAULT_MAX_MAIN_STALL_MS,
    (n) => n > MIN_MAX_MAIN_STALL_MS,
    `a number of ms > ${MIN_MAX_MAIN_STALL_MS}`,
  );
  const statsIntervalMs = num(
    'statsIntervalMs',
    config.statsIntervalMs ?? DEFAULT_STATS_INTERVAL_MS,
    (n) => n >= 100 && n <= 60_000,
    'a number of ms in 100..60000',
  );
  if (config.self !== undefined && (typeof config.self !== 'string' || config.self.length === 0)) {
    throw new ConfigError('heartbeat.self', 'expected a non-empty node name');
  }
  const detector = resolvePhiAccrualOptions(
    { ...config.detector, firstHeartbeatEstimateMs: config.detector?.firstHeartbeatEstimateMs ?? intervalMs },
    'heartbeat.detector',
  );
  return { intervalMs, phiThreshold, suspectPhi, detector, maxMainStallMs, self: config.self, statsIntervalMs };
}

// ---------------------------------------------------------------------------------------------
// Worker startup data and the main-thread tick

/** `workerData` of the heartbeat worker. */
export interface HeartbeatWorkerData {
  /** Address to bind the UDP socket to (IPv4 or IPv6 literal). */
  readonly host: string;
  /** UDP port; 0 picks an ephemeral port (reported in `listening`). */
  readonly port: number;
  /** ≥ 8 bytes; `BigInt64Array[0]` holds the main thread's last tick, in epoch microseconds. */
  readonly mainTick: SharedArrayBuffer;
}

/** Current time in epoch milliseconds from the monotonic clock (comparable across threads). */
export { epochNowMs };

/** Main-thread side: records "the main thread is running now". Uses Atomics, so no torn reads. */
export function writeMainTick(view: BigInt64Array, nowMs: number = epochNowMs()): void {
  Atomics.store(view, 0, BigInt(Math.round(nowMs * 1000)));
}

/** Epoch ms of the main thread's last tick, or undefined if it never ticked. */
export function readMainTick(view: BigInt64Array): number | undefined {
  const micros = Atomics.load(view, 0);
  return micros === 0n ? undefined : Number(micros) / 1000;
}

/** Worker side: how late the main thread is, `now − lastTick − tickInterval`, clamped at 0. */
export function mainLagMs(view: BigInt64Array, nowMs: number = epochNowMs()): number {
  const last = readMainTick(view);
  if (last === undefined) return 0;
  const lag = nowMs - last - MAIN_TICK_INTERVAL_MS;
  return Math.max(lag, 0);
}

// ---------------------------------------------------------------------------------------------
// main → worker

/** (Re)configures the worker. Existing peers get fresh detectors with the new options. */
export interface ConfigMessage extends HeartbeatConfig {
  readonly type: 'config';
}

/** Starts heartbeating a peer over a freshly handshaken link. Replaces any entry for `peer`. */
export interface AddPeerMessage {
  readonly type: 'add';
  /** Peer node name. */
  readonly peer: string;
  /** The link's id: 8 random bytes as 16 hex characters, identical at both ends. */
  readonly linkId: string;
  /** 32-byte key derived from the shared secret during the link handshake. */
  readonly sessionKey: Uint8Array;
  /** Peer's heartbeat UDP address. */
  readonly host: string;
  readonly port: number;
}

/** Stops heartbeating a peer. */
export interface RemovePeerMessage {
  readonly type: 'remove';
  readonly peer: string;
}

/** Closes the socket and lets the worker exit. */
export interface StopMessage {
  readonly type: 'stop';
}

/** Any message from the main thread to the worker. */
export type MainToWorkerMessage = ConfigMessage | AddPeerMessage | RemovePeerMessage | StopMessage;

// ---------------------------------------------------------------------------------------------
// worker → main

/** The UDP socket is bound. */
export interface ListeningMessage {
  readonly type: 'listening';
  readonly port: number;
}

/** φ of `peer` reached `suspectPhi`. */
export interface SuspectMessage {
  readonly type: 'suspect';
  readonly peer: string;
  readonly phi: number;
}

/** φ of a suspected `peer` fell back below `suspectPhi`. */
export interface AliveMessage {
  readonly type: 'alive';
  readonly peer: string;
}

/** φ of `peer` reached `phiThreshold`. The worker stops heartbeating it until it is removed or re-added. */
export interface DownMessage {
  readonly type: 'down';
  readonly peer: string;
  readonly phi: number;
  /** ms since the last heartbeat from the peer (or since it was added). */
  readonly silentMs: number;
}

/** Why an incoming datagram was discarded. */
export type HeartbeatDropReason =
  /** Wrong length, magic, version, type, or nonsense fields. */
  | 'malformed'
  /** Link id not among the current peers. */
  | 'unknown-link'
  /** MAC check failed: wrong key or tampered packet. */
  | 'bad-mac'
  /** Sequence number already seen (or too old): a replay. */
  | 'replay'
  /** Direction bit says this node sent it: a reflected packet. */
  | 'reflected'
  /** Authentic packet from a peer already declared down (until it is re-added). */
  | 'peer-down';

/** All drop reasons, in a stable order. */
export const HEARTBEAT_DROP_REASONS: readonly HeartbeatDropReason[] = ['malformed', 'unknown-link', 'bad-mac', 'replay', 'reflected', 'peer-down'];

/** Datagrams were dropped. Posted at most once per reason per {@link DROPPED_REPORT_INTERVAL_MS}. */
export interface DroppedMessage {
  readonly type: 'dropped';
  readonly reason: HeartbeatDropReason;
  /** Source `address:port` of the datagram that triggered this report. */
  readonly from: string;
  /** Total drops for this reason since the worker started. */
  readonly count: number;
}

/** Per-peer figures. */
export interface PeerHeartbeatStats {
  readonly peer: string;
  /** Last measured round trip in ms; null before the first echo. */
  readonly rttMs: number | null;
  /** Peer's main-thread lag in ms, as it last reported it. */
  readonly loopLagMs: number;
  /** Current φ. */
  readonly phi: number;
  readonly status: 'alive' | 'suspect' | 'down';
}

/** Periodic snapshot (every `statsIntervalMs` while there are peers, and after drops). */
export interface StatsMessage {
  readonly type: 'stats';
  readonly peers: readonly PeerHeartbeatStats[];
  /** Total drops per reason since the worker started. */
  readonly dropped: Readonly<Record<HeartbeatDropReason, number>>;
  /** This node's main-thread lag as the worker sees it, ms. */
  readonly mainLagMs: number;
}

/**
 * The worker's timers ran `ms` late (the process was stopped or starved). Every detector was
 * reset instead of declaring peers down: the silence was ours.
 */
export interface SelfPauseMessage {
  readonly type: 'self-pause';
  readonly ms: number;
}

/** Socket bind/send errors, or a rejected message from the main thread. */
export interface WorkerErrorMessage {
  readonly type: 'error';
  readonly message: string;
  /** System error code (`EADDRINUSE`...) or a Foundation error code, when known. */
  readonly code: string | undefined;
}

/** Any message from the worker to the main thread. */
export type WorkerToMainMessage =
  | ListeningMessage
  | SuspectMessage
  | AliveMessage
  | DownMessage
  | StatsMessage
  | SelfPauseMessage
  | DroppedMessage
  | WorkerErrorMessage;
