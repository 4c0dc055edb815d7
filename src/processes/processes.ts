/**
 * `node.processes`: workers placed across the cluster (the Horde layer's facades), on the
 * registry (`node.registry`) and on a replicated table of what each node declared and runs
 * (`process-table.ts`). Every node computes placement from the same facts; nobody coordinates.
 *
 * | Facade | What really happens |
 * |---|---|
 * | `startSingleton(name, type, args)` | every node declares it (`s:` entry); the rendezvous owner among live declarers runs it and registers `name`; a conflict after a partition stops the later registration (`name_conflict`) |
 * | `startSingleton(..., { consistency: 'quorum' })` | a majority lease (`quorum-singleton.ts`): at most one at any moment, fencing tokens |
 * | `startReplicated(name, type, args)` | each node that defined `type` runs `name@<node>` and publishes the spec (`r:` entry), so nodes that join later start theirs |
 * | `startChild(type, args)` | the rendezvous owner among live nodes that defined `type` runs it; its spec is published by its host (`c:` entry); when the host dies it is an orphan on every survivor until the new owner adopts it |
 * | `call(name, msg)` | a registry lookup, then a request to that node; retried across handoff and failover until the timeout |
 *
 * Placement is sticky: a worker stays where it runs while its host lives (a node that joins takes
 * nothing, unless a child asked for `rebalance: 'active'`). Graceful moves (`node.stop()`, active
 * rebalancing) go through `handoff`: the old instance stops, its `handoff(state)` goes to the new
 * one as `ctx.handoff`.
 */
import { randomUUID } from 'node:crypto';
import { ConfigError, ErrorCodes, type FoundationError, RegistryError, WorkerError } from '../errors.js';
import { assertSerializable } from '../mesh/codec.js';
import type { InternalMesh } from '../mesh/interface.js';
import type { MembershipChange } from '../mesh/types.js';
import type { Registry } from '../registry/registry.js';
import { MeshReplicaLink } from '../replication/mesh-replica.js';
import type { Logger } from '../util/logger.js';
import { RateLimitedLog } from '../util/logger.js';
import { explainPlacement, processInfoOf } from './explain.js';
import { HANDOFF_GRACE_MS, Handoffs, releasedBy } from './handoffs.js';
import { checkName, supervision, timeoutOf } from './options.js';
import { ownerOf, rankFor } from './placement.js';
import { type PlacementView, planOwned, planReplicated } from './placement-plan.js';
import { type ChildEntry, ProcessTable, type ProcessTableMessage } from './process-table.js';
import { type QuorumLeaseHandle, QuorumLeases } from './quorum-singleton.js';
import { parseRpc, RETRYABLE, RPC_TOPIC, type Rpc, type RpcReply } from './rpc.js';
import { type RestartPolicy, Supervisor } from './supervisor.js';
import type {
  CallOptions,
  ChildStartOptions,
  ProcessEvent,
  ProcessExplanation,
  ProcessesApi,
  ProcessesStats,
  ProcessInfo,
  ProcessRef,
  SingletonOptions,
  SupervisionOptions,
} from './types.js';
import type { StopReason, WorkerSpec } from './worker.js';

/** System topic of the process table's replication. */
const TABLE_TOPIC = '$proc.table';
/** Period of the table's digest. */
const DIGEST_MS = 2000;
/** Placement runs this long after the last change that may move something (coalesces bursts). */
const SETTLE_MS = 25;
/** How long placement waits for a peer's table before deciding without it. */
const SYNC_WAIT_MS = 2000;
/** An orphan the owner has not adopted after this long is sent to it (the owner may not know of it); again every as long. */
const ORPHAN_FORWARD_MS = 500;
/** Active rebalancing waits for membership to be stable this long. */
const REBALANCE_STABLE_MS = 1000;
/** Pause between two attempts of a call by name (a failover or handoff in progress). */
const RETRY_PAUSE_MS = 25;

/** A worker running on this node, and why. */
interface LocalWorker {
  kind: ProcessInfo['kind'];
  type: string;
  /** Stopped on purpose (handoff, conflict, stopChild, shutdown): the exit is handled by who stopped it. */
  leaving: boolean;
  fencingToken?: number;
  /** The registration failed because another node still held the name (quorum holders retry). */
  unregistered?: boolean;
  rebalance?: 'passive' | 'active';
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms).unref());

export class Processes implements ProcessesApi {
  private readonly types = new Map<string, WorkerSpec<unknown, unknown>>();
  private readonly local = new Map<string, LocalWorker>();
  private readonly supervisor: Supervisor;
  private readonly table: ProcessTable;
  private readonly link: MeshReplicaLink<ProcessTableMessage>;
  private readonly listeners = new Set<(e: ProcessEvent) => void>();
  private readonly offs: Array<() => void> = [];
  private readonly warn: RateLimitedLog;
  /** Last hosts, and singletons a live host is handing off (`HANDOFF_GRACE_MS`). */
  private readonly handoffs: Handoffs;
  /** Quorum singletons this node declared: their lease handles. */
  private readonly leases = new Map<string, QuorumLeaseHandle>();
  private readonly unsyncedSince = new Map<string, number>();
  /** Stops in progress, by name: a new instance of the name waits for the old one's terminate. */
  private readonly exits = new Map<string, Promise<unknown>>();
  /** Orphans this node sent to their owner, and when (sent again every `ORPHAN_FORWARD_MS` while unadopted). */
  private readonly forwarded = new Map<string, number>();
  /** Replicated workers stopped here, ignored until no node publishes them any more. */
  private readonly stoppedReplicated = new Set<string>();
  private reconcileTimer?: NodeJS.Timeout;
  private rebalanceTimer?: NodeJS.Timeout;
  private readyTimer?: NodeJS.Timeout;
  private stopping = false;
  private readonly quorum: QuorumLeases;
  /** Supervision each singleton was declared with. */
  private readonly singletonSupervision = new Map<string, ReturnType<typeof supervision>>();
  /** Lease options each quorum singleton was declared with (a re-claim uses the same). */
  private readonly quorumTiming = new Map<string, { leaseMs?: number }>();
  private readonly counters = { restarts: 0, failovers: 0, handoffsOut: 0, handoffsIn: 0, conflicts: 0, gaveUp: 0, rpcDropped: 0 };

