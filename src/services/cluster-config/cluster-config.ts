/**
 * `node.config`: cluster-wide configuration (Foundation.Config 2.0) on the mesh's internal
 * interface. Local reads, node-local overrides and watches; node-local validators; cluster-wide
 * changes by a real two-phase commit (`two-phase.ts`) on the control lane, system topic
 * `$config`; a cluster config version bumped by every commit; a fetch from a peer before the
 * node reports ready; and an anti-entropy digest that finds and repairs divergence.
 *
 * docs/guides/config.md describes the protocol, the blocked case and the versions.
 */
import { ClusterConfigError, ConfigError, type ConfigVote, ErrorCodes } from '../../errors.js';
import { assertSerializable } from '../../mesh/codec.js';
import type { InternalMesh, MembersWatch } from '../../mesh/interface.js';
import type { MessageContext } from '../../mesh/types.js';
import { isQuietDigestTick } from '../../replication/owned-replica.js';
import { type GridTimer, gridInterval } from '../../util/grid-timer.js';
import type { Logger } from '../../util/logger.js';
import { RateLimitedLog } from '../../util/logger.js';
import { type ConfigChange, type ConfigSnapshot, ConfigStore, checkPath, pathsOverlap, underPrefix } from './store.js';
import {
  type ConfigWrite,
  type CoordinatorResult,
  DEFAULT_TIMING,
  type InDoubtTransaction,
  type Participants,
  parseTwoPhaseMessage,
  TwoPhase,
  type TwoPhaseMessage,
  type Vote,
} from './two-phase.js';

export type { ConfigChange } from './store.js';
export type { InDoubtTransaction, VoteCode } from './two-phase.js';

/** A node-local validator: returns (or resolves) to accept, throws (or rejects) to veto with its message as the reason. */
export type ConfigValidator = (path: string, value: unknown) => unknown;

/** What a watch handler is told besides the new value. */
export interface ConfigWatchEvent {
  /** The watched path. */
  path: string;
  /** The leaf paths that changed (at, above or under the watched path). */
  changed: string[];
  /** `commit` (a cluster-wide transaction), `local` (`config.set` on this node), or `repair` (a fetch from a peer: start-up or anti-entropy). */
  source: 'commit' | 'local' | 'repair';
  /** The cluster config version after the change. */
  version: number;
}

/** Options of `setClusterWide`. */
export interface SetClusterWideOptions {
  /**
   * Milliseconds for the whole transaction: votes must be in by then, and retries after a
   * `locked`, `stale` or `syncing` vote stop then. Default 5000.
   */
  timeoutMs?: number;
}

/** What a committed `setClusterWide` resolves with. */
export interface ClusterConfigCommit {
  /** The transaction id (`coordinator:incarnation:sequence`). */
  tx: string;
  /** The cluster config version it made. */
  version: number;
  /** Every participant's vote (all yes). */
  votes: ConfigVote[];
  /** Participants that acknowledged the commit (applied it) when the promise resolved; the others apply it when the decision reaches them or through recovery. */
  acked: string[];
  /** Attempts made (more than 1 when a concurrent transaction or a lagging version made a participant vote no first). */
  attempts: number;
}

/** Counters of `node.config` on this node. */
export interface ClusterConfigStats {
  /** The cluster config version on this node. */
  version: number;
  /** Whether this node has fetched the cluster config from a peer (or had none to fetch from). */
  synced: boolean;
  /** Transactions committed and aborted on this node (as coordinator or participant). */
  committed: number;
  aborted: number;
  /** Transactions this node holds in doubt now (see `inDoubt()`). */
  inDoubt: number;
  /** Recoveries started (a prepared transaction whose decision did not come). */
  terminations: number;
  /** Votes of this node's validators that were no. */
  vetoes: number;
  /** Digest comparisons that found this node's cluster config behind or different, by kind. */
  divergences: { behind: number; conflict: number };
  /** Repairs installed from a peer (start-up fetch excluded). */
  repairs: number;
  /** Messages from peers that were malformed and dropped. */
  messagesDropped: number;
}

