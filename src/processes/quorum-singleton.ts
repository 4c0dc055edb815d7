/**
 * Quorum singletons on the mesh: the driver of the quorum lease (`quorum-lease.ts`) for every
 * quorum singleton a node declares, with real timers, on one system topic (`$qs`) shared by all
 * of them and dispatched by name. Guide: docs/guides/quorum-singletons.md.
 *
 * The interface (for the processes facade, `processes.startSingleton(..., { consistency: 'quorum' })`):
 *
 * ```ts
 * const leases = new QuorumLeases(mesh, log, { leaseMs: 2000 });   // one per node, on every node
 * const handle = leases.claim('scheduler', { clusterSize: 3 });    // every declaring node: it votes
 * handle.on('acquired', ({ token }) => startWorker(token));        // this node holds; token = fencing token
 * handle.on('lost', ({ token, reason }) => stopWorker());          // 'lease_expired' | 'superseded' | 'stopped'
 * handle.on('misconfigured', (err) => log(err));                   // FOUNDATION_QUORUM_MISCONFIGURED
 * handle.isHolder();                                               // checks the lease deadline now (before a side effect)
 * handle.holder();                                                 // { node, token } as this node knows, or undefined
 * handle.stats();
 * await handle.stop();                                             // lost('stopped') if holding, release, leave the voters
 * await leases.stop();                                             // every handle, and the topic
 * ```
 *
 * - Every node that declares the singleton calls `claim` with the same `clusterSize` and `leaseMs`
 *   (voters refuse a claim configured differently, and report it): those nodes are the voters,
 *   and `clusterSize` must be at least how many of them there can ever be at once (a node that
 *   sees more voters than that refuses to claim and vote, and reports it).
 * - `acquired` fires when a majority granted this node the lease; `lost` when it can no longer
 *   be sure of it. Between the two, at most one node in the cluster is between its own two
 *   events, as long as clocks keep the drift bound (`maxClockDrift`) and the event loop is not
 *   stalled past the deadline: a paused process notices only when it runs again, which is why
 *   the token exists (the guide says what to do with it).
 * - Failover after a crash of the holder: about one lease (the voters' grants run out `leaseMs`
 *   after the last renewal they received, up to `renewEveryMs` before the crash), plus the
 *   successor's claim round trip; plus `claimStaggerMs` per rank when the failure detector has
 *   not yet reported the holder down. A graceful `stop` releases: the successor takes over in a
 *   round trip or two.
 * - Construct a `QuorumLeases` on every node, declaring or not: a node without the name answers
 *   hellos with "not a voter", so voters stop asking it.
 */
import { EventEmitter } from 'node:events';
import { performance } from 'node:perf_hooks';
import { ConfigError, ErrorCodes, FoundationError } from '../errors.js';
import type { InternalMesh, MembersWatch } from '../mesh/interface.js';
import type { MembershipChange } from '../mesh/types.js';
import type { Logger } from '../util/logger.js';
import { RateLimitedLog } from '../util/logger.js';
import {
  holderLeaseMs,
  MAX_CLUSTER_SIZE,
  parseQuorumMessage,
  QuorumLease,
  type QuorumLeaseConfig,
  type QuorumLeaseEvent,
  type QuorumLeaseStats,
  type QuorumLostReason,
  type QuorumMessage,
} from './quorum-lease.js';

export type { QuorumLostReason } from './quorum-lease.js';

/** System topic of every quorum singleton's messages: `{ n: name, m: message }`. */
export const QUORUM_TOPIC = '$qs';
/** Default lease: failover after a crash takes about this long. */
export const DEFAULT_LEASE_MS = 2000;
/** Default bound on clock rate error (1%: ordinary clocks drift by parts per million; this leaves room for VMs). */
export const DEFAULT_MAX_CLOCK_DRIFT = 0.01;
/** Longest singleton name, in UTF-8 bytes. */
export const MAX_QUORUM_NAME_BYTES = 255;
/** Shortest lease accepted. */
const MIN_LEASE_MS = 20;
/**
 * Claim and renewal numbers, increasing across every lease of this process (a stopped and
 * re-declared name, or a second manager on the same mesh, must never take a late reply to an
 * earlier lease's message for one to its own).
 */
let processSeq = 0;