  constructor(
    private readonly mesh: InternalMesh,
    private readonly registry: Registry,
    private readonly log: Logger,
    /** True once the node has joined its cluster (or is alone by design): singletons are not placed before. */
    private readonly isReady: () => boolean,
  ) {
    this.warn = new RateLimitedLog(log);
    // On every node, declaring or not: a node answers the voters' hellos (docs/guides/quorum-singletons.md).
    this.quorum = new QuorumLeases(mesh, log);
    this.supervisor = new Supervisor(mesh.self.name, log);
    this.handoffs = new Handoffs(mesh.self.name);
    this.link = new MeshReplicaLink<ProcessTableMessage>(mesh, log, {
      topic: TABLE_TOPIC,
      digestMs: DIGEST_MS,
      what: 'processes',
      onMembers: (c) => this.onMembers(c),
    });
    this.table = new ProcessTable(mesh.self.name, mesh.self.incarnation, this.link.emit, () => this.schedule());
  }

  private get self(): string {
    return this.mesh.self.name;
  }

  // ---- lifecycle -------------------------------------------------------------------------------

  start(): void {
    this.supervisor.on('started', (e) => {
      const w = this.local.get(e.name);
      if (!w) return;
      if (e.restarts > 0) {
        this.counters.restarts++;
        this.emit({ type: 'started', name: e.name, kind: w.kind, restarts: e.restarts, handoff: false });
      }
    });
    this.supervisor.on('exited', (e) => {
      const w = this.local.get(e.name);
      if (!w || w.leaving || e.willRestart) return;
      // It ended by itself (a transient or temporary worker's normal end): gone for good.
      this.forget(e.name, w);
      this.emit({ type: 'stopped', name: e.name, reason: e.reason });
    });
    this.supervisor.on('gave-up', (e) => {
      const w = this.local.get(e.name);
      this.counters.gaveUp++;
      if (w) this.forget(e.name, w);
      if (w?.fencingToken !== undefined) this.reclaimQuorum(e.name);
      this.emit({ type: 'gave-up', name: e.name, reason: e.reason, restarts: e.restarts });
    });
    this.offs.push(
      this.registry.watch((e) => {
        if (e.type === 'register') {
          this.handoffs.registered(e.owner.name, e.owner.node);
        } else if (e.type === 'conflict') {
          if (e.loser === this.self) void this.lostName(e.name, e.winner);
        } else if (e.type === 'unregister') {
          const w = this.local.get(e.name);
          if (w?.unregistered) this.retryRegistration(e.name, w);
          // Given up by a host that is still up: a graceful stop handing it off, whose adopt request
          // follows on the same lane. Placement leaves it alone for a moment, then looks again.
          if (this.handoffs.unregistered(e.name, (node) => this.link.up.has(node))) {
            setTimeout(() => this.schedule(), HANDOFF_GRACE_MS + 10).unref();
            this.log.debug({ worker: e.name, host: this.handoffs.lastHost(e.name) }, 'processes: a live host let go of a worker, left to its handoff');
          }
          // A name that goes may be one this node should now run.
          this.schedule();
        }
      }),
    );
    this.offs.push(this.mesh.handleSystem(RPC_TOPIC, (payload, ctx) => this.onRpc(payload, ctx.from)));
    this.link.start(this.table);
    this.schedule();
  }

