/**
 * `node.registry`: a cluster-wide registry of names (the Horde.Registry layer), replicated in the
 * Phoenix.Tracker style on the mesh's internal interface.
 *
 * Every node owns its registrations and pushes each change to every member at once (one delta
 * per turn of the event loop, on the control lane); a digest every `DIGEST_MS` repairs what a
 * replaced link lost; a node's registrations go when it goes down. Lookups are local reads.
 * Conflicts (one name registered on two sides of a partition) resolve the same way on every
 * node: the earlier hybrid-logical-clock stamp wins, ties on the node name (`name-table.ts`).
 */
import { ConfigError, ErrorCodes, RegistryError } from '../errors.js';
import { assertSerializable } from '../mesh/codec.js';
import type { InternalMesh } from '../mesh/interface.js';
import { MeshReplicaLink } from '../replication/mesh-replica.js';
import type { Logger } from '../util/logger.js';
import { RateLimitedLog } from '../util/logger.js';
import { GlobCache, literalPrefix, SortedNames } from './glob.js';
import { HybridClock } from './hlc.js';
import { type NameEvent, type NameOwner, NameTable, type NameTableMessage } from './name-table.js';

export type { NameEvent, NameOwner } from './name-table.js';

/** The public registry API. */
export interface RegistryApi {
  /**
   * Registers `name` on this node, with serializable `meta`. Throws `FOUNDATION_NAME_REGISTERED`
   * when a node (this one included) already owns it as far as this node sees. Two nodes that
   * cannot see each other (a partition) may both register it: when they meet, one keeps it on
   * every node and the other gets a `conflict` event.
   */
  register(name: string, meta?: unknown): NameOwner;
  /**
   * Replaces the `meta` of this node's registration of `name` and replicates it (an `update`
   * event on every node's `watch`). The registration keeps its hybrid-logical-clock stamp, so an
   * update never changes who wins a conflict. False when this node does not hold `name`.
   */
  update(name: string, meta: unknown): boolean;
  /** Removes this node's registration of `name`; false when this node does not hold it. */
  unregister(name: string): boolean;
  /** The owner of `name`, from local state (no network). */
  lookup(name: string): NameOwner | undefined;
  /** Names matching a glob (`*` matches any run of characters, `?` one character), in name order. */
  select(pattern: string): NameOwner[];
  /** Names whose `meta` is an object holding every key of `meta` with an equal (`===`) value, in name order. */
  match(meta: Record<string, unknown>): NameOwner[];
  /** Number of names registered in the cluster, as this node sees it. */
  count(): number;
  /** Calls `listener` on every `register`, `update`, `unregister` and `conflict` this node sees. Returns the function that stops it. */
  watch(listener: (event: NameEvent) => void): () => void;
  /** Resolves with the owner once `name` is registered (at once if it is); rejects with `FOUNDATION_REGISTRY_TIMEOUT` after `timeoutMs` (default 5000). */
  awaitRegistered(name: string, opts?: { timeoutMs?: number; signal?: AbortSignal }): Promise<NameOwner>;
  /** Counters. */
  stats(): RegistryStats;
}

/** Counters of the registry on this node. */
export interface RegistryStats {
  /** Names registered in the cluster, as this node sees it. */
  names: number;
  /** Of those, names this node holds. */
  own: number;
  /** Registrations, updates of their meta, and unregistrations this node has seen (its own and others'). */
  registers: number;
  updates: number;
  unregisters: number;
  /** Conflicts this node has seen resolved (a name held on two sides of a partition). */
  conflicts: number;
  /** Replication messages from peers that were malformed and dropped. */
  messagesDropped: number;
}

/** System topic of the registry's replication messages. */
export const REGISTRY_TOPIC = '$reg';
/** Period of the digest that repairs lost deltas. */
const DIGEST_MS = 2000;
/** Longest name, in UTF-8 bytes. */
export const MAX_NAME_BYTES = 255;

function checkName(name: unknown): asserts name is string {
  if (typeof name !== 'string' || name.length === 0) throw new ConfigError('name', `a registry name is a non-empty string, got ${JSON.stringify(name)}`);
  if (Buffer.byteLength(name, 'utf8') > MAX_NAME_BYTES) throw new ConfigError('name', `a registry name is at most ${MAX_NAME_BYTES} bytes in UTF-8`);
}

const byName = (a: NameOwner, b: NameOwner): number => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0);

export class Registry implements RegistryApi {
  private readonly table: NameTable;
  /** Carries the table's messages on the mesh (`$reg`, control lane, digest, resync on link replacement). */
  private readonly link: MeshReplicaLink<NameTableMessage>;
  private readonly listeners = new Set<(e: NameEvent) => void>();
  private readonly warn: RateLimitedLog;
  private stopped = false;
  private readonly counters = { registers: 0, updates: 0, unregisters: 0, conflicts: 0 };
  private readonly globs = new GlobCache();
  /** The resolved names in order, for selects with a literal prefix (kept in step by `dispatch`). */
  private readonly sortedNames = new SortedNames(() => [...this.table.owned()].map((o) => o.name));

  constructor(
    private readonly mesh: InternalMesh,
    log: Logger,
    clock = new HybridClock(),
  ) {
    this.warn = new RateLimitedLog(log);
    this.link = new MeshReplicaLink<NameTableMessage>(mesh, log, { topic: REGISTRY_TOPIC, digestMs: DIGEST_MS, what: 'registry' });
    this.table = new NameTable(mesh.self.name, mesh.self.incarnation, clock, this.link.emit, (e) => this.dispatch(e));
  }