/** The public API of `node.config`. */
export interface ClusterConfigApi {
  /** The value at `path` (dotted): this node's override if set, else the cluster's. A copy: changing it changes nothing. */
  get<T = unknown>(path: string): T | undefined;
  /** Sets (or, with `undefined`, removes) this node's own override at `path`. Not replicated, no validators, no version change. */
  set(path: string, value: unknown): void;
  /** Calls `handler` with the new value whenever the value at `path` (or under it) changes. Returns the function that stops it. */
  watch(path: string, handler: (value: unknown, event: ConfigWatchEvent) => void): () => void;
  /**
   * Registers a node-local validator for every path equal to or under `pathPrefix` (`''`: all).
   * It runs when a cluster-wide change is prepared on this node: returning accepts, throwing or
   * rejecting vetoes the whole transaction with the error's message as the reason. Returns the
   * function that removes it.
   */
  validate(pathPrefix: string, validator: ConfigValidator): () => void;
  /**
   * Sets `path` on every member by a two-phase commit: prepare to every member (and this node),
   * each runs its validators and votes, all yes → commit, any no or a missing vote → abort.
   * Rejects with `ClusterConfigError` `FOUNDATION_CONFIG_ABORTED` (every vote, with reasons) or
   * `FOUNDATION_CONFIG_IN_DOUBT`. `value` undefined deletes the path.
   */
  setClusterWide(path: string, value: unknown, opts?: SetClusterWideOptions): Promise<ClusterConfigCommit>;
  /** The cluster config version on this node (bumped by every commit). */
  version(): number;
  /** Recent committed changes (up to 100), oldest first: version, transaction, coordinator, when, writes. */
  history(): ConfigChange[];
  /** Every effective leaf (overrides applied), sorted by path. */
  entries(): Array<[path: string, value: unknown]>;
  /** Paths this node overrides locally. */
  overrides(): string[];
  /** Transactions this node holds prepared without a decision and is recovering (the blocked case stays here). */
  inDoubt(): InDoubtTransaction[];
  /**
   * Operator's way out of a transaction blocked for good (docs/guides/config.md, "The case that
   * stays blocked"): decides it on this node only. Choosing wrong breaks atomicity. Returns false
   * when this node does not hold `tx` in doubt.
   */
  forceResolve(tx: string, outcome: 'commit' | 'abort'): boolean;
  /** Counters. */
  stats(): ClusterConfigStats;
}

/** Internal options (tests, the composition root). */
export interface ClusterConfigOptions {
  /**
   * How long a member that went down (for any reason but leaving) still counts as a participant,
   * voting `unreachable`: a partitioned or crashed member makes cluster-wide changes abort
   * instead of letting the rest commit without it. Default 60 000.
   */
  downGraceMs?: number;
  /** Anti-entropy digest period. Default 2000. */
  digestMs?: number;
}

/** System topic of the config service. */
export const CONFIG_TOPIC = '$config';
const TICK_MS = 100;
/** A node alone this long after its start counts as synced (the same wait as readiness's for peers that are not there). */
const ALONE_MS = 5000;
const FETCH_TIMEOUT_MS = 3000;
const DEFAULT_TIMEOUT_MS = 5000;
const RETRYABLE: ReadonlySet<string> = new Set(['locked', 'stale', 'syncing']);

type DigestMessage = { t: 'digest'; version: number; tx: string; hash: string };

function isSnapshot(v: unknown): v is ConfigSnapshot {
  if (typeof v !== 'object' || v === null) return false;
  const s = v as Record<string, unknown>;
  return (
    Number.isSafeInteger(s.version) &&
    (s.version as number) >= 0 &&
    typeof s.tx === 'string' &&
    Array.isArray(s.values) &&
    s.values.every((e) => Array.isArray(e) && e.length === 2 && typeof e[0] === 'string' && e[0].length > 0) &&
    Array.isArray(s.history)
  );
}

