/**
 * Heartbeat worker (entry point of a `worker_threads` Worker; runs as dist/mesh/heartbeat-worker.js).
 *
 * It owns a UDP socket and, for every peer, pings every `intervalMs`, answers the peer's pings
 * with pongs, and runs a phi accrual detector fed by every authentic, fresh ping or pong.
 *
 * Why a worker: a main thread busy for 2 s must not be declared down by its peers (Moleculer's
 * false positive). The worker keeps heartbeating while the main thread is stuck and reports the
 * stall as `mainLagMs` in every packet instead. A stopped process (SIGSTOP) stops this thread
 * too, so it is still detected; a main thread stuck for more than `maxMainStallMs` is a dead
 * node, so the worker then goes silent on purpose.
 *
 * Hostile datagrams (garbage, wrong key, unknown link, replays, reflections) are dropped and
 * counted; nothing an outsider sends can throw in here.
 */

import dgram from 'node:dgram';
import { isIPv6 } from 'node:net';
import { performance } from 'node:perf_hooks';
import { parentPort, workerData } from 'node:worker_threads';
import { FoundationError } from '../errors.js';
import { PhiAccrualDetector } from './failure-detector.js';
import { decodeHeartbeat, encodeHeartbeat, FLAG_SENDER_LOW, ReplayWindow, SESSION_KEY_BYTES, U32_MAX } from './heartbeat-packet.js';
import {
  type AddPeerMessage,
  DROPPED_REPORT_INTERVAL_MS,
  epochNowMs,
  HEARTBEAT_DROP_REASONS,
  type HeartbeatDropReason,
  type HeartbeatWorkerData,
  type MainToWorkerMessage,
  mainLagMs,
  type PeerHeartbeatStats,
  type ResolvedHeartbeatConfig,
  resolveHeartbeatConfig,
  type WorkerToMainMessage,
} from './heartbeat-protocol.js';

if (!parentPort) throw new Error('heartbeat-worker.js must be started as a worker thread');
const port = parentPort;
const data = workerData as HeartbeatWorkerData;
const mainTick = new BigInt64Array(data.mainTick, 0, 1);

/** Width of the pong anti-replay window: pongs may arrive reordered by up to this many pings. */
const PONG_WINDOW = 64;
/** Removed links whose sequence state we remember, so a re-added link cannot be fed replays. */
const MAX_RETAINED_LINKS = 4096;
/** RTTs above this are not measurements but stale echoes (e.g. answered after a pause). */
const MAX_PLAUSIBLE_RTT_MS = 60_000;

interface SeqState {
  /** Seq of the last ping we sent on this link (0 = none yet). */
  sendSeq: number;
  /** Fresh pings from the peer must be strictly increasing. */
  readonly pings: ReplayWindow;
  /** Pongs echo our ping seqs; reordering within the window is tolerated, duplicates are not. */
  readonly pongs: ReplayWindow;
}

interface Peer {
  readonly peer: string;
  readonly linkId: string;
  readonly key: Buffer;
  readonly host: string;
  readonly port: number;
  readonly seq: SeqState;
  detector: PhiAccrualDetector;
  status: 'alive' | 'suspect' | 'down';
  rttMs: number | null;
  loopLagMs: number;
  /** performance.now() of the last arrival, or of the add. */
  lastArrivalMs: number;
  /** Flag byte we stamp on packets to this peer. */
  readonly outFlags: number;
  /** Expected direction bit on packets from this peer; undefined when `self` is not configured. */
  readonly inLow: boolean | undefined;
  exhaustedReported: boolean;
}

let config: ResolvedHeartbeatConfig = resolveHeartbeatConfig({});
const peers = new Map<string, Peer>(); // by peer name
const byLink = new Map<string, Peer>(); // by link id
const retained = new Map<string, SeqState>(); // by link id, insertion-ordered for eviction
const dropCounts = Object.fromEntries(HEARTBEAT_DROP_REASONS.map((r) => [r, 0])) as Record<HeartbeatDropReason, number>;
const dropReportedAt = new Map<HeartbeatDropReason, number>();
let lastSendErrorReportAt = Number.NEGATIVE_INFINITY;
let socket: dgram.Socket | undefined;
let listening = false;
let stopped = false;
let pingTimer: NodeJS.Timeout | undefined;
let checkTimer: NodeJS.Timeout | undefined;
let lastCheckAt = performance.now();
let lastStatsAt = performance.now();

