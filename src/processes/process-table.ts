/**
 * The replicated table under `node.processes`: what each node declared and what it runs, so that
 * every node can compute placement from the same facts without asking anyone.
 *
 * Each node owns its entries (`replication/owned-replica.ts`, the Phoenix.Tracker rule):
 * - `t:<type>`: this node defined worker type `<type>` (it may run such workers);
 * - `s:<name>`: this node declared singleton `<name>` (it is a candidate to run it);
 * - `r:<name>`: this node runs its copy of replicated worker `<name>` (nodes that join later see
 *   the spec here and start their own copy);
 * - `c:<name>`: this node hosts placed child `<name>`, with its spec.
 *
 * A child whose host went down (its entries dropped, not deleted by it) becomes an **orphan** on
 * every survivor, with the spec the host last published, until some live node publishes it as
 * its own: the survivors' placement adopts orphans, so a child is not lost when its host dies,
 * nor when the node chosen to adopt it dies before it could (the orphan stays until adopted).
 * A host that deletes a child entry on purpose (the child ended, or moved by handoff) makes no
 * orphan.
 *
 * Pure: no sockets, no timers; a `MeshReplicaLink` carries it, a simulation test drives it.
 */
import { OwnedReplica, type ReplicaChangeCause, type ReplicaMessage } from '../replication/owned-replica.js';
import { ReplicatedTable } from '../replication/replicated-table.js';
import type { RestartPolicy } from './supervisor.js';

/** Consistency of a singleton (docs/guides/processes.md). */
export type SingletonConsistency = 'available' | 'quorum';

/** One entry, as it is replicated. */
export type ProcessEntry =
  | { k: 'type' }
  | { k: 'singleton'; type: string; args: unknown; consistency: SingletonConsistency; clusterSize?: number }
  | { k: 'replicated'; type: string; args: unknown }
  | { k: 'child'; type: string; args: unknown; restart: RestartPolicy; maxRestarts: number; windowMs: number };

export type ChildEntry = Extract<ProcessEntry, { k: 'child' }>;
export type SingletonEntry = Extract<ProcessEntry, { k: 'singleton' }>;
export type ReplicatedEntry = Extract<ProcessEntry, { k: 'replicated' }>;

export type ProcessTableMessage = ReplicaMessage<ProcessEntry>;

const PREFIX = { type: 't:', singleton: 's:', replicated: 'r:', child: 'c:' } as const;
const KINDS = new Set(Object.keys(PREFIX));
const POLICIES = new Set(['permanent', 'transient', 'temporary']);

function isEntry(v: unknown): v is ProcessEntry {
  if (typeof v !== 'object' || v === null) return false;
  const e = v as Record<string, unknown>;
  if (typeof e.k !== 'string' || !KINDS.has(e.k)) return false;
  if (e.k === 'type') return true;
  if (typeof e.type !== 'string' || !('args' in e)) return false;
  if (e.k === 'singleton')
    return (e.consistency === 'available' || e.consistency === 'quorum') && (e.clusterSize === undefined || Number.isInteger(e.clusterSize));
  if (e.k === 'child') return POLICIES.has(e.restart as string) && Number.isInteger(e.maxRestarts) && typeof e.windowMs === 'number';
  return true;
}

/** What changed, for placement to react to. */
export type TableChange = { kind: ProcessEntry['k']; name: string; node: string; cause: ReplicaChangeCause };

export class ProcessTable extends ReplicatedTable<ProcessEntry> {
  protected readonly replica: OwnedReplica<ProcessEntry>;
  /** Every node's entries of each kind, by name then node (this node's own included). */
  private readonly byKind = {
    type: new Map<string, Map<string, ProcessEntry>>(),
    singleton: new Map<string, Map<string, ProcessEntry>>(),
    replicated: new Map<string, Map<string, ProcessEntry>>(),
    child: new Map<string, Map<string, ProcessEntry>>(),
  };
  /** Children whose host went down before anyone else took them: name → last published spec. */
  private readonly orphaned = new Map<string, { spec: ChildEntry; from: string; since: number }>();

  constructor(
    readonly self: string,
    incarnation: number,
    emit: (to: string | null, msg: ProcessTableMessage) => void,
    private readonly onChange: (change: TableChange) => void,
    private readonly now: () => number = Date.now,
  ) {
    super();
    this.replica = new OwnedReplica<ProcessEntry>(
      self,
      incarnation,
      emit,
      (node, key, prev, next, cause) => this.changed(node, key, prev, next, cause),
      isEntry,
    );
  }

  // ---- this node's entries ---------------------------------------------------------------------

  setOwn(name: string, entry: ProcessEntry): void {
    this.replica.set(PREFIX[entry.k] + name, entry);
  }

  deleteOwn(kind: ProcessEntry['k'], name: string): boolean {
    return this.replica.delete(PREFIX[kind] + name);
  }

  own(kind: ProcessEntry['k'], name: string): ProcessEntry | undefined {
    return this.replica.get(PREFIX[kind] + name);
  }

  // ---- views -----------------------------------------------------------------------------------

  /** Nodes (this one included) that hold an entry of `kind` for `name`, with it. */
  holders<K extends ProcessEntry['k']>(kind: K, name: string): Map<string, Extract<ProcessEntry, { k: K }>> {
    return (this.byKind[kind].get(name) ?? new Map()) as Map<string, Extract<ProcessEntry, { k: K }>>;
  }

  /** Names that have at least one entry of `kind`. */
  names(kind: ProcessEntry['k']): string[] {
    return [...this.byKind[kind].keys()];
  }

  /** Children whose host is gone and that nobody has taken yet (`since`: when this node saw the host go). */
  orphans(): Array<[name: string, spec: ChildEntry, from: string, since: number]> {
    return [...this.orphaned].map(([name, o]) => [name, o.spec, o.from, o.since]);
  }

  /** Whether this node holds `node`'s whole map (it has heard from it since it came up). */
  syncedWith(node: string): boolean {
    return node === this.self || this.replica.versionOf(node) !== undefined;
  }

  // ---- replication, driven by the transport ---------------------------------------------------

  // ---- bookkeeping -----------------------------------------------------------------------------

  private changed(node: string, key: string, _prev: ProcessEntry | undefined, next: ProcessEntry | undefined, cause: ReplicaChangeCause): void {
    const kind = (Object.keys(PREFIX) as Array<keyof typeof PREFIX>).find((k) => key.startsWith(PREFIX[k]));
    if (!kind) return;
    const name = key.slice(2);
    const map = this.byKind[kind];
    let byNode = map.get(name);
    if (next) {
      if (!byNode) {
        byNode = new Map();
        map.set(name, byNode);
      }
      byNode.set(node, next);
      if (kind === 'child') this.orphaned.delete(name);
    } else if (byNode) {
      const prev = byNode.get(node);
      byNode.delete(node);
      if (byNode.size === 0) map.delete(name);
      // A host that went away without giving its child up leaves an orphan, unless another node holds it.
      if (kind === 'child' && cause === 'drop' && prev?.k === 'child' && !map.has(name)) {
        this.orphaned.set(name, { spec: prev, from: node, since: this.now() });
      }
    }
    // An orphan that is then deleted on purpose by someone who held it is settled.
    if (kind === 'child' && cause === 'delete' && !map.has(name)) this.orphaned.delete(name);
    this.onChange({ kind, name, node, cause });
  }

  /** Forgets an orphan (its type is defined nowhere any more, or it was stopped by name). */
  dropOrphan(name: string): boolean {
    return this.orphaned.delete(name);
  }
}
