/**
 * Heartbeat worker (entry point of a `worker_threads` Worker; runs as dist/mesh/heartbeat-worker.js).
 *
 * It owns a UDP socket and, every `intervalMs`, sends each peer one heartbeat that carries the
 * echo of the last heartbeat it received from that peer (see heartbeat-packet.ts): one datagram
 * per direction and interval, RTT from the echo. Every authentic, fresh heartbeat feeds the
 * peer's phi accrual detector.
 *
 * Why a worker: a main thread busy for 2 s must not be declared down by its peers (Moleculer's
 * false positive). The worker keeps heartbeating while the main thread is stuck and reports the
 * stall as `mainLagMs` in every packet instead. A stopped process (SIGSTOP) stops this thread
 * too, so it is still detected; a main thread stuck for more than `maxMainStallMs` is a dead
 * node, so the worker then goes silent on purpose.
 *
 * What an idle node costs is mostly wake-ups (each costs ~100 µs of CPU on a small VM, far more
 * than the work done in it), so the worker wakes only when it has something to do:
 * - one send timer for all peers, aligned to multiples of `intervalMs` on the epoch clock, so all
 *   sends of a tick share one wake-up, and so do the arrivals from peers on the same host (they
 *   tick in phase);
 * - no polling of φ: one deadline timer sleeps until the earliest moment a peer's φ can reach
 *   the next threshold (an arrival only moves that moment later, so the timer then re-arms);
 * - no timers at all without peers; `stats` ride on the send tick.
 *
 * Hostile datagrams (garbage, wrong key, unknown link, replays, reflections) are dropped and
 * counted by reason; nothing an outsider sends can throw in here.
 */

import dgram from 'node:dgram';
import dns from 'node:dns';
import { isIP, isIPv6 } from 'node:net';
import { performance } from 'node:perf_hooks';
import { parentPort, workerData } from 'node:worker_threads';
import { ErrorCodes, FoundationError } from '../errors.js';
import { delayToNextGridPoint } from '../util/grid-timer.js';
import { PhiAccrualDetector } from './failure-detector.js';
import {
  decodeHeartbeat,
  encodeHeartbeat,
  FLAG_SENDER_LOW,
  FLAG_WANT_COPIES,
  HEARTBEAT_PACKET_BYTES,
  LINK_ID_BYTES,
  ReplayWindow,
  SESSION_KEY_BYTES,
  U32_MAX,
} from './heartbeat-packet.js';
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

if (!parentPort) throw new FoundationError(ErrorCodes.HEARTBEAT_FAILED, 'heartbeat-worker.js must be started as a worker thread');
const port = parentPort;
const data = workerData as HeartbeatWorkerData;
const mainTick = new BigInt64Array(data.mainTick, 0, 1);

/**
 * Redundancy on demand. On a lossy link every heartbeat is sent twice, back to back: under random
 * loss a heartbeat is then lost only when both copies are (30 % loss: 9 % instead of 30 %), which
 * keeps a peer that loses 30 % of its datagrams from reaching φ = 8 within the 3 s detection
 * budget, as the two datagrams per direction of the ping/pong design did. The receiver asks for
 * it ({@link FLAG_WANT_COPIES}) for {@link LOSS_MEMORY_MS} after it last saw a heartbeat go
 * missing; a clean link carries one copy. The copy costs little: the same bytes (encoded and
 * authenticated once), sent in the same wake-up, recognised on arrival by comparison with the
 * last accepted datagram instead of a second HMAC.
 */
const LOSSY_LINK_COPIES = 2;
/** How long a receiver keeps asking for copies after a heartbeat went missing: 30 s. */
const LOSS_MEMORY_MS = 30_000;
/** Width of the anti-replay window: heartbeats may arrive reordered by up to this many. */
const RECEIVE_WINDOW = 64;
/** Removed links whose sequence state we remember, so a re-added link cannot be fed replays. */
const MAX_RETAINED_LINKS = 4096;
/** RTTs above this are not measurements but stale echoes (e.g. answered after a pause). */
const MAX_PLAUSIBLE_RTT_MS = 60_000;