function post(msg: WorkerToMainMessage): void {
  if (stopped) return;
  try {
    port.postMessage(msg);
  } catch {
    // The port is closing; nothing to report to.
  }
}

function postError(err: unknown, fallback: string): void {
  const e = err as { message?: unknown; code?: unknown } | undefined;
  const message = typeof e?.message === 'string' ? e.message : fallback;
  const code = typeof e?.code === 'string' ? e.code : undefined;
  post({ type: 'error', message, code });
}

function microsNow(): number {
  return Math.round(epochNowMs() * 1000);
}

/** The main thread's lag right now, and whether it passed the point where we play dead. */
function currentMainLag(): { lag: number; stalled: boolean } {
  const lag = mainLagMs(mainTick);
  return { lag, stalled: lag > config.maxMainStallMs };
}

function drop(reason: HeartbeatDropReason, from: string): void {
  const count = ++dropCounts[reason];
  const now = performance.now();
  const last = dropReportedAt.get(reason);
  // Rate limit: a flood of garbage must not become a flood of messages to the main thread.
  if (last === undefined || now - last >= DROPPED_REPORT_INTERVAL_MS) {
    dropReportedAt.set(reason, now);
    post({ type: 'dropped', reason, from, count });
  }
}

function send(p: Peer, type: 'ping' | 'pong', seq: number, echoTimeMicros: number, lag: number): void {
  if (!socket || !listening) return;
  const buf = encodeHeartbeat({ type, linkId: p.linkId, seq, sendTimeMicros: microsNow(), echoTimeMicros, mainLagMs: lag, flags: p.outFlags }, p.key);
  socket.send(buf, p.port, p.host, (err) => {
    if (!err) return;
    // Unreachable hosts are what the detector is for; just don't spam the main thread.
    const now = performance.now();
    if (now - lastSendErrorReportAt >= DROPPED_REPORT_INTERVAL_MS) {
      lastSendErrorReportAt = now;
      postError(err, 'heartbeat send failed');
    }
  });
}

function ping(p: Peer, lag: number): void {
  if (p.status === 'down') return;
  if (p.seq.sendSeq >= U32_MAX) {
    // 2^32 pings is 34 years at 4 Hz; if it ever happens, the link must be re-handshaken.
    if (!p.exhaustedReported) {
      p.exhaustedReported = true;
      post({ type: 'error', message: `heartbeat sequence exhausted on link ${p.linkId} to ${p.peer}; re-add the peer with a new link`, code: undefined });
    }
    return;
  }
  p.seq.sendSeq++;
  send(p, 'ping', p.seq.sendSeq, 0, lag);
}

function onPingTimer(): void {
  const { lag, stalled } = currentMainLag();
  if (stalled) return;
  for (const p of peers.values()) ping(p, lag);
}

function newDetector(): PhiAccrualDetector {
  return new PhiAccrualDetector(config.detector);
}

function onDatagram(msg: Buffer, rinfo: dgram.RemoteInfo): void {
  const from = `${rinfo.address}:${rinfo.port}`;
  const r = decodeHeartbeat(msg, (id) => byLink.get(id)?.key);
  if ('error' in r) {
    drop(r.error, from);
    return;
  }
  const p = byLink.get(r.linkId);
  if (!p) {
    drop('unknown-link', from);
    return;
  }
  if (p.inLow !== undefined && ((r.flags & FLAG_SENDER_LOW) !== 0) !== p.inLow) {
    drop('reflected', from);
    return;
  }
  if (p.status === 'down') {
    drop('peer-down', from);
    return;
  }

  const now = performance.now();
  if (r.type === 'ping') {
    if (!p.seq.pings.accept(r.seq)) {
      drop('replay', from);
      return;
    }
    arrival(p, now, r.mainLagMs);
    const { lag, stalled } = currentMainLag();
    if (!stalled) send(p, 'pong', r.seq, r.sendTimeMicros, lag);
    return;
  }
  // A pong answers one of our pings: anything we never sent, or already got, is not an arrival.
  if (r.seq === 0 || r.seq > p.seq.sendSeq || !p.seq.pongs.accept(r.seq)) {
    drop('replay', from);
    return;
  }
  const rtt = (microsNow() - r.echoTimeMicros) / 1000;
  if (rtt >= 0 && rtt <= MAX_PLAUSIBLE_RTT_MS) p.rttMs = rtt;
  arrival(p, now, r.mainLagMs);
}