/** Timing of quorum leases: the manager's defaults, and per claim. Every voter of a name must use the same `leaseMs`. */
export interface QuorumTimingOptions {
  /**
   * How long a voter's grant runs after it received the claim or the last renewal, in ms (default
   * 2000). Failover after a crash of the holder takes about this long; shorter means faster
   * failover but more renewals and less tolerance of a slow event loop (the holder must renew
   * within its lease).
   */
  leaseMs?: number;
  /** How often the holder renews, in ms (default `leaseMs / 3`); also how long a claim waits for its majority. Must be below half the holder's lease. */
  renewEveryMs?: number;
  /**
   * Largest rate error of any node's monotonic clock against true time, as a fraction (default
   * 0.01). The holder counts on `leaseMs · (1 - d) / (1 + d)` only. Not a bound on clock offsets:
   * no synchronized clocks are needed.
   */
  maxClockDrift?: number;
  /** Delay per rank before a voter that is not the rendezvous owner of the name claims, in ms (default `renewEveryMs`). */
  claimStaggerMs?: number;
}

/** Options of the manager. */
export interface QuorumLeasesOptions extends QuorumTimingOptions {
  /** Monotonic clock in ms (default `performance.now`); for tests. */
  now?: () => number;
  /** Wall clock in ms (default `Date.now`): the token floor across a full restart; for tests. */
  wallClock?: () => number;
  /** System topic (default `$qs`); every node of a cluster must use the same. For tests that run beside the node's own manager. */
  topic?: string;
}

/** Options of one claim. */
export interface QuorumClaimOptions extends QuorumTimingOptions {
  /** How many nodes declare this singleton (the voters); a majority of it (`floor(n/2)+1`) grants the lease. Required. */
  clusterSize: number;
}

/** Events of a lease handle. */
export interface QuorumLeaseHandleEvents {
  /** This node holds the lease; `token` is the fencing token of this activation (strictly greater than every earlier one). */
  acquired: [{ token: number }];
  /** This node no longer holds the lease. */
  lost: [{ token: number; reason: QuorumLostReason }];
  /**
   * Code `FOUNDATION_QUORUM_MISCONFIGURED`: this node sees more voters than `clusterSize` and
   * refuses to claim and to vote until it sees no more than that; or a voter is configured with
   * another `clusterSize` or `leaseMs` (each refuses the other's claims; the rest go on).
   */
  misconfigured: [FoundationError];
}

/** Counters of one quorum singleton on this node. */
export interface QuorumSingletonStats extends QuorumLeaseStats {
  name: string;
  clusterSize: number;
  leaseMs: number;
}

/** Counters of the manager. */
export interface QuorumLeasesStats {
  /** Names this node declares. */
  names: number;
  /** Messages on `$qs` that were malformed and dropped. */
  messagesDropped: number;
}

/** One declared quorum singleton on this node. */
export class QuorumLeaseHandle extends EventEmitter<QuorumLeaseHandleEvents> {
  /** @internal */
  readonly lease: QuorumLease;
  private timer?: NodeJS.Timeout;
  private timerAt: number | undefined;
  private stopped = false;

  /** @internal */
  constructor(
    readonly name: string,
    readonly config: QuorumLeaseConfig,
    private readonly owner: QuorumLeases,
    private readonly now: () => number,
    make: (handle: QuorumLeaseHandle) => QuorumLease,
  ) {
    super();
    this.lease = make(this);
  }

  /** Whether this node holds the lease right now (reads the clock: check it before a side effect the token does not fence). */
  isHolder(): boolean {
    return !this.stopped && this.lease.isHolder();
  }

  /** This node's fencing token while it holds, else undefined. */
  token(): number | undefined {
    return this.stopped ? undefined : this.lease.token();
  }

  /** The holder and its token as this node knows them: itself while it holds, else the node its own vote is granted to. */
  holder(): { node: string; token: number } | undefined {
    return this.stopped ? undefined : this.lease.holder();
  }

  stats(): QuorumSingletonStats {
    return { name: this.name, clusterSize: this.config.clusterSize, leaseMs: this.config.leaseMs, ...this.lease.stats() };
  }