  private dispatch(e: NameEvent): void {
    if (e.type === 'register') {
      this.counters.registers++;
      this.sortedNames.add(e.owner.name);
    } else if (e.type === 'update') this.counters.updates++;
    else if (e.type === 'unregister') {
      this.counters.unregisters++;
      this.sortedNames.remove(e.name);
    } else this.counters.conflicts++;
    for (const l of this.listeners) {
      try {
        l(e);
      } catch (err) {
        this.warn.warn('watch', { error: (err as Error).message }, 'registry watch listener threw');
      }
    }
  }

  /** Starts replicating: members already up get this node's registrations, later ones when they come up. */
  start(): void {
    this.link.start(this.table);
  }

  /** Stops replicating; this node's registrations leave with the node (peers drop them when it goes down). */
  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    this.link.stop();
    this.listeners.clear();
  }

  register(name: string, meta: unknown = null): NameOwner {
    checkName(name);
    if (this.stopped) throw new RegistryError(ErrorCodes.NODE_STOPPED, 'node is stopped: the registry takes no new names');
    assertSerializable(meta);
    const r = this.table.register(name, meta);
    if (!r.ok) {
      throw new RegistryError(
        ErrorCodes.NAME_REGISTERED,
        `"${name}" is already registered by ${r.owner.node === this.mesh.self.name ? 'this node' : `node ${r.owner.node}`}`,
        r.owner,
      );
    }
    this.link.scheduleFlush();
    return r.owner;
  }

  update(name: string, meta: unknown = null): boolean {
    checkName(name);
    if (this.stopped) throw new RegistryError(ErrorCodes.NODE_STOPPED, 'node is stopped: the registry takes no updates');
    assertSerializable(meta);
    const updated = this.table.update(name, meta);
    if (updated) this.link.scheduleFlush();
    return updated;
  }

  unregister(name: string): boolean {
    checkName(name);
    const removed = this.table.unregister(name);
    if (removed) this.link.scheduleFlush();
    return removed;
  }

  lookup(name: string): NameOwner | undefined {
    return this.table.lookup(name);
  }

  select(pattern: string): NameOwner[] {
    if (typeof pattern !== 'string') throw new ConfigError('pattern', 'expected a glob string');
    const re = this.globs.get(pattern);
    const prefix = literalPrefix(pattern);
    if (prefix.length > 0) {
      // Only the names under the prefix, already in order; `prefix*` matches every one of them.
      const all = pattern.length === prefix.length + 1 && pattern.endsWith('*');
      const under: NameOwner[] = [];
      for (const name of this.sortedNames.withPrefix(prefix)) {
        const o = all || re.test(name) ? this.table.lookup(name) : undefined;
        if (o) under.push(o);
      }
      return under;
    }
    const out: NameOwner[] = [];
    for (const o of this.table.owned()) if (re.test(o.name)) out.push(o);
    return out.sort(byName);
  }

  match(meta: Record<string, unknown>): NameOwner[] {
    if (typeof meta !== 'object' || meta === null) throw new ConfigError('meta', 'expected an object of keys and values to match');
    const keys = Object.entries(meta);
    const out: NameOwner[] = [];
    for (const o of this.table.owned()) {
      const m = o.meta as Record<string, unknown> | null;
      if (typeof m === 'object' && m !== null && keys.every(([k, v]) => m[k] === v)) out.push(o);
    }
    return out.sort(byName);
  }

  count(): number {
    return this.table.size;
  }

  watch(listener: (event: NameEvent) => void): () => void {
    if (typeof listener !== 'function') throw new ConfigError('listener', 'expected a function');
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  awaitRegistered(name: string, opts: { timeoutMs?: number; signal?: AbortSignal } = {}): Promise<NameOwner> {
    checkName(name);
    const timeoutMs = opts.timeoutMs ?? 5000;
    if (!Number.isFinite(timeoutMs) || timeoutMs < 0) return Promise.reject(new ConfigError('timeoutMs', `expected a number >= 0, got ${timeoutMs}`));
    const now = this.table.lookup(name);
    if (now) return Promise.resolve(now);
    return new Promise((resolve, reject) => {
      const done = () => {
        clearTimeout(timer);
        this.listeners.delete(listener);
        opts.signal?.removeEventListener('abort', onAbort);
      };
      const listener = (e: NameEvent) => {
        if (e.type === 'register' && e.owner.name === name) {
          done();
          resolve(e.owner);
        }
      };
      const onAbort = () => {
        done();
        reject(opts.signal?.reason ?? new Error('aborted'));
      };
      const timer = setTimeout(() => {
        done();
        reject(new RegistryError(ErrorCodes.REGISTRY_TIMEOUT, `"${name}" was not registered within ${timeoutMs} ms`));
      }, timeoutMs);
      this.listeners.add(listener);
      opts.signal?.addEventListener('abort', onAbort, { once: true });
    });
  }

  /** Counters (for `/metrics`). */
  stats(): RegistryStats {
    return { names: this.table.size, own: this.table.ownNames().length, ...this.counters, messagesDropped: this.link.messagesDropped };
  }

  /** Names this node holds (diagnostics, `explain`). */
  ownNames(): string[] {
    return this.table.ownNames();
  }
}