  /**
   * Leaves gracefully: children and available singletons move to the nodes that take them over,
   * with their `handoff` state; replicated copies stop. Then the layer stops.
   */
  async stop(): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    clearTimeout(this.reconcileTimer);
    clearTimeout(this.rebalanceTimer);
    clearInterval(this.readyTimer);
    const others = [...this.link.up];
    const moves: Promise<void>[] = [];
    for (const [name, w] of this.local) {
      if (w.kind === 'child') {
        const spec = this.table.own('child', name);
        const eligible = others.filter((n) => this.table.holders('type', w.type).has(n));
        const to = ownerOf(name, eligible);
        if (spec?.k === 'child' && to) moves.push(this.handOff(name, w, to, { t: 'start-child', name, spec, rebalance: w.rebalance }));
      } else if (w.kind === 'singleton' && w.fencingToken === undefined) {
        const eligible = others.filter((n) => this.table.holders('singleton', name).has(n));
        const to = ownerOf(name, eligible);
        if (to) moves.push(this.handOff(name, w, to, { t: 'adopt-singleton', name }));
      }
    }
    await Promise.allSettled(moves);
    // Quorum singletons: the worker stops first (its terminate done), then the lease is released,
    // so the successor, which starts a round trip after the release, never overlaps it.
    await Promise.allSettled([...this.local].filter(([, w]) => w.fencingToken !== undefined).map(([name, w]) => this.stopLocal(name, w, 'shutdown')));
    await this.quorum.stop().catch(() => {});
    for (const w of this.local.values()) w.leaving = true;
    await this.supervisor.stopAll('shutdown');
    for (const name of this.local.keys()) this.registry.unregister(name);
    this.local.clear();
    // Let the last deltas (unregistrations, handed-off entries) leave before the links close.
    this.table.flush();
    this.link.stop();
    for (const off of this.offs.splice(0)) off();
  }

  // ---- declarations ----------------------------------------------------------------------------

  define<S, A>(type: string, spec: WorkerSpec<S, A>): void {
    checkName('type', type);
    if (typeof spec !== 'object' || spec === null || typeof spec.init !== 'function') {
      throw new ConfigError('spec', `worker type "${type}" needs an object with an init(args, ctx) function`);
    }
    for (const k of ['handleCall', 'handleCast', 'terminate', 'handoff'] as const) {
      if (spec[k] !== undefined && typeof spec[k] !== 'function') throw new ConfigError(`spec.${k}`, `worker type "${type}": ${k} must be a function`);
    }
    if (this.types.has(type)) throw new ConfigError('type', `worker type "${type}" is already defined on this node`);
    this.types.set(type, spec as WorkerSpec<unknown, unknown>);
    this.table.setOwn(type, { k: 'type' });
    this.link.scheduleFlush();
    this.schedule();
  }

  private specOf(type: string): WorkerSpec<unknown, unknown> {
    const spec = this.types.get(type);
    if (!spec) throw new WorkerError(ErrorCodes.WORKER_TYPE_UNKNOWN, `worker type "${type}" is not defined on node ${this.self} (call processes.define first)`);
    return spec;
  }

  async startSingleton(name: string, type: string, args: unknown = null, opts: SingletonOptions = {}): Promise<void> {
    checkName('name', name);
    this.assertRunning();
    this.specOf(type);
    assertSerializable(args);
    const consistency = opts.consistency ?? 'available';
    if (consistency !== 'available' && consistency !== 'quorum') {
      throw new ConfigError('consistency', `expected 'available' or 'quorum', got ${JSON.stringify(consistency)}`);
    }
    const sup = supervision(opts);
    if (consistency === 'quorum') {
      if (!Number.isInteger(opts.clusterSize) || (opts.clusterSize as number) < 1) {
        throw new ConfigError(
          'clusterSize',
          `a quorum singleton needs clusterSize, the number of nodes that declare it (an integer >= 1), got ${opts.clusterSize}`,
        );
      }
    }
    if (this.table.own('singleton', name)) throw new ConfigError('name', `singleton "${name}" is already declared on this node`);
    this.table.setOwn(name, { k: 'singleton', type, args, consistency, ...(consistency === 'quorum' ? { clusterSize: opts.clusterSize } : {}) });
    this.singletonSupervision.set(name, sup);
    this.link.scheduleFlush();
    if (consistency === 'quorum') this.claimQuorum(name, type, args, opts);
    this.schedule();
  }

  /**
   * A quorum singleton that will not run here (it crashed past its restart intensity, or its init
   * failed) gives its lease back, so another voter can take it, and claims again a second later.
   */
  private reclaimQuorum(name: string): void {
    const lease = this.leases.get(name);
    const decl = this.table.own('singleton', name);
    if (!lease || decl?.k !== 'singleton') return;
    this.leases.delete(name);
    void lease
      .stop()
      .catch(() => {})
      .then(() => {
        const t = setTimeout(() => {
          if (!this.stopping && !this.leases.has(name))
            this.claimQuorum(name, decl.type, decl.args, { clusterSize: decl.clusterSize, ...this.quorumTiming.get(name) });
        }, 1000);
        t.unref();
      });
  }

  private claimQuorum(name: string, type: string, args: unknown, opts: SingletonOptions): void {
    if (opts.leaseMs !== undefined) this.quorumTiming.set(name, { leaseMs: opts.leaseMs });
    const lease = this.quorum.claim(name, { clusterSize: opts.clusterSize as number, ...(opts.leaseMs ? { leaseMs: opts.leaseMs } : {}) });
    this.leases.set(name, lease);
    lease.on('misconfigured', (err) => this.log.error({ worker: name, error: err.message }, 'quorum singleton misconfigured: this node will not run it'));
    lease.on('acquired', ({ token }: { token: number }) => {
      if (this.stopping) return;
      const from = this.handoffs.lastHost(name);
      if (from !== undefined && from !== this.self) this.failover(name, from);
      void this.runLocal(name, 'singleton', type, args, { ...(this.singletonSupervision.get(name) ?? supervision({})), fencingToken: token });
    });
    lease.on('lost', () => {
      const w = this.local.get(name);
      if (w) void this.stopLocal(name, w, 'lost_quorum');
    });
  }

  async startReplicated(name: string, type: string, args: unknown = null, opts: SupervisionOptions = {}): Promise<ProcessRef[]> {
    checkName('name', name);
    if (name.includes('@')) throw new ConfigError('name', `a replicated worker's name may not hold "@" (its copies are named name@node), got "${name}"`);
    this.assertRunning();
    assertSerializable(args);
    const sup = supervision(opts);
    const req: Rpc = { t: 'start-replicated', name, type, args, sup };
    const targets = [this.self, ...this.link.up];
    const started = await Promise.all(
      targets.map(async (node) => {
        const r = node === this.self ? await this.handleRpc(req, this.self) : await this.request(node, req, 5000, 'control').catch(() => undefined);
        return r?.ok && r.v === true ? { name: `${name}@${node}`, node } : undefined;
      }),
    );
    const refs = started.filter((r): r is ProcessRef => r !== undefined);
    if (refs.length === 0 && !this.table.holders('type', type).size) {
      throw new WorkerError(ErrorCodes.WORKER_TYPE_UNKNOWN, `no live node defines worker type "${type}"`);
    }
    return refs;
  }

  async stopReplicated(name: string): Promise<void> {
    checkName('name', name);
    const req: Rpc = { t: 'stop-replicated', name };
    await Promise.all([this.handleRpc(req, this.self), ...[...this.link.up].map((n) => this.request(n, req, 5000, 'control').catch(() => undefined))]);
  }

  async startChild(type: string, args: unknown = null, opts: ChildStartOptions = {}): Promise<ProcessRef> {
    checkName('type', type);
    this.assertRunning();
    assertSerializable(args);
    const sup = supervision(opts);
    if (opts.rebalance !== undefined && opts.rebalance !== 'passive' && opts.rebalance !== 'active') {
      throw new ConfigError('rebalance', `expected 'passive' or 'active', got ${JSON.stringify(opts.rebalance)}`);
    }
    const name = opts.name ?? `${type}-${randomUUID()}`;
    checkName('name', name);
    const deadline = Date.now() + timeoutOf(opts);
    if (this.registry.lookup(name) || this.table.holders('child', name).size > 0) {
      throw new RegistryError(ErrorCodes.NAME_REGISTERED, `a worker named "${name}" already exists`, this.registry.lookup(name));
    }
    const spec: ChildEntry = { k: 'child', type, args, ...sup };
    // Which nodes defined the type is in their tables: wait (bounded) for the tables of members just up.
    await this.awaitSynced(deadline);
    for (;;) {
      const eligible = this.live().filter((n) => this.table.holders('type', type).has(n));
      if (eligible.length === 0) throw new WorkerError(ErrorCodes.WORKER_TYPE_UNKNOWN, `no live node defines worker type "${type}"`);
      let lastError: Error | undefined;
      for (const node of rankFor(name, eligible)) {
        const req: Rpc = { t: 'start-child', name, spec, rebalance: opts.rebalance };
        const r =
          node === this.self
            ? await this.handleRpc(req, this.self)
            : await this.request(node, req, Math.max(1, deadline - Date.now()), 'control').catch((e) => e as Error);
        if (r instanceof Error) {
          lastError = r;
          continue;
        }
        if (r.ok) return { name, node };
        if (r.code === ErrorCodes.NAME_REGISTERED) throw new RegistryError(ErrorCodes.NAME_REGISTERED, r.message);
        if (!RETRYABLE.has(r.code)) throw new WorkerError(ErrorCodes.WORKER_CRASHED, r.message);
        lastError = new Error(r.message);
      }
      if (Date.now() >= deadline) {
        throw new WorkerError(ErrorCodes.CALL_TIMEOUT, `child "${name}" could not be placed within the timeout: ${lastError?.message ?? 'no owner answered'}`);
      }
      await sleep(RETRY_PAUSE_MS);
    }
  }

  async stopChild(name: string, opts: CallOptions = {}): Promise<boolean> {
    checkName('name', name);
    const timeoutMs = timeoutOf(opts);
    const orphan = this.table.orphans().some(([n]) => n === name);
    const hosts = [...this.table.holders('child', name).keys()];
    if (!orphan && hosts.length === 0) return false;
    const req: Rpc = { t: 'stop-child', name };
    // Every node forgets the orphan; the host (or hosts, after a partition) stops it.
    await Promise.all([this.handleRpc(req, this.self), ...[...this.link.up].map((n) => this.request(n, req, timeoutMs, 'control').catch(() => undefined))]);
    return true;
  }

  // ---- addressing by name ----------------------------------------------------------------------

  whereis(name: string): ProcessRef | undefined {
    const o = this.registry.lookup(name);
    return o ? { name, node: o.node } : undefined;
  }

  /** Whether `name` exists or is about to (registered, declared, published or orphaned somewhere). */
  private known(name: string): boolean {
    if (this.registry.lookup(name)) return true;
    if (this.table.holders('singleton', name).size > 0 || this.table.holders('child', name).size > 0) return true;
    if (this.table.orphans().some(([n]) => n === name)) return true;
    const at = name.lastIndexOf('@');
    return at > 0 && this.table.holders('replicated', name.slice(0, at)).has(name.slice(at + 1));
  }

  call<T = unknown>(name: string, msg: unknown, opts: CallOptions = {}): Promise<T> {
    return this.route<T>(name, msg, opts, 'call');
  }

  async cast(name: string, msg: unknown, opts: CallOptions = {}): Promise<void> {
    await this.route(name, msg, opts, 'cast');
  }

  private async route<T>(name: string, msg: unknown, opts: CallOptions, kind: 'call' | 'cast'): Promise<T> {
    checkName('name', name);
    const timeoutMs = timeoutOf(opts);
    assertSerializable(msg);
    const deadline = Date.now() + timeoutMs;
    let last = '';
    for (;;) {
      const remaining = deadline - Date.now();
      if (remaining <= 0) break;
      if (!this.known(name)) throw new WorkerError(ErrorCodes.NO_SUCH_WORKER, `no worker named "${name}" runs or is declared in the cluster`);
      const owner = this.registry.lookup(name);
      const proc = (owner?.meta as { proc?: unknown } | null | undefined)?.proc;
      if (owner && proc === undefined) throw new WorkerError(ErrorCodes.NO_SUCH_WORKER, `"${name}" is a registry name, not a worker started by node.processes`);
      if (!owner) {
        // Declared but not running right now (a failover or handoff in progress): wait for it.
        await this.registry.awaitRegistered(name, { timeoutMs: Math.min(remaining, 250) }).catch(() => undefined);
        last = 'not registered';
        continue;
      }
      const req: Rpc = kind === 'call' ? { t: 'call', name, msg, timeoutMs: remaining } : { t: 'cast', name, msg };
      const r =
        owner.node === this.self
          ? await this.handleRpc(req, this.self)
          : await this.request(owner.node, req, remaining + 100, 'events').catch((e) => e as Error);
      if (r instanceof Error) {
        const code = (r as FoundationError).code;
        if (code === ErrorCodes.REQUEST_TIMEOUT) break;
        if (!RETRYABLE.has(code)) throw r;
        last = r.message;
      } else if (r.ok) {
        return r.v as T;
      } else if (RETRYABLE.has(r.code)) {
        last = r.message;
      } else if (r.code === ErrorCodes.CALL_TIMEOUT) {
        throw new WorkerError(ErrorCodes.CALL_TIMEOUT, r.message);
      } else {
        throw new WorkerError(ErrorCodes.WORKER_CRASHED, r.message);
      }
      await sleep(Math.min(RETRY_PAUSE_MS, Math.max(0, deadline - Date.now())));
    }
    throw new WorkerError(ErrorCodes.CALL_TIMEOUT, `${kind} to worker "${name}" got no reply within ${timeoutMs} ms${last ? ` (last: ${last})` : ''}`);
  }

  private async request(node: string, req: Rpc, timeoutMs: number, lane: 'control' | 'events'): Promise<RpcReply> {
    return this.mesh.request<RpcReply>(node, RPC_TOPIC, req, lane, timeoutMs);
  }

  // ---- requests from other nodes ----------------------------------------------------------------

  private onRpc(payload: unknown, from: string): Promise<RpcReply> | RpcReply {
    const req = parseRpc(payload);
    if (!req) {
      this.counters.rpcDropped++;
      this.warn.warn(`rpc:${from}`, { from }, 'malformed processes request dropped');
      return { ok: false, code: ErrorCodes.CONFIG_INVALID, message: 'malformed request' };
    }
    return this.handleRpc(req, from);
  }

  private async handleRpc(req: Rpc, from: string): Promise<RpcReply> {
    if (this.stopping && req.t !== 'info' && req.t !== 'stop-child' && req.t !== 'stop-replicated') {
      return { ok: false, code: ErrorCodes.NODE_STOPPED, message: `node ${this.self} is stopping` };
    }
    try {
      switch (req.t) {
        case 'call': {
          const inst = this.supervisor.get(req.name);
          if (!inst || !this.local.has(req.name)) return { ok: false, code: 'NOT_HERE', message: `"${req.name}" does not run on ${this.self}` };
          return { ok: true, v: await inst.call(req.msg, req.timeoutMs) };
        }
        case 'cast': {
          const inst = this.supervisor.get(req.name);
          if (!inst || !this.local.has(req.name) || !inst.cast(req.msg))
            return { ok: false, code: 'NOT_HERE', message: `"${req.name}" does not run on ${this.self}` };
          return { ok: true };
        }
        case 'start-child': {
          if (this.local.has(req.name)) return { ok: true };
          if (req.moved) await releasedBy(this.registry, req.name, from);
          const started = await this.runLocal(req.name, 'child', req.spec.type, req.spec.args, req.spec, { handoff: req.handoff, rebalance: req.rebalance });
          if (!started) return { ok: false, code: ErrorCodes.NAME_REGISTERED, message: `"${req.name}" is already registered` };
          if (req.moved) this.counters.handoffsIn++;
          if (req.orphanOf !== undefined) this.failover(req.name, req.orphanOf);
          return { ok: true };
        }
        case 'adopt-singleton': {
          this.log.debug(
            { worker: req.name, from, moved: req.moved, registered: this.registry.lookup(req.name)?.node, runsHere: this.local.has(req.name) },
            'processes: adopt request',
          );
          const decl = this.table.own('singleton', req.name);
          if (decl?.k !== 'singleton' || decl.consistency !== 'available')
            return { ok: false, code: 'NOT_HERE', message: `"${req.name}" is not declared on ${this.self}` };
          if (this.local.has(req.name)) return { ok: true };
          if (req.moved) await releasedBy(this.registry, req.name, from);
          const sup = this.singletonSupervision.get(req.name) ?? supervision({});
          const started = await this.runLocal(req.name, 'singleton', decl.type, decl.args, sup, { handoff: req.handoff });
          if (started && req.moved) this.counters.handoffsIn++;
          return started ? { ok: true } : { ok: false, code: ErrorCodes.NAME_REGISTERED, message: `"${req.name}" is already registered` };
        }
        case 'stop-child': {
          this.table.dropOrphan(req.name);
          const w = this.local.get(req.name);
          if (w?.kind === 'child') await this.stopLocal(req.name, w, 'normal');
          return { ok: true };
        }
        case 'start-replicated': {
          this.stoppedReplicated.delete(req.name);
          if (!this.types.has(req.type)) return { ok: true, v: false };
          const copy = `${req.name}@${this.self}`;
          if (!this.local.has(copy)) {
            const ok = await this.runLocal(copy, 'replicated', req.type, req.args, supervision(req.sup));
            if (!ok) return { ok: true, v: false };
          }
          this.table.setOwn(req.name, { k: 'replicated', type: req.type, args: req.args });
          this.link.scheduleFlush();
          return { ok: true, v: true };
        }
        case 'stop-replicated': {
          this.stoppedReplicated.add(req.name);
          this.table.deleteOwn('replicated', req.name);
          this.link.scheduleFlush();
          const copy = `${req.name}@${this.self}`;
          const w = this.local.get(copy);
          if (w) await this.stopLocal(copy, w, 'normal');
          return { ok: true };
        }
        case 'info': {
          const w = this.local.get(req.name);
          const inst = this.supervisor.get(req.name);
          return { ok: true, v: w ? { restarts: this.supervisor.restartsOf(req.name), mailboxDepth: inst?.depth ?? 0, fencingToken: w.fencingToken } : null };
        }
      }
    } catch (err) {
      const e = err as FoundationError;
      return { ok: false, code: e.code ?? 'ERROR', message: e.message ?? String(err) };
    }
  }

  // ---- running workers here ---------------------------------------------------------------------

  /**
   * Registers `name` and starts it under the supervisor. False when another node holds the name
   * (it runs there). A child is published (`c:` entry) as soon as it runs.
   */
  private async runLocal(
    name: string,
    kind: LocalWorker['kind'],
    type: string,
    args: unknown,
    sup: { restart: RestartPolicy; maxRestarts: number; windowMs: number; fencingToken?: number },
    extra: { handoff?: unknown; rebalance?: 'passive' | 'active' } = {},
  ): Promise<boolean> {
    const exiting = this.exits.get(name);
    if (exiting) await exiting;
    if (this.local.has(name) || this.stopping) return this.local.has(name);
    const spec = this.specOf(type);
    const meta: Record<string, unknown> = { proc: kind, type };
    if (sup.fencingToken !== undefined) meta.token = sup.fencingToken;
    const w: LocalWorker = { kind, type, leaving: false, fencingToken: sup.fencingToken, rebalance: extra.rebalance };
    try {
      this.registry.register(name, meta);
    } catch (err) {
      if ((err as FoundationError).code !== ErrorCodes.NAME_REGISTERED || sup.fencingToken === undefined) return false;
      // A quorum holder runs on its lease, whatever the registry still shows; it registers once the stale name goes.
      w.unregistered = true;
    }
    this.local.set(name, w);
    if (kind === 'child') {
      this.table.setOwn(name, { k: 'child', type, args, restart: sup.restart, maxRestarts: sup.maxRestarts, windowMs: sup.windowMs });
      this.link.scheduleFlush();
    }
    try {
      await this.supervisor.start(name, spec, args, { ...sup, handoff: extra.handoff });
    } catch (error) {
      this.warn.warn(`init:${name}`, { worker: name, error: (error as Error)?.message }, 'worker failed to start');
      this.forget(name, w);
      if (w.fencingToken !== undefined) this.reclaimQuorum(name);
      this.emit({ type: 'gave-up', name, reason: { error }, restarts: 0 });
      throw error;
    }
    this.emit({
      type: 'started',
      name,
      kind,
      restarts: 0,
      handoff: extra.handoff !== undefined,
      ...(sup.fencingToken === undefined ? {} : { fencingToken: sup.fencingToken }),
    });
    return true;
  }

  private retryRegistration(name: string, w: LocalWorker): void {
    try {
      this.registry.register(name, { proc: w.kind, type: w.type, ...(w.fencingToken === undefined ? {} : { token: w.fencingToken }) });
      w.unregistered = false;
    } catch {
      // Still held elsewhere: the next unregister tries again.
    }
  }

  /** Stops a local worker on purpose and forgets it here (registry name, table entry). */
  private async stopLocal(name: string, w: LocalWorker, reason: StopReason): Promise<void> {
    w.leaving = true;
    const exit = this.supervisor.stop(name, reason);
    this.exits.set(name, exit);
    try {
      await exit;
    } finally {
      if (this.exits.get(name) === exit) this.exits.delete(name);
    }
    this.forget(name, w);
    this.emit({ type: 'stopped', name, reason });
  }

  /** Forgets a worker that no longer runs here. */
  private forget(name: string, w: LocalWorker): void {
    if (this.local.get(name) !== w) return;
    this.local.delete(name);
    if (!w.unregistered && this.registry.lookup(name)?.node === this.self) this.registry.unregister(name);
    if (w.kind === 'child') this.table.deleteOwn('child', name);
    this.link.scheduleFlush();
    this.schedule();
  }

  /** Another node's registration of `name` won: the local instance stops (`name_conflict`), unless it is a quorum holder. */
  private async lostName(name: string, winner: string): Promise<void> {
    const w = this.local.get(name);
    if (!w) return;
    if (w.fencingToken !== undefined) {
      w.unregistered = true;
      return;
    }
    this.counters.conflicts++;
    this.emit({ type: 'conflict', name, winner });
    this.log.warn({ worker: name, winner }, 'worker stopped: another node holds its name (name_conflict)');
    await this.stopLocal(name, w, 'name_conflict');
  }

  /** Moves a local worker to `to` with its handoff state. If `to` cannot take it, it stays here. */
  private async handOff(name: string, w: LocalWorker, to: string, req: Extract<Rpc, { t: 'start-child' | 'adopt-singleton' }>): Promise<void> {
    const inst = this.supervisor.get(name);
    w.leaving = true;
    await this.supervisor.stop(name, 'handoff');
    let state: unknown;
    try {
      state = inst?.handoffState();
      assertSerializable(state);
    } catch (err) {
      this.warn.warn(`handoff:${name}`, { worker: name, error: (err as Error).message }, 'handoff state not serializable: moving without it');
      state = undefined;
    }
    this.registry.unregister(name);
    // The unregistration goes out (control lane, next microtask) before the request (same lane).
    await new Promise<void>((r) => setImmediate(r));
    const r = await this.request(to, { ...req, moved: true, handoff: state }, 5000, 'control').catch((e) => ({
      ok: false as const,
      code: 'ERROR',
      message: (e as Error).message,
    }));
    this.log.debug({ worker: name, to, ok: r.ok }, 'processes: handed off');
    if (r.ok) {
      this.counters.handoffsOut++;
      this.local.delete(name);
      if (w.kind === 'child') this.table.deleteOwn('child', name);
      this.link.scheduleFlush();
      this.emit({ type: 'handoff', name, to });
      return;
    }
    this.warn.warn(`handoff-failed:${name}`, { worker: name, to, error: r.message }, 'handoff refused: the worker restarts where its owner computes');
    this.local.delete(name);
    if (!this.stopping) {
      // Not moved: run it here again (its state is lost only if it had none to hand over).
      const spec = w.kind === 'child' ? this.table.own('child', name) : undefined;
      if (spec?.k === 'child') void this.runLocal(name, 'child', spec.type, spec.args, spec, { handoff: state, rebalance: w.rebalance }).catch(() => {});
      else this.schedule();
    }
  }

  // ---- placement ------------------------------------------------------------------------------

  /** Live members taking part in placement: this node and every up, non-hidden member. */
  private live(): string[] {
    return [this.self, ...this.link.up];
  }

  private onMembers(change: MembershipChange): void {
    if (change.type === 'up' && !change.member.hidden) this.unsyncedSince.set(change.member.name, Date.now());
    if (change.type === 'down') {
      this.unsyncedSince.delete(change.member.name);
      // A host that goes down hands nothing off: what it gave up is placed at once.
      this.handoffs.hostDown(change.member.name);
    }
    this.schedule();
    if (change.type === 'up' || change.type === 'down') this.scheduleRebalance();
  }

  /** Placement runs soon (coalescing bursts of changes). */
  private schedule(): void {
    if (this.stopping || this.reconcileTimer) return;
    this.reconcileTimer = setTimeout(() => {
      this.reconcileTimer = undefined;
      this.reconcile();
    }, SETTLE_MS);
    this.reconcileTimer.unref();
  }

  /**
   * Placement as this node sees it: it starts what it owns and nobody runs. Singletons and
   * orphans wait until this node holds every live peer's table (a peer's registry map arrives
   * before its table, on the same lane, so the registry is complete too), or `SYNC_WAIT_MS`.
   */
  private reconcile(): void {
    if (this.stopping) return;
    for (const name of this.stoppedReplicated) if (this.table.holders('replicated', name).size === 0) this.stoppedReplicated.delete(name);
    const view: PlacementView = {
      self: this.self,
      live: this.live(),
      table: this.table,
      registered: (name) => this.registry.lookup(name)?.node,
      runsHere: (name) => this.local.has(name),
      defines: (type) => this.types.has(type),
      stoppedReplicated: this.stoppedReplicated,
      now: Date.now(),
      forwardAfterMs: ORPHAN_FORWARD_MS,
      handingOff: (name) => this.handoffs.handingOff(name),
    };
    for (const a of planReplicated(view)) {
      if (a.start === 'replicated') void this.handleRpc({ t: 'start-replicated', name: a.name, type: a.type, args: a.args, sup: {} }, this.self);
    }
    if (!this.isReady()) {
      this.retryWhenReady();
      return;
    }
    if (this.unsynced().length > 0) {
      setTimeout(() => this.schedule(), 50).unref();
      return;
    }
    for (const a of planOwned(view)) {
      if (a.start === 'singleton') {
        const from = this.handoffs.lastHost(a.name);
        this.log.debug({ worker: a.name, live: view.live, lastHost: from }, 'processes: placement starts a singleton here');
        void this.runLocal(a.name, 'singleton', a.type, a.args, this.singletonSupervision.get(a.name) ?? supervision({}))
          .then((ok) => {
            if (ok && from !== undefined && from !== this.self) this.failover(a.name, from);
          })
          .catch(() => {});
      } else if (a.start === 'orphan') {
        void this.runLocal(a.name, 'child', a.spec.type, a.spec.args, a.spec)
          .then((ok) => ok && this.failover(a.name, a.from))
          .catch(() => {});
      } else if (a.start === 'forward' && Date.now() - (this.forwarded.get(a.name) ?? 0) >= ORPHAN_FORWARD_MS) {
        this.forwarded.set(a.name, Date.now());
        void this.request(a.to, { t: 'start-child', name: a.name, spec: a.spec, orphanOf: a.from }, 5000, 'control').catch(() => {});
      }
    }
    for (const name of this.forwarded.keys()) if (!this.table.orphans().some(([n]) => n === name)) this.forwarded.delete(name);
    // Orphans age into forwarding: look again while there are any.
    if (this.table.orphans().length > 0) setTimeout(() => this.schedule(), ORPHAN_FORWARD_MS).unref();
  }

  private failover(name: string, from: string): void {
    this.counters.failovers++;
    this.emit({ type: 'failover', name, from });
  }

  /** Members up whose process table has not arrived yet (and has not been waited for `SYNC_WAIT_MS`). */
  private unsynced(): string[] {
    const now = Date.now();
    return this.live().filter((n) => !this.table.syncedWith(n) && now - (this.unsyncedSince.get(n) ?? 0) < SYNC_WAIT_MS);
  }

  private async awaitSynced(deadline: number): Promise<void> {
    while (this.unsynced().length > 0 && Date.now() < deadline) await sleep(10);
  }

  private retryWhenReady(): void {
    if (this.readyTimer) return;
    this.readyTimer = setInterval(() => {
      if (!this.isReady()) return;
      clearInterval(this.readyTimer);
      this.readyTimer = undefined;
      this.schedule();
    }, 100);
    this.readyTimer.unref();
  }

  /** Active rebalancing: once membership has been stable, children asking for it move to their owner. */
  private scheduleRebalance(): void {
    clearTimeout(this.rebalanceTimer);
    this.rebalanceTimer = setTimeout(() => this.rebalance(), REBALANCE_STABLE_MS);
    this.rebalanceTimer.unref();
  }

  private rebalance(): void {
    if (this.stopping) return;
    const live = this.live();
    for (const [name, w] of [...this.local]) {
      if (w.kind !== 'child' || w.rebalance !== 'active' || w.leaving) continue;
      const spec = this.table.own('child', name);
      const eligible = live.filter((n) => this.table.holders('type', w.type).has(n));
      const to = ownerOf(name, eligible);
      if (spec?.k === 'child' && to && to !== this.self) void this.handOff(name, w, to, { t: 'start-child', name, spec, rebalance: 'active' });
    }
  }

  // ---- views -----------------------------------------------------------------------------------

  list(): ProcessInfo[] {
    const out: ProcessInfo[] = [];
    for (const o of this.registry.select('*')) {
      const info = processInfoOf(o.name, o.node, o.meta);
      if (info) out.push(info);
    }
    return out;
  }

  async explain(name: string): Promise<ProcessExplanation> {
    checkName('name', name);
    const registry = this.registry.lookup(name);
    const base = explainPlacement(name, this.table, this.live(), registry !== undefined, (n) => this.leases.get(n)?.holder()?.token);
    let hostInfo: { restarts?: number; mailboxDepth?: number; fencingToken?: number } = {};
    if (registry) {
      const r =
        registry.node === this.self
          ? await this.handleRpc({ t: 'info', name }, this.self)
          : await this.request(registry.node, { t: 'info', name }, 1000, 'control').catch(() => undefined);
      if (r?.ok && r.v) hostInfo = r.v as typeof hostInfo;
    }
    return {
      name,
      ...base,
      ...(registry ? { node: registry.node, registry } : {}),
      ...(hostInfo.restarts !== undefined ? { restarts: hostInfo.restarts, mailboxDepth: hostInfo.mailboxDepth } : {}),
      ...(hostInfo.fencingToken !== undefined ? { fencingToken: hostInfo.fencingToken } : {}),
    };
  }

  watch(listener: (event: ProcessEvent) => void): () => void {
    if (typeof listener !== 'function') throw new ConfigError('listener', 'expected a function');
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private emit(e: ProcessEvent): void {
    for (const l of this.listeners) {
      try {
        l(e);
      } catch (err) {
        this.warn.warn('watch', { error: (err as Error).message }, 'processes watch listener threw');
      }
    }
  }

  stats(): ProcessesStats {
    let depth = 0;
    let maxDepth = 0;
    for (const name of this.local.keys()) {
      const d = this.supervisor.get(name)?.depth ?? 0;
      depth += d;
      if (d > maxDepth) maxDepth = d;
    }
    return {
      running: this.local.size,
      restarts: this.counters.restarts,
      failovers: this.counters.failovers,
      handoffsOut: this.counters.handoffsOut,
      handoffsIn: this.counters.handoffsIn,
      conflicts: this.counters.conflicts,
      gaveUp: this.counters.gaveUp,
      orphans: this.table.orphans().length,
      mailboxDepth: depth,
      maxMailboxDepth: maxDepth,
      messagesDropped: this.link.messagesDropped + this.counters.rpcDropped,
    };
  }

  private assertRunning(): void {
    if (this.stopping) throw new WorkerError(ErrorCodes.NODE_STOPPED, 'node is stopping: no new workers');
  }
}