  /**
   * Leaves: if this node holds, `lost` (`stopped`) fires first, then the voters are told to
   * release its grant (a successor need not wait out the lease) and that this node no longer
   * votes. Stop the worker before calling it (or in the `lost` listener, synchronously), so the
   * successor cannot start while it still runs. Resolves once those messages are queued.
   */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.lease.stop();
    this.stopped = true;
    clearTimeout(this.timer);
    this.owner.forget(this);
  }

  /** @internal Arms the timer for the protocol's next wake-up. */
  schedule(): void {
    if (this.stopped) return;
    const at = this.lease.nextWakeAt();
    if (at === this.timerAt) return;
    clearTimeout(this.timer);
    this.timerAt = at;
    if (at === undefined) return;
    this.timer = setTimeout(
      () => {
        this.timerAt = undefined;
        this.lease.tick();
        this.schedule();
      },
      Math.max(0, Math.ceil(at - this.now())),
    );
    this.timer.unref();
  }

  /** @internal */
  deliver(fn: (lease: QuorumLease) => void): void {
    if (this.stopped) return;
    fn(this.lease);
    this.schedule();
  }
}

function checkNumber(key: string, v: unknown, min: number, max: number, integer = false): number {
  if (typeof v !== 'number' || !Number.isFinite(v) || v < min || v > max || (integer && !Number.isInteger(v))) {
    throw new ConfigError(key, `expected ${integer ? 'an integer' : 'a number'} from ${min} to ${max}, got ${JSON.stringify(v)}`);
  }
  return v;
}

/** The full timing of a claim, checked (`ConfigError` names the key). */
export function resolveQuorumConfig(opts: QuorumClaimOptions, defaults: QuorumTimingOptions = {}): QuorumLeaseConfig {
  const clusterSize = checkNumber('clusterSize', opts.clusterSize, 1, MAX_CLUSTER_SIZE, true);
  const leaseMs = checkNumber('leaseMs', opts.leaseMs ?? defaults.leaseMs ?? DEFAULT_LEASE_MS, MIN_LEASE_MS, 3_600_000);
  const maxClockDrift = checkNumber('maxClockDrift', opts.maxClockDrift ?? defaults.maxClockDrift ?? DEFAULT_MAX_CLOCK_DRIFT, 0, 0.2);
  const holder = holderLeaseMs(leaseMs, maxClockDrift);
  const renewEveryMs = checkNumber('renewEveryMs', opts.renewEveryMs ?? defaults.renewEveryMs ?? leaseMs / 3, 1, holder / 2);
  const claimStaggerMs = checkNumber('claimStaggerMs', opts.claimStaggerMs ?? defaults.claimStaggerMs ?? renewEveryMs, 0, 10 * leaseMs);
  return { clusterSize, leaseMs, renewEveryMs, maxClockDrift, claimStaggerMs };
}

/** The quorum singletons of one node: one system topic, one membership watch, a lease per declared name. */
export class QuorumLeases {
  private readonly handles = new Map<string, QuorumLeaseHandle>();
  /** Members up (not hidden). */
  private readonly up = new Set<string>();
  private readonly warn: RateLimitedLog;
  private readonly offs: Array<() => void> = [];
  private readonly watch: MembersWatch;
  private readonly now: () => number;
  private readonly wallClock: () => number;
  private readonly topic: string;
  private messagesDropped = 0;
  private stopped = false;

  constructor(
    private readonly mesh: InternalMesh,
    private readonly log: Logger,
    private readonly opts: QuorumLeasesOptions = {},
  ) {
    this.warn = new RateLimitedLog(log);
    this.now = opts.now ?? (() => performance.now());
    this.wallClock = opts.wallClock ?? Date.now;
    // Check the defaults now, so a bad option fails at start rather than at the first claim.
    resolveQuorumConfig({ clusterSize: 1 }, opts);
    this.topic = opts.topic ?? QUORUM_TOPIC;
    this.offs.push(mesh.handleSystem(this.topic, (payload, ctx) => this.onMessage(payload, ctx.from, ctx.incarnation)));
    this.watch = mesh.watchMembers((change: MembershipChange) => {
      if (change.member.hidden) return;
      const node = change.member.name;
      if (change.type === 'up') {
        this.up.add(node);
        for (const h of this.handles.values()) h.deliver((l) => l.peerUp(node));
      } else if (change.type === 'down') {
        this.up.delete(node);
        for (const h of this.handles.values()) h.deliver((l) => l.peerDown(node));
      }
    });
    for (const m of this.watch.members) if (!m.hidden) this.up.add(m.name);
  }