interface SeqState {
  /** Seq of the last heartbeat we sent on this link (0 = none yet). */
  sendSeq: number;
  /** Heartbeats from the peer: each seq once, reordering within the window tolerated. */
  readonly received: ReplayWindow;
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
  /** `sendTimeMicros` of the newest heartbeat received from the peer (0: none); echoed back. */
  echoTimeMicros: number;
  /** Our clock (microseconds) when that heartbeat arrived, to tell the peer how long we held it. */
  echoReceivedAtMicros: number;
  /** A copy of the last datagram accepted from the peer (zeros before): its redundant copy is recognised by comparison. */
  readonly lastAccepted: Buffer;
  /** Flag byte we stamp on packets to this peer. */
  readonly outFlags: number;
  /** performance.now() when a heartbeat from the peer last went missing (a gap in its seqs). */
  lastLossAt: number;
  /** The peer's last heartbeat asked for copies ({@link FLAG_WANT_COPIES}). */
  peerWantsCopies: boolean;
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
/** The send tick (a chain of timeouts on the epoch grid); only while there are peers. */
let tickTimer: NodeJS.Timeout | undefined;
/** performance.now() the send tick is due at (meaningful while `tickTimer` is set). */
let nextTickAt = Number.POSITIVE_INFINITY;
/** performance.now() when the last tick ran (or the first peer was added): the self-pause reference. */
let lastTickRanAt = performance.now();
/** Sleeps until the earliest moment a peer's φ can cross its next threshold. */
let deadlineTimer: NodeJS.Timeout | undefined;
let deadlineAt = Number.POSITIVE_INFINITY;
/** One-shot `stats` after drops while no tick runs (no peers), so drop counters stay current. */
let statsFlushTimer: NodeJS.Timeout | undefined;
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

function drop(reason: HeartbeatDropReason, rinfo: dgram.RemoteInfo): void {
  const count = ++dropCounts[reason];
  const now = performance.now();
  const last = dropReportedAt.get(reason);
  // Rate limit: a flood of garbage must not become a flood of messages to the main thread.
  if (last === undefined || now - last >= DROPPED_REPORT_INTERVAL_MS) {
    dropReportedAt.set(reason, now);
    post({ type: 'dropped', reason, from: `${rinfo.address}:${rinfo.port}`, count });
  }
  if (!tickTimer && !statsFlushTimer && !stopped) {
    statsFlushTimer = setTimeout(() => {
      statsFlushTimer = undefined;
      postStats(performance.now());
    }, config.statsIntervalMs);
    statsFlushTimer.unref();
  }
}

function onSendError(err: Error | null): void {
  if (!err) return;
  // Unreachable hosts are what the detector is for; just don't spam the main thread.
  const now = performance.now();
  if (now - lastSendErrorReportAt >= DROPPED_REPORT_INTERVAL_MS) {
    lastSendErrorReportAt = now;
    postError(err, 'heartbeat send failed');
  }
}

function sendHeartbeat(p: Peer, lag: number, nowMicros: number): void {
  if (p.status === 'down' || !socket || !listening) return;
  if (p.seq.sendSeq >= U32_MAX) {
    // 2^32 heartbeats is 34 years at 4 Hz; if it ever happens, the link must be re-handshaken.
    if (!p.exhaustedReported) {
      p.exhaustedReported = true;
      post({ type: 'error', message: `heartbeat sequence exhausted on link ${p.linkId} to ${p.peer}; re-add the peer with a new link`, code: undefined });
    }
    return;
  }
  p.seq.sendSeq++;
  const echoTimeMicros = p.echoTimeMicros;
  const buf = encodeHeartbeat(
    {
      linkId: p.linkId,
      seq: p.seq.sendSeq,
      sendTimeMicros: nowMicros,
      echoTimeMicros,
      echoHoldMicros: echoTimeMicros === 0 ? 0 : nowMicros - p.echoReceivedAtMicros,
      mainLagMs: lag,
      flags: p.outFlags | (performance.now() - p.lastLossAt < LOSS_MEMORY_MS ? FLAG_WANT_COPIES : 0),
    },
    p.key,
  );
  // Only the first copy reports errors: the second would fail the same way.
  socket.send(buf, p.port, p.host, onSendError);
  if (p.peerWantsCopies) for (let i = 1; i < LOSSY_LINK_COPIES; i++) socket.send(buf, p.port, p.host);
}

// ---------------------------------------------------------------------------------------------
// Timers

/** Arms the send tick for the next multiple of `intervalMs` on the epoch clock. */
function scheduleTick(): void {
  if (tickTimer) clearTimeout(tickTimer);
  tickTimer = undefined;
  if (stopped || peers.size === 0) return;
  const delay = delayToNextGridPoint(config.intervalMs, epochNowMs(), performance.now() - lastTickRanAt);
  nextTickAt = performance.now() + delay;
  tickTimer = setTimeout(onTick, delay);
}

/**
 * If our own timers ran far too late, this thread (so the process) was stopped or starved:
 * every peer looks silent, but the silence was ours. Pretend everyone just spoke; real failures
 * are caught one detection period later. Returns whether that happened.
 */
function selfPaused(now: number): boolean {
  const late = now - lastTickRanAt - config.intervalMs;
  if (late <= config.detector.acceptablePauseMs) return false;
  lastTickRanAt = now;
  for (const p of peers.values()) p.detector.reset(now);
  post({ type: 'self-pause', ms: Math.round(late) });
  return true;
}

function onTick(): void {
  tickTimer = undefined;
  try {
    const now = performance.now();
    if (selfPaused(now)) scheduleDeadline(now);
    lastTickRanAt = now;
    const { lag, stalled } = currentMainLag();
    if (!stalled) {
      const nowMicros = microsNow();
      for (const p of peers.values()) sendHeartbeat(p, lag, nowMicros);
    }
    if (now - lastStatsAt >= config.statsIntervalMs) postStats(now);
  } catch (err) {
    postError(err, 'heartbeat worker error');
  }
  scheduleTick();
  scheduleDeadline(performance.now());
}

/**
 * (Re)arms the deadline timer for the earliest threshold crossing among the peers, when it falls
 * before the next send tick; a later one is looked at again by that tick. On a healthy link every
 * arrival moves the crossing later, so a timer armed for it would mostly wake up only to re-arm
 * (about twice a second): the tick, which wakes anyway, does that instead, and a precise timer is
 * armed only for a crossing due within the coming interval. Detection is as precise as before.
 */
function scheduleDeadline(now: number): void {
  let at = Number.POSITIVE_INFINITY;
  for (const p of peers.values()) {
    if (p.status === 'down') continue;
    const t = p.detector.reachesPhiAt(p.status === 'suspect' ? config.phiThreshold : config.suspectPhi);
    if (t < at) at = t;
  }
  if (at === deadlineAt && deadlineTimer) return;
  if (deadlineTimer) clearTimeout(deadlineTimer);
  deadlineTimer = undefined;
  deadlineAt = at;
  if (stopped || at === Number.POSITIVE_INFINITY) return;
  if (tickTimer && at > nextTickAt) return;
  // +1 ms: timers have millisecond resolution and φ must have crossed when we look.
  deadlineTimer = setTimeout(onDeadline, Math.max(1, Math.ceil(at - now) + 1));
}

function onDeadline(): void {
  deadlineTimer = undefined;
  deadlineAt = Number.POSITIVE_INFINITY;
  const now = performance.now();
  try {
    if (!selfPaused(now)) for (const p of peers.values()) evaluate(p, now);
  } catch (err) {
    postError(err, 'heartbeat worker error');
  }
  scheduleDeadline(now);
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
  lastStatsAt = now;
  const list: PeerHeartbeatStats[] = [];
  for (const p of peers.values()) {
    list.push({ peer: p.peer, rttMs: p.rttMs, loopLagMs: p.loopLagMs, phi: p.detector.phi(now), status: p.status });
  }
  post({ type: 'stats', peers: list, dropped: { ...dropCounts }, mainLagMs: Math.round(mainLagMs(mainTick)) });
}

// ---------------------------------------------------------------------------------------------
// Arrivals

function onDatagram(msg: Buffer, rinfo: dgram.RemoteInfo): void {
  // The redundant copy of the heartbeat just accepted (see LOSSY_LINK_COPIES): not an arrival,
  // not a drop. Same bytes, so same link; nothing else is compared with, so nothing is learnt.
  if (msg.length === HEARTBEAT_PACKET_BYTES) {
    // (Never true for the initial zeros: a link id is in those bytes.)
    const last = byLink.get(msg.toString('hex', 4, 4 + LINK_ID_BYTES))?.lastAccepted;
    if (last?.equals(msg)) return;
  }
  const r = decodeHeartbeat(msg, (id) => byLink.get(id)?.key);
  if ('error' in r) {
    drop(r.error, rinfo);
    return;
  }
  const p = byLink.get(r.linkId);
  if (!p) {
    drop('unknown-link', rinfo);
    return;
  }
  if (p.inLow !== undefined && ((r.flags & FLAG_SENDER_LOW) !== 0) !== p.inLow) {
    drop('reflected', rinfo);
    return;
  }
  if (p.status === 'down') {
    drop('peer-down', rinfo);
    return;
  }
  const expected = p.seq.received.highest + 1;
  if (!p.seq.received.accept(r.seq)) {
    drop('replay', rinfo);
    return;
  }
  // A jump past the next seq: heartbeats went missing (or are late). Not for the first one
  // seen on the link (nothing to compare with).
  if (r.seq > expected && expected > 0) p.lastLossAt = performance.now();
  msg.copy(p.lastAccepted);
  const now = performance.now();
  const nowMicros = microsNow();
  if (r.seq === p.seq.received.highest) {
    p.peerWantsCopies = (r.flags & FLAG_WANT_COPIES) !== 0;
    // The newest heartbeat is the one to echo (a reordered older one is an arrival, not an echo).
    p.echoTimeMicros = r.sendTimeMicros;
    p.echoReceivedAtMicros = nowMicros;
  }
  if (r.echoTimeMicros !== 0) {
    const rtt = (nowMicros - r.echoTimeMicros - r.echoHoldMicros) / 1000;
    if (rtt >= 0 && rtt <= MAX_PLAUSIBLE_RTT_MS) p.rttMs = rtt;
  }
  p.detector.heartbeat(now);
  p.lastArrivalMs = now;
  p.loopLagMs = r.mainLagMs;
  // A suspect that speaks again is alive at once; the deadline timer re-arms on its own.
  if (p.status === 'suspect') evaluate(p, now);
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
  if (peers.size === 0) {
    scheduleTick(); // stops it
    scheduleDeadline(performance.now()); // stops it
  }
}

/** Refuses a malformed `add` (a local programming error; reported to the main thread as an error). */
function invalidAdd(what: string): never {
  throw new FoundationError(ErrorCodes.HEARTBEAT_FAILED, `heartbeat add: ${what}`);
}

function addPeer(m: AddPeerMessage): void {
  if (typeof m.peer !== 'string' || m.peer.length === 0) invalidAdd('peer must be a non-empty string');
  if (typeof m.linkId !== 'string' || !/^[0-9a-f]{16}$/i.test(m.linkId)) invalidAdd('linkId must be 16 hex characters');
  if (!(m.sessionKey instanceof Uint8Array) || m.sessionKey.length !== SESSION_KEY_BYTES) invalidAdd(`sessionKey must be ${SESSION_KEY_BYTES} bytes`);
  if (typeof m.host !== 'string' || m.host.length === 0) invalidAdd('host must be a non-empty string');
  if (!Number.isInteger(m.port) || m.port < 1 || m.port > 65535) invalidAdd('port must be an integer in 1..65535');
  const linkId = m.linkId.toLowerCase();
  removePeer(m.peer);
  const clash = byLink.get(linkId);
  if (clash) removePeer(clash.peer);

  const seq = retained.get(linkId) ?? { sendSeq: 0, received: new ReplayWindow(RECEIVE_WINDOW) };
  retained.delete(linkId);
  const now = performance.now();
  const detector = new PhiAccrualDetector(config.detector);
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
    echoTimeMicros: 0,
    echoReceivedAtMicros: 0,
    lastAccepted: Buffer.alloc(HEARTBEAT_PACKET_BYTES),
    outFlags: self !== undefined && self < m.peer ? FLAG_SENDER_LOW : 0,
    lastLossAt: Number.NEGATIVE_INFINITY,
    peerWantsCopies: false,
    inLow: self === undefined ? undefined : m.peer < self,
    exhaustedReported: false,
  };
  if (peers.size === 0) lastTickRanAt = now; // the tick starts now; nothing was "late"
  peers.set(p.peer, p);
  byLink.set(linkId, p);
  // First heartbeat right away: the peer's first arrival should not wait for the next tick.
  const { lag, stalled } = currentMainLag();
  if (!stalled) sendHeartbeat(p, lag, microsNow());
  if (!tickTimer) scheduleTick();
  scheduleDeadline(now);
}

