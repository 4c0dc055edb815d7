/**
 * The public types of `node.processes` (docs/guides/processes.md): options, results, events,
 * counters, and the interface the quorum lease manager implements for it.
 */
import type { NameOwner } from '../registry/registry.js';
import type { SingletonConsistency } from './process-table.js';
import type { RestartPolicy } from './supervisor.js';
import type { StopReason, WorkerSpec } from './worker.js';

export type { SingletonConsistency } from './process-table.js';

/** Supervision of a placed worker. */
export interface SupervisionOptions {
  /** `permanent` (default): always restarted; `transient`: only after a crash; `temporary`: never. */
  restart?: RestartPolicy;
  /** Most restarts within `windowMs` before the node gives up on the worker (event `gave-up`). Default 3. */
  maxRestarts?: number;
  /** The restart intensity window, in ms. Default 5000. */
  windowMs?: number;
}

/** Options of `startSingleton`. */
export interface SingletonOptions extends SupervisionOptions {
  /**
   * `'available'` (default): runs on the owner chosen over reachable members; during a partition
   * each side may run one, after the heal exactly one survives (the other stops with
   * `name_conflict`). `'quorum'`: at most one instance at any moment, given `clusterSize`; the side
   * without a majority runs none (docs/guides/processes.md, docs/guides/quorum-singletons.md).
   */
  consistency?: SingletonConsistency;
  /** For `'quorum'`: how many nodes declare this singleton (the voters); a majority of it is needed. Required with `'quorum'`. */
  clusterSize?: number;
  /** For `'quorum'`: the lease a majority grants, in ms (failover after a crash takes about one lease). Default from `quorum-singleton.ts`. */
  leaseMs?: number;
}

/** Options of `startChild`. */
export interface ChildStartOptions extends SupervisionOptions {
  /** The child's registry name, unique in the cluster. Default `<type>-<uuid>`. */
  name?: string;
  /**
   * `'passive'` (default): the child stays where it runs until its host goes. `'active'`: when
   * membership changes and the rendezvous owner is another node, the child moves there through
   * handoff (after membership has been stable for a second).
   */
  rebalance?: 'passive' | 'active';
  /** How long to try placing it (owners that die meanwhile are skipped), in ms. Default 5000. */
  timeoutMs?: number;
}

/** Where a worker runs. */
export interface ProcessRef {
  readonly name: string;
  readonly node: string;
}

/** Options of `call` and `cast` by name. */
export interface CallOptions {
  /** Overall deadline, retries included, in ms. Default 5000. */
  timeoutMs?: number;
}

/** What a running worker is, as `/processes` and `list()` show it. */
export interface ProcessInfo {
  readonly name: string;
  readonly node: string;
  readonly kind: 'singleton' | 'replicated' | 'child';
  readonly type: string;
  readonly fencingToken?: number;
}

/** `explain(name)`: where a worker runs, why, and the mechanism beneath. */
export interface ProcessExplanation {
  readonly name: string;
  readonly kind: 'singleton' | 'replicated' | 'child' | 'unknown';
  /** The node that runs it now (its registry entry), if any. */
  readonly node?: string;
  /** The registry entry beneath (`node.registry.lookup(name)`). */
  readonly registry?: NameOwner;
  readonly type?: string;
  readonly consistency?: SingletonConsistency;
  /** How the node was chosen. */
  readonly placement: string;
  /** Candidates in rendezvous order (the first is the owner when nothing runs it yet). */
  readonly candidates: string[];
  /** Quorum singletons: the fencing token of the running activation. */
  readonly fencingToken?: number;
  /** Restarts on its current host, and its mailbox depth (asked of the host). */
  readonly restarts?: number;
  readonly mailboxDepth?: number;
  /** True when its host died and no node has adopted it yet. */
  readonly orphan?: boolean;
}

/** Events of `processes.watch`. */
export type ProcessEvent =
  /** A worker started here: `restarts` > 0 for a local restart, `handoff` when it continues a moved one, `fencingToken` for a quorum singleton's activation. */
  | { type: 'started'; name: string; kind: ProcessInfo['kind']; restarts: number; handoff: boolean; fencingToken?: number }
  | { type: 'stopped'; name: string; reason: StopReason }
  | { type: 'gave-up'; name: string; reason: StopReason; restarts: number }
  | { type: 'conflict'; name: string; winner: string }
  | { type: 'failover'; name: string; from?: string }
  | { type: 'handoff'; name: string; to: string };

/** Counters of the processes layer on this node. */
export interface ProcessesStats {
  /** Workers running on this node. */
  running: number;
  restarts: number;
  /** Workers this node started because their previous host died (singletons and adopted children). */
  failovers: number;
  /** Workers moved off this node / onto this node with their state. */
  handoffsOut: number;
  handoffsIn: number;
  /** Workers this node stopped because another node's registration won (`name_conflict`). */
  conflicts: number;
  /** Workers given up after too many restarts. */
  gaveUp: number;
  /** Children whose host died, not adopted yet, as this node sees them. */
  orphans: number;
  /** Messages waiting in the mailboxes of this node's workers: sum and largest. */
  mailboxDepth: number;
  maxMailboxDepth: number;
  /** Malformed replication or request messages dropped. */
  messagesDropped: number;
}

/** The public API of `node.processes` (docs/guides/processes.md). */
export interface ProcessesApi {
  /** Declares worker type `type` on this node (every node that may run it declares it, before use). */
  define<S, A>(type: string, spec: WorkerSpec<S, A>): void;
  /** Declares singleton `name` on this node; one node of those that declared it runs it. Resolves once declared. */
  startSingleton(name: string, type: string, args?: unknown, opts?: SingletonOptions): Promise<void>;
  /** One instance on every node that defined `type`, named `name@<node>`, including nodes that join later. Resolves with the instances started now. */
  startReplicated(name: string, type: string, args?: unknown, opts?: SupervisionOptions): Promise<ProcessRef[]>;
  /** Stops every copy of replicated worker `name` (on the nodes reachable now). */
  stopReplicated(name: string): Promise<void>;
  /** Starts a child on the rendezvous owner among live nodes that defined `type`; resolves with where it runs. */
  startChild(type: string, args?: unknown, opts?: ChildStartOptions): Promise<ProcessRef>;
  /** Stops a child for good, wherever it runs; false when no such child exists. */
  stopChild(name: string, opts?: CallOptions): Promise<boolean>;
  /** Calls worker `name` wherever it runs; retries across handoff and failover until `timeoutMs`. */
  call<T = unknown>(name: string, msg: unknown, opts?: CallOptions): Promise<T>;
  /** Casts to worker `name` wherever it runs; resolves once a running instance took the message (retried like `call`). */
  cast(name: string, msg: unknown, opts?: CallOptions): Promise<void>;
  /** Where `name` runs now, from local state. */
  whereis(name: string): ProcessRef | undefined;
  /** Every worker running in the cluster, as this node sees it. */
  list(): ProcessInfo[];
  /** Where a worker runs, why, and its registry entry (asks its host for restarts and mailbox depth). */
  explain(name: string): Promise<ProcessExplanation>;
  /** Calls `listener` on every event of this node's workers. Returns the function that stops it. */
  watch(listener: (event: ProcessEvent) => void): () => void;
  stats(): ProcessesStats;
}