function arrival(p: Peer, now: number, peerLag: number): void {
  p.detector.heartbeat(now);
  p.lastArrivalMs = now;
  p.loopLagMs = peerLag;
}

function onCheckTimer(): void {
  const now = performance.now();
  const late = now - lastCheckAt - config.checkIntervalMs;
  lastCheckAt = now;
  if (late > config.detector.acceptablePauseMs) {
    // This whole thread (so the process) was stopped or starved: every peer looks silent, but
    // the silence was ours. Pretend everyone just spoke; real failures are caught one detection
    // period later.
    for (const p of peers.values()) p.detector.reset(now);
    post({ type: 'self-pause', ms: Math.round(late) });
  } else {
    for (const p of peers.values()) evaluate(p, now);
  }
  if (now - lastStatsAt >= config.statsIntervalMs) {
    lastStatsAt = now;
    postStats(now);
  }
}

function evaluate(p: Peer, now: number): void {
  if (p.status === 'down') return;
  const phi = p.detector.phi(now);
  if (phi >= config.phiThreshold) {
    p.status = 'down';
    post({ type: 'down', peer: p.peer, phi, silentMs: Math.round(now - p.lastArrivalMs) });
  } else if (phi >= config.suspectPhi) {
    if (p.status === 'alive') {
      p.status = 'suspect';
      post({ type: 'suspect', peer: p.peer, phi });
    }
  } else if (p.status === 'suspect') {
    p.status = 'alive';
    post({ type: 'alive', peer: p.peer });
  }
}

function postStats(now: number): void {
  const list: PeerHeartbeatStats[] = [];
  for (const p of peers.values()) {
    list.push({ peer: p.peer, rttMs: p.rttMs, loopLagMs: p.loopLagMs, phi: p.detector.phi(now), status: p.status });
  }
  post({ type: 'stats', peers: list, dropped: { ...dropCounts }, mainLagMs: Math.round(mainLagMs(mainTick)) });
}

// ---------------------------------------------------------------------------------------------
// Peer table

function removePeer(name: string): void {
  const p = peers.get(name);
  if (!p) return;
  peers.delete(name);
  if (byLink.get(p.linkId) === p) byLink.delete(p.linkId);
  // Remember the link's sequence state: if the same link id is ever re-added, packets captured
  // before the removal must still count as replays, and our own seq must keep growing.
  retained.delete(p.linkId);
  retained.set(p.linkId, p.seq);
  while (retained.size > MAX_RETAINED_LINKS) {
    const oldest = retained.keys().next().value;
    if (oldest === undefined) break;
    retained.delete(oldest);
  }
}

function addPeer(m: AddPeerMessage): void {
  if (typeof m.peer !== 'string' || m.peer.length === 0) throw new TypeError('add: peer must be a non-empty string');
  if (typeof m.linkId !== 'string' || !/^[0-9a-f]{16}$/i.test(m.linkId)) throw new TypeError('add: linkId must be 16 hex characters');
  if (!(m.sessionKey instanceof Uint8Array) || m.sessionKey.length !== SESSION_KEY_BYTES)
    throw new TypeError(`add: sessionKey must be ${SESSION_KEY_BYTES} bytes`);
  if (typeof m.host !== 'string' || m.host.length === 0) throw new TypeError('add: host must be a non-empty string');
  if (!Number.isInteger(m.port) || m.port < 1 || m.port > 65535) throw new TypeError('add: port must be an integer in 1..65535');
  const linkId = m.linkId.toLowerCase();
  removePeer(m.peer);
  const clash = byLink.get(linkId);
  if (clash) removePeer(clash.peer);

  const seq = retained.get(linkId) ?? { sendSeq: 0, pings: new ReplayWindow(1), pongs: new ReplayWindow(PONG_WINDOW) };
  retained.delete(linkId);
  const now = performance.now();
  const detector = newDetector();
  // Start the clock at the add: a peer that never answers is declared down like one that fell silent.
  detector.reset(now);
  const self = config.self;
  const p: Peer = {
    peer: m.peer,
    linkId,
    key: Buffer.from(m.sessionKey),
    host: m.host,
    port: m.port,
    seq,
    detector,
    status: 'alive',
    rttMs: null,
    loopLagMs: 0,
    lastArrivalMs: now,
    outFlags: self !== undefined && self < m.peer ? FLAG_SENDER_LOW : 0,
    inLow: self === undefined ? undefined : m.peer < self,
    exhaustedReported: false,
  };
  peers.set(p.peer, p);
  byLink.set(linkId, p);
  // First ping right away: the first RTT and arrival should not wait for the next tick.
  const { lag, stalled } = currentMainLag();
  if (!stalled) ping(p, lag);
}