function applyConfig(c: ResolvedHeartbeatConfig): void {
  const old = config;
  config = c;
  const now = performance.now();
  // Detector options may have changed: start every peer over with a fresh model.
  for (const p of peers.values()) {
    p.detector = new PhiAccrualDetector(config.detector);
    p.detector.reset(now);
  }
  if (old.intervalMs !== c.intervalMs) scheduleTick();
  scheduleDeadline(now);
  if (old.self !== c.self && peers.size > 0) {
    post({ type: 'error', message: 'heartbeat.self changed while peers exist; it applies to peers added from now on', code: undefined });
  }
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
  stopped = true;
  scheduleTick(); // with `stopped` set, these only clear
  if (deadlineTimer) clearTimeout(deadlineTimer);
  if (statsFlushTimer) clearTimeout(statsFlushTimer);
  deadlineTimer = statsFlushTimer = undefined;
  const s = socket;
  socket = undefined;
  listening = false;
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

/**
 * Peer hosts are addresses from the handshake, so a send needs no name resolution: answer IP
 * literals at once instead of through dns.lookup's deferred callback (one fewer tick per send).
 */
const lookup = ((host: string, options: unknown, callback: (err: Error | null, address: string, family: number) => void) => {
  const family = isIP(host);
  if (family !== 0) callback(null, host, family);
  else dns.lookup(host, options as dns.LookupOneOptions, callback as never);
}) as unknown as dgram.SocketOptions['lookup'];
const s = dgram.createSocket({ type: isIPv6(data.host) ? 'udp6' : 'udp4', lookup });
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