/** Orders two cluster-config heads: version first, then the transaction id (the same answer on every node). */
function compareHeads(a: { version: number; tx: string }, b: { version: number; tx: string }): number {
  if (a.version !== b.version) return a.version - b.version;
  return a.tx < b.tx ? -1 : a.tx > b.tx ? 1 : 0;
}

function cloneValue<T>(v: T): T {
  return v === undefined || v === null || typeof v !== 'object' ? v : structuredClone(v);
}

export class ClusterConfig implements ClusterConfigApi {
  private readonly store = new ConfigStore();
  private readonly machine: TwoPhase;
  private readonly validators = new Set<{ prefix: string; fn: ConfigValidator }>();
  private readonly watchers = new Set<{ path: string; handler: (value: unknown, e: ConfigWatchEvent) => void }>();
  /** Members up (or suspect), with the incarnation that is up. */
  private readonly up = new Map<string, number>();
  /** Members that went down for a reason other than leaving, and when. */
  private readonly recentlyDown = new Map<string, { inc: number; at: number }>();
  private readonly warn: RateLimitedLog;
  private readonly offs: Array<() => void> = [];
  private readonly downGraceMs: number;
  private readonly digestMs: number;
  private watchHandle?: MembersWatch;
  private digestTimer?: GridTimer;
  private tickTimer?: NodeJS.Timeout;
  private synced = false;
  private startedAt = 0;
  private fetching = false;
  private stopped = false;
  private readonly waiting = new Map<string, (r: CoordinatorResult) => void>();
  private readonly counters = { vetoes: 0, repairs: 0, behind: 0, conflict: 0, messagesDropped: 0 };
  /** Test hook (not public): commits held back instead of sent, except to the nodes listed. */
  private hold: { allow: Set<string>; onHeld?: (tx: string, to: string) => void } | undefined;

  constructor(
    private readonly mesh: InternalMesh,
    private readonly log: Logger,
    opts: ClusterConfigOptions = {},
  ) {
    this.warn = new RateLimitedLog(log);
    this.downGraceMs = opts.downGraceMs ?? 60_000;
    this.digestMs = opts.digestMs ?? 2000;
    this.machine = new TwoPhase(
      mesh.self.name,
      mesh.self.incarnation,
      {
        now: () => Date.now(),
        send: (to, msg) => this.sendProtocol(to, msg),
        version: () => this.store.version,
        validate: (tx, writes) => this.runValidators(tx, writes),
        apply: (tx, writes, version, coordinator) => this.applyCommit(tx, writes, version, coordinator),
      },
      DEFAULT_TIMING,
    );
  }

  // ---------------------------------------------------------------------------------------
  // Lifecycle
  // ---------------------------------------------------------------------------------------