function applyConfig(c: ResolvedHeartbeatConfig): void {
  const old = config;
  config = c;
  if (old.intervalMs !== c.intervalMs || !pingTimer) restartPingTimer();
  if (old.checkIntervalMs !== c.checkIntervalMs || !checkTimer) restartCheckTimer();
  const now = performance.now();
  // Detector options may have changed: start every peer over with a fresh model.
  for (const p of peers.values()) {
    p.detector = newDetector();
    p.detector.reset(now);
  }
  if (old.self !== c.self && peers.size > 0) {
    post({ type: 'error', message: 'heartbeat.self changed while peers exist; it applies to peers added from now on', code: undefined });
  }
}

function restartPingTimer(): void {
  if (pingTimer) clearInterval(pingTimer);
  pingTimer = setInterval(guard(onPingTimer), config.intervalMs);
}

function restartCheckTimer(): void {
  if (checkTimer) clearInterval(checkTimer);
  lastCheckAt = performance.now();
  checkTimer = setInterval(guard(onCheckTimer), config.checkIntervalMs);
}

/** Nothing may kill the worker: report unexpected exceptions instead. */
function guard<A extends unknown[]>(fn: (...args: A) => void): (...args: A) => void {
  return (...args: A) => {
    try {
      fn(...args);
    } catch (err) {
      postError(err, 'heartbeat worker error');
    }
  };
}

function stop(): void {
  if (pingTimer) clearInterval(pingTimer);
  if (checkTimer) clearInterval(checkTimer);
  pingTimer = checkTimer = undefined;
  const s = socket;
  socket = undefined;
  listening = false;
  stopped = true;
  const close = () => port.close(); // with no handle left the thread exits
  if (s) {
    try {
      s.close(close);
    } catch {
      close();
    }
  } else close();
}

port.on(
  'message',
  guard((msg: MainToWorkerMessage) => {
    if (stopped || typeof msg !== 'object' || msg === null) return;
    switch (msg.type) {
      case 'config': {
        const { type: _type, ...rest } = msg;
        try {
          applyConfig(resolveHeartbeatConfig(rest));
        } catch (err) {
          post({ type: 'error', message: (err as Error).message, code: err instanceof FoundationError ? err.code : undefined });
        }
        return;
      }
      case 'add':
        addPeer(msg);
        return;
      case 'remove':
        removePeer(msg.peer);
        return;
      case 'stop':
        stop();
        return;
      default:
        post({ type: 'error', message: `unknown message type ${String((msg as { type?: unknown }).type)}`, code: undefined });
    }
  }),
);

// ---------------------------------------------------------------------------------------------
// Socket

const s = dgram.createSocket({ type: isIPv6(data.host) ? 'udp6' : 'udp4' });
socket = s;
s.on('error', (err) => {
  postError(err, 'heartbeat socket error');
  if (!listening) {
    // Bind failed: the main thread rejects start() and terminates us.
    socket = undefined;
    try {
      s.close();
    } catch {
      // already closed
    }
  }
});
s.on('message', guard(onDatagram));
s.on('listening', () => {
  listening = true;
  post({ type: 'listening', port: s.address().port });
});
s.bind({ address: data.host, port: data.port, exclusive: true });
restartPingTimer();
restartCheckTimer();