  /**
   * Declares the singleton `name` on this node, which makes this node one of its voters, and
   * starts claiming it. Throws `ConfigError` on a bad option (the key named), or when this node
   * already declares `name`.
   */
  claim(name: string, opts: QuorumClaimOptions): QuorumLeaseHandle {
    if (this.stopped) throw new FoundationError(ErrorCodes.NODE_STOPPED, 'quorum leases are stopped on this node');
    if (typeof name !== 'string' || name.length === 0 || Buffer.byteLength(name, 'utf8') > MAX_QUORUM_NAME_BYTES) {
      throw new ConfigError('name', `a quorum singleton name is a non-empty string of at most ${MAX_QUORUM_NAME_BYTES} bytes, got ${JSON.stringify(name)}`);
    }
    if (this.handles.has(name)) throw new ConfigError('name', `this node already declares the quorum singleton "${name}"`);
    const config = resolveQuorumConfig(opts, this.opts);
    const self = this.mesh.self;
    const handle = new QuorumLeaseHandle(name, config, this, this.now, (h) => {
      return new QuorumLease(config, {
        name,
        self: self.name,
        incarnation: self.incarnation,
        now: this.now,
        tokenFloor: () => Math.floor(this.wallClock() * 1000),
        send: (to, msg) => this.send(to, name, msg),
        onEvent: (e) => this.onEvent(h, e),
        nextSeq: () => ++processSeq,
      });
    });
    this.handles.set(name, handle);
    for (const node of this.up) handle.lease.peerUp(node);
    handle.schedule();
    return handle;
  }

  /** Counters. */
  stats(): QuorumLeasesStats {
    return { names: this.handles.size, messagesDropped: this.messagesDropped };
  }

  /** The handle of a declared name. */
  get(name: string): QuorumLeaseHandle | undefined {
    return this.handles.get(name);
  }

  /** Stops every handle (releasing what this node holds) and the topic. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    for (const h of [...this.handles.values()]) await h.stop();
    this.watch.stop();
    for (const off of this.offs.splice(0)) off();
  }

  /** @internal A handle stopped. */
  forget(handle: QuorumLeaseHandle): void {
    if (this.handles.get(handle.name) === handle) this.handles.delete(handle.name);
  }

  private send(to: string, name: string, m: QuorumMessage): void {
    try {
      this.mesh.send(to, this.topic, { n: name, m }, 'control');
    } catch {
      // Gone in between: the protocol never relies on one message arriving.
    }
  }

  private onMessage(payload: unknown, from: string, incarnation: number): void {
    if (from === this.mesh.self.name) return; // the protocol handles this node's own vote in-process
    const env = payload as { n?: unknown; m?: unknown } | null;
    const name = typeof env === 'object' && env !== null ? env.n : undefined;
    const msg = typeof name === 'string' && name.length > 0 && name.length <= MAX_QUORUM_NAME_BYTES ? parseQuorumMessage(env?.m) : undefined;
    if (msg === undefined || typeof name !== 'string') {
      this.messagesDropped++;
      this.warn.warn(`bad:${from}`, { from }, 'malformed quorum singleton message dropped');
      return;
    }
    const handle = this.handles.get(name);
    if (!handle) {
      // Not a voter for this name: say so to a hello or a claim, so the sender stops asking.
      if (msg.t === 'hello' || msg.t === 'claim' || msg.t === 'renew') this.send(from, name, { t: 'nv' });
      return;
    }
    handle.deliver((l) => l.receive(from, incarnation, msg));
  }

  private onEvent(handle: QuorumLeaseHandle, e: QuorumLeaseEvent): void {
    const emit = <K extends keyof QuorumLeaseHandleEvents>(event: K, ...args: QuorumLeaseHandleEvents[K]) => {
      try {
        (handle.emit as (event: K, ...a: QuorumLeaseHandleEvents[K]) => boolean)(event, ...args);
      } catch (err) {
        this.warn.warn(`listener:${handle.name}`, { name: handle.name, error: (err as Error).message }, 'quorum singleton listener threw');
      }
    };
    switch (e.type) {
      case 'acquired':
        this.log.info({ name: handle.name, token: e.token }, 'quorum singleton lease acquired');
        emit('acquired', { token: e.token });
        break;
      case 'lost':
        this.log.info({ name: handle.name, token: e.token, reason: e.reason }, 'quorum singleton lease lost');
        emit('lost', { token: e.token, reason: e.reason });
        break;
      case 'misconfigured': {
        const err = new FoundationError(ErrorCodes.QUORUM_MISCONFIGURED, `quorum singleton "${handle.name}": ${e.detail}`);
        this.log.warn({ name: handle.name, detail: e.detail, code: err.code }, 'quorum singleton misconfigured: this node will not claim it');
        if (handle.listenerCount('misconfigured') > 0) emit('misconfigured', err);
        break;
      }
      case 'extended':
        break;
    }
  }
}