  /** Starts: handles `$config`, watches members, fetches the config from the first peer up. */
  start(): void {
    this.startedAt = Date.now();
    this.offs.push(this.mesh.handleSystem(CONFIG_TOPIC, (payload, ctx) => this.onMessage(payload, ctx)));
    // A replaced link may have lost a prepare or a vote: the transactions in flight with that peer resend them.
    this.offs.push(
      this.mesh.onLinkReplaced((e) => {
        if (this.up.has(e.peer) && !this.stopped) this.machine.linkReplaced(e.peer);
      }),
    );
    this.watchHandle = this.mesh.watchMembers((change) => {
      if (change.member.hidden) return;
      const name = change.member.name;
      if (change.type === 'up') {
        this.up.set(name, change.member.incarnation);
        this.recentlyDown.delete(name);
        this.machine.peerUp(name);
        this.sendDigest([name]);
        this.bootstrap();
      } else if (change.type === 'down') {
        this.up.delete(name);
        if (change.reason !== 'left') this.recentlyDown.set(name, { inc: change.member.incarnation, at: Date.now() });
        else this.recentlyDown.delete(name);
        this.machine.peerDown(name);
      }
      this.armTick();
    });
    for (const m of this.watchHandle.members) this.up.set(m.name, m.incarnation);
    this.bootstrap();
    this.digestTimer = gridInterval(this.digestMs, (n) => this.periodicDigest(isQuietDigestTick(n)));
  }

  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    this.digestTimer?.stop();
    clearTimeout(this.tickTimer);
    this.watchHandle?.stop();
    for (const off of this.offs.splice(0)) off();
    this.watchers.clear();
    // Callers still waiting learn the node stopped (setClusterWide checks `stopped` first).
    for (const [tx, done] of this.waiting) done({ tx, outcome: 'in-doubt', votes: [], acked: [], version: this.store.version });
    this.waiting.clear();
  }

  /**
   * True once this node fetched the cluster config from a peer, or has no peer up to fetch from.
   * Readiness waits for it. A node alone for {@link ALONE_MS} after its start is the first node:
   * synced for good, so its readiness does not flap off while it serves the config to the next one.
   */
  isSynced(): boolean {
    if (this.up.size > 0) return this.synced;
    if (!this.synced && this.startedAt > 0 && Date.now() - this.startedAt >= ALONE_MS) this.synced = true;
    return true;
  }

  /** Fetches the cluster config from a peer up, once: what a node does before it reports ready. */
  private bootstrap(): void {
    if (this.synced || this.fetching || this.stopped) return;
    const peer = [...this.up.keys()][0];
    if (peer === undefined) return;
    this.fetching = true;
    this.fetchFrom(peer, 'start-up').then(
      (ok) => {
        this.fetching = false;
        if (ok) this.synced = true;
        else setTimeout(() => this.bootstrap(), 200).unref();
      },
      () => {
        this.fetching = false;
      },
    );
  }

  /** Asks `peer` for its cluster config and installs it if it is ahead of ours. Resolves false when the peer did not answer. */
  private async fetchFrom(peer: string, why: 'start-up' | 'repair'): Promise<boolean> {
    let snap: unknown;
    try {
      snap = await this.mesh.request(peer, CONFIG_TOPIC, { t: 'snapshot' }, 'control', FETCH_TIMEOUT_MS);
    } catch (err) {
      // A peer without the config service (an older version during a rolling upgrade) has nothing to give.
      if ((err as { code?: string }).code === ErrorCodes.NO_HANDLER) return true;
      this.warn.warn(`fetch:${peer}`, { peer, error: (err as Error).message }, 'cluster config fetch failed');
      return false;
    }
    if (this.stopped) return false;
    if (!isSnapshot(snap)) {
      this.counters.messagesDropped++;
      this.warn.warn(`bad:${peer}`, { from: peer }, 'malformed cluster config snapshot dropped');
      return false;
    }
    if (this.machine.locked !== undefined) return true; // a transaction in progress: the next digest retries
    if (compareHeads(snap, this.store) > 0) {
      if (why === 'repair') this.counters.repairs++;
      const touched = this.store.install(snap);
      this.notify(touched, 'repair');
    }
    return true;
  }

  // ---------------------------------------------------------------------------------------
  // Messages
  // ---------------------------------------------------------------------------------------

  private onMessage(payload: unknown, ctx: MessageContext): unknown {
    if (this.stopped || ctx.from === this.mesh.self.name) return undefined;
    const t = typeof payload === 'object' && payload !== null ? (payload as { t?: unknown }).t : undefined;
    if (t === 'snapshot') return this.store.snapshot();
    if (t === 'digest') {
      const d = payload as DigestMessage;
      if (Number.isSafeInteger(d.version) && typeof d.tx === 'string' && typeof d.hash === 'string') this.onDigest(ctx.from, d);
      else this.dropped(ctx.from);
      return undefined;
    }
    const msg = parseTwoPhaseMessage(payload);
    if (!msg) {
      this.dropped(ctx.from);
      return undefined;
    }
    this.machine.receive(ctx.from, ctx.incarnation, msg);
    this.armTick();
    return undefined;
  }

  private dropped(from: string): void {
    this.counters.messagesDropped++;
    this.warn.warn(`bad:${from}`, { from }, 'malformed cluster config message dropped');
  }

  private sendProtocol(to: string, msg: TwoPhaseMessage): void {
    if (msg.t === 'commit' && this.hold && !this.hold.allow.has(to)) {
      this.hold.onHeld?.(msg.tx, to);
      return;
    }
    try {
      this.mesh.send(to, CONFIG_TOPIC, msg, 'control');
    } catch {
      // Not connected: its down event (or the protocol's deadlines) takes it from here.
    }
  }

  // ---------------------------------------------------------------------------------------
  // Anti-entropy
  // ---------------------------------------------------------------------------------------

  /**
   * The periodic digest goes out when the config moved since the last one, and otherwise every
   * `QUIET_DIGEST_TICKS` periods (as the owned replicas do, on the same epoch-grid ticks): an idle
   * cluster does not wake every member every period for a comparison that cannot have changed. A
   * member that comes up gets one at once.
   */
  private periodicDigest(quietDigestDue: boolean): void {
    const head = `${this.store.version}:${this.store.tx}`;
    if (head === this.digestedHead && !quietDigestDue) return;
    this.digestedHead = head;
    this.sendDigest(this.up.keys());
  }
  private digestedHead = '';

  private sendDigest(to: Iterable<string>): void {
    if (this.stopped) return;
    const nodes = [...to];
    if (nodes.length === 0) return;
    const d: DigestMessage = { t: 'digest', version: this.store.version, tx: this.store.tx, hash: this.store.digest() };
    this.mesh.sendMany(nodes, CONFIG_TOPIC, d, 'control');
  }

  private onDigest(from: string, d: DigestMessage): void {
    // A transaction in progress here moves the version soon: compare after it.
    if (this.machine.locked !== undefined || this.fetching) return;
    const cmp = compareHeads(d, this.store);
    if (cmp === 0) {
      if (d.hash !== this.store.digest()) {
        this.counters.conflict++;
        this.warn.warn('diverged', { peer: from, version: d.version, tx: d.tx }, 'cluster config differs from a peer at the same version and transaction');
      }
      return;
    }
    if (cmp < 0) return; // the peer is behind: it pulls from us when it gets our digest
    if (!this.synced) {
      this.bootstrap();
      return;
    }
    const kind = d.version === this.store.version ? 'conflict' : 'behind';
    this.counters[kind]++;
    this.warn.warn(
      `diverged:${kind}`,
      { peer: from, peerVersion: d.version, peerTx: d.tx, version: this.store.version, tx: this.store.tx, kind },
      kind === 'behind'
        ? 'cluster config behind a peer (a commit this node missed): repairing from it'
        : 'cluster config diverged from a peer at the same version (both sides committed while apart): taking the later transaction',
    );
    this.fetching = true;
    void this.fetchFrom(from, 'repair').finally(() => {
      this.fetching = false;
    });
  }

  // ---------------------------------------------------------------------------------------
  // The two-phase commit's host
  // ---------------------------------------------------------------------------------------

  private armTick(): void {
    if (this.tickTimer || this.stopped || this.machine.pending().length === 0) return;
    this.tickTimer = setTimeout(() => {
      this.tickTimer = undefined;
      this.machine.tick();
      this.armTick();
    }, TICK_MS);
    this.tickTimer.unref();
  }

  private runValidators(tx: string, writes: ConfigWrite[]): void {
    if (!this.isSynced()) {
      this.machine.voted(tx, false, 'syncing', `node ${this.mesh.self.name} has not fetched the cluster config yet`);
      return;
    }
    const checks: Array<{ fn: ConfigValidator; path: string; value: unknown }> = [];
    for (const w of writes) for (const v of this.validators) if (underPrefix(w.path, v.prefix)) checks.push({ fn: v.fn, path: w.path, value: w.value });
    if (checks.length === 0) {
      this.machine.voted(tx, true);
      this.armTick();
      return;
    }
    void (async () => {
      for (const c of checks) await c.fn(c.path, cloneValue(c.value));
    })().then(
      () => {
        this.machine.voted(tx, true);
        this.armTick();
      },
      (err: unknown) => {
        this.counters.vetoes++;
        this.machine.voted(tx, false, 'veto', `node ${this.mesh.self.name}: ${err instanceof Error ? err.message : String(err)}`);
        this.armTick();
      },
    );
  }

  private applyCommit(tx: string, writes: ConfigWrite[], version: number, coordinator: string): void {
    const touched = this.store.applyCommit(tx, writes, version, coordinator, Date.now());
    this.notify(touched, 'commit');
  }

  private notify(touched: string[], source: ConfigWatchEvent['source']): void {
    if (touched.length === 0) return;
    for (const w of [...this.watchers]) {
      const changed = touched.filter((p) => pathsOverlap(p, w.path));
      if (changed.length === 0) continue;
      try {
        w.handler(cloneValue(this.store.get(w.path)), { path: w.path, changed, source, version: this.store.version });
      } catch (err) {
        this.warn.warn('watch', { path: w.path, error: (err as Error).message }, 'config watch handler threw');
      }
    }
  }

  // ---------------------------------------------------------------------------------------
  // The API
  // ---------------------------------------------------------------------------------------

  get<T = unknown>(path: string): T | undefined {
    checkPath(path);
    return cloneValue(this.store.get(path)) as T | undefined;
  }

  set(path: string, value: unknown): void {
    checkPath(path);
    if (value !== undefined) assertSerializable(value);
    this.notify(this.store.setLocal(path, cloneValue(value)), 'local');
  }

  watch(path: string, handler: (value: unknown, event: ConfigWatchEvent) => void): () => void {
    checkPath(path);
    if (typeof handler !== 'function') throw new ConfigError('handler', 'expected a function');
    const w = { path, handler };
    this.watchers.add(w);
    return () => this.watchers.delete(w);
  }

  validate(pathPrefix: string, validator: ConfigValidator): () => void {
    if (pathPrefix !== '') checkPath(pathPrefix, 'pathPrefix');
    if (typeof validator !== 'function') throw new ConfigError('validator', 'expected a function');
    const v = { prefix: pathPrefix, fn: validator };
    this.validators.add(v);
    return () => this.validators.delete(v);
  }

  async setClusterWide(path: string, value: unknown, opts: SetClusterWideOptions = {}): Promise<ClusterConfigCommit> {
    checkPath(path);
    if (value !== undefined) assertSerializable(value);
    const timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    if (!Number.isFinite(timeoutMs) || timeoutMs <= 0)
      throw new ConfigError('timeoutMs', `must be a positive number of milliseconds, got ${String(timeoutMs)}`);
    const deadline = Date.now() + timeoutMs;
    const writes: ConfigWrite[] = [value === undefined ? { path } : { path, value: cloneValue(value) }];
    for (let attempt = 1; ; attempt++) {
      if (this.stopped) throw new ClusterConfigError(ErrorCodes.NODE_STOPPED, 'node is stopped: no cluster-wide config change', '', []);
      const r = await this.attempt(writes, Math.max(1, deadline - Date.now()));
      const votes = r.votes.map(toPublicVote);
      if (this.stopped && r.outcome !== 'committed') {
        throw new ClusterConfigError(
          ErrorCodes.NODE_STOPPED,
          `node stopped during setClusterWide("${path}"); transaction ${r.tx} may still end either way`,
          r.tx,
          votes,
        );
      }
      if (r.outcome === 'committed') return { tx: r.tx, version: r.version, votes, acked: r.acked, attempts: attempt };
      if (r.outcome === 'in-doubt') {
        throw new ClusterConfigError(
          ErrorCodes.CONFIG_IN_DOUBT,
          `setClusterWide("${path}"): commit decided but not acknowledged by any participant in time; transaction ${r.tx} is in doubt`,
          r.tx,
          votes,
        );
      }
      // Votes without a code did not come because the transaction aborted first: not a reason.
      const against = r.votes.filter((v) => v.vote !== 'yes' && v.code !== undefined);
      const retryable = against.length > 0 && against.every((v) => RETRYABLE.has(v.code as string));
      const backoff = Math.min(200, 5 * 2 ** Math.min(attempt, 5)) * (0.5 + Math.random());
      if (!retryable || Date.now() + backoff >= deadline) {
        throw new ClusterConfigError(ErrorCodes.CONFIG_ABORTED, `setClusterWide("${path}") aborted: ${describeVotes(against)}`, r.tx, votes);
      }
      // Behind someone? Catch up first; a node behind us pulls when it gets our digest.
      const stale = against.filter((v) => v.code === 'stale').map((v) => v.node);
      if (stale.length > 0) this.sendDigest(stale.filter((n) => this.up.has(n)));
      await new Promise((res) => setTimeout(res, backoff));
    }
  }

  private attempt(writes: ConfigWrite[], timeoutMs: number): Promise<CoordinatorResult> {
    return new Promise((resolve) => {
      const parts: Participants = {};
      const unreachable: string[] = [];
      for (const [n, inc] of this.up) parts[n] = inc;
      const now = Date.now();
      for (const [n, d] of this.recentlyDown) {
        if (now - d.at > this.downGraceMs) this.recentlyDown.delete(n);
        else if (!(n in parts)) {
          parts[n] = d.inc;
          unreachable.push(n);
        }
      }
      let settled = false;
      const done = (r: CoordinatorResult) => {
        if (settled) return;
        settled = true;
        this.waiting.delete(r.tx);
        resolve(r);
      };
      const tx = this.machine.begin(parts, writes, timeoutMs, done, unreachable);
      if (!settled) this.waiting.set(tx, done);
      this.armTick();
    });
  }

  version(): number {
    return this.store.version;
  }

  history(): ConfigChange[] {
    return this.store.history();
  }

  entries(): Array<[string, unknown]> {
    return this.store.entries().map(([k, v]) => [k, cloneValue(v)]);
  }

  overrides(): string[] {
    return this.store.overrides();
  }

  inDoubt(): InDoubtTransaction[] {
    return this.machine.inDoubt();
  }

  forceResolve(tx: string, outcome: 'commit' | 'abort'): boolean {
    if (outcome !== 'commit' && outcome !== 'abort') throw new ConfigError('outcome', `expected "commit" or "abort", got ${JSON.stringify(outcome)}`);
    const done = this.machine.forceResolve(tx, outcome === 'commit' ? 'committed' : 'aborted');
    if (done) this.log.warn({ tx, outcome }, 'cluster config transaction resolved by an operator');
    return done;
  }

  stats(): ClusterConfigStats {
    const c = this.machine.counters;
    return {
      version: this.store.version,
      synced: this.isSynced(),
      committed: c.committed,
      aborted: c.aborted,
      inDoubt: this.machine.inDoubt().length,
      terminations: c.terminations,
      vetoes: this.counters.vetoes,
      divergences: { behind: this.counters.behind, conflict: this.counters.conflict },
      repairs: this.counters.repairs,
      messagesDropped: this.counters.messagesDropped,
    };
  }

  /**
   * Test hook, not part of the public API: while set, this node (as coordinator) holds back its
   * commit decisions, except those to the nodes in `allow`, and calls `onHeld` for each held one.
   * Lets a multi-process test kill a coordinator between the votes and the commit.
   */
  holdCommitsForTest(opts: { allow?: string[]; onHeld?: (tx: string, to: string) => void } | undefined): void {
    this.hold = opts ? { allow: new Set(opts.allow ?? []), ...(opts.onHeld ? { onHeld: opts.onHeld } : {}) } : undefined;
  }
}

function toPublicVote(v: Vote): ConfigVote {
  return { node: v.node, vote: v.vote, ...(v.code ? { code: v.code } : {}), ...(v.reason !== undefined ? { reason: v.reason } : {}) };
}

function describeVotes(against: Vote[]): string {
  return against.map((v) => `${v.node} ${v.vote === 'none' ? 'did not vote' : 'voted no'} (${v.code}${v.reason ? `: ${v.reason}` : ''})`).join('; ');
}

export type { ConfigVote } from '../../errors.js';
