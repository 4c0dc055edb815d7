/**
 * The replicated name table under `node.registry`: every node owns its own registrations
 * (replicated by `replication/owned-replica.ts`), and every node computes the same owner for
 * each name from the registrations it sees.
 *
 * Conflicts: during a partition two nodes may register one name. Once both registrations are
 * visible, the earlier hybrid-logical-clock stamp wins, ties broken by the smaller node name, so
 * every node picks the same winner without asking anyone. The loser's node removes its own
 * registration when it sees the winner and reports a `conflict` (the processes layer stops the
 * loser's worker with reason `name_conflict`). A node's registrations go when it goes down, and
 * only that incarnation's.
 */
import { OwnedReplica, type ReplicaMessage } from '../replication/owned-replica.js';
import { ReplicatedTable } from '../replication/replicated-table.js';
import { compareStamps, type HlcStamp, type HybridClock, isStamp } from './hlc.js';

/** One registration as it is replicated. */
export interface Registration {
  /** When it was made, on the registering node's hybrid logical clock. */
  readonly stamp: HlcStamp;
  /** Serializable metadata given at registration, or by the latest `update`. */
  readonly meta: unknown;
  /**
   * How many times the owner updated `meta` since it registered (absent = 0). The stamp stays the
   * registration's, so an update never changes who wins a conflict; `rev` tells a real change of
   * `meta` from a resync that carries the same value again.
   */
  readonly rev?: number;
}

/** What a lookup returns: the node that owns the name, and its metadata. */
export interface NameOwner {
  readonly name: string;
  readonly node: string;
  readonly meta: unknown;
  readonly stamp: HlcStamp;
}

/** Changes of the resolved table, as every node sees them. */
export type NameEvent =
  /** `name` now resolves to `node` (a new registration, or a new winner after a conflict or a departure). */
  | { type: 'register'; owner: NameOwner }
  /** The owner of `name` changed its `meta` (same node, same registration stamp). */
  | { type: 'update'; owner: NameOwner }
  /** `name` no longer resolves to anything. */
  | { type: 'unregister'; name: string; node: string }
  /** Two nodes held `name`; `winner` keeps it, `loser` gives it up (its own node removes it). */
  | { type: 'conflict'; name: string; winner: string; loser: string };

export type NameTableMessage = ReplicaMessage<Registration>;

function isRegistration(v: unknown): v is Registration {
  if (typeof v !== 'object' || v === null || !isStamp((v as Registration).stamp) || !('meta' in v)) return false;
  const rev = (v as Registration).rev;
  return rev === undefined || (Number.isSafeInteger(rev) && rev >= 0);
}

export class NameTable extends ReplicatedTable<Registration> {
  protected readonly replica: OwnedReplica<Registration>;
  /** Every registration visible, by name then node. */
  private readonly candidates = new Map<string, Map<string, Registration>>();
  /** The resolved owner of each name. */
  private readonly owners = new Map<string, NameOwner>();
  /** The `rev` of each resolved owner's registration (kept off `NameOwner`, which users see). */
  private readonly ownerRevs = new Map<string, number>();
  /** Own registrations that lost a conflict, removed once the change that revealed them is applied. */
  private losing: string[] = [];

  constructor(
    readonly self: string,
    incarnation: number,
    private readonly clock: HybridClock,
    /** Sends a replication message to one node, or to every up node when `to` is null. */
    emit: (to: string | null, msg: NameTableMessage) => void,
    private readonly onEvent: (e: NameEvent) => void,
  ) {
    super();
    this.replica = new OwnedReplica<Registration>(self, incarnation, emit, (node, name, _prev, next) => this.changed(node, name, next), isRegistration);
  }

  /**
   * Registers `name` on this node. Refused (returns the owner) when another node already owns it
   * as far as this node can see; two registrations made on two sides of a partition are both
   * accepted and resolved when the sides meet.
   */
  register(name: string, meta: unknown): { ok: true; owner: NameOwner } | { ok: false; owner: NameOwner } {
    const owner = this.owners.get(name);
    if (owner) return { ok: false, owner };
    this.replica.set(name, { stamp: this.clock.tick(), meta });
    return { ok: true, owner: this.owners.get(name) as NameOwner };
  }

  /**
   * Replaces the `meta` of this node's own registration of `name`, keeping its stamp (so conflict
   * resolution is unchanged) and bumping its `rev`; it replicates like any change. False when
   * this node holds no registration of `name`.
   */
  update(name: string, meta: unknown): boolean {
    const reg = this.replica.get(name);
    if (!reg) return false;
    this.replica.set(name, { stamp: reg.stamp, meta, rev: (reg.rev ?? 0) + 1 });
    return true;
  }

  /** Removes this node's registration of `name`; false when it has none. */
  unregister(name: string): boolean {
    return this.replica.delete(name);
  }

  /** The owner of `name`, from local state (no network). */
  lookup(name: string): NameOwner | undefined {
    return this.owners.get(name);
  }

  /** Every resolved name. */
  owned(): IterableIterator<NameOwner> {
    return this.owners.values();
  }

  /** Number of resolved names. */
  get size(): number {
    return this.owners.size;
  }

  /** Names this node itself registered. */
  ownNames(): string[] {
    return [...this.replica.ownEntries()].map(([name]) => name);
  }

  /** Registrations visible for `name` (more than one only while a conflict is being resolved). */
  candidatesOf(name: string): Array<[node: string, Registration]> {
    return [...(this.candidates.get(name) ?? [])];
  }

  // ---- replication (the rest is `ReplicatedTable`'s): a change that reveals a winner settles losers

  override peerDown(node: string): void {
    super.peerDown(node);
    this.settleLosers();
  }
  override receive(node: string, incarnation: number, msg: NameTableMessage): void {
    super.receive(node, incarnation, msg);
    this.settleLosers();
  }

  // ---- resolution ----------------------------------------------------------------------------

  private changed(node: string, name: string, next: Registration | undefined): void {
    let byNode = this.candidates.get(name);
    let newcomer: string | undefined;
    if (next) {
      if (node !== this.self) this.clock.observe(next.stamp);
      if (!byNode) {
        byNode = new Map();
        this.candidates.set(name, byNode);
      }
      if (!byNode.has(node)) newcomer = node;
      byNode.set(node, next);
    } else if (byNode) {
      byNode.delete(node);
      if (byNode.size === 0) this.candidates.delete(name);
    }
    this.resolve(name, newcomer);
  }

  /**
   * Recomputes the owner of `name` and reports what changed. A conflict is reported once, when
   * the second registration becomes visible (`newcomer`), not again on every later resync.
   */
  private resolve(name: string, newcomer: string | undefined): void {
    const byNode = this.candidates.get(name);
    const before = this.owners.get(name);
    let best: NameOwner | undefined;
    let bestRev = 0;
    for (const [node, reg] of byNode ?? []) {
      if (!best || compareStamps(reg.stamp, best.stamp, node, best.node) < 0) {
        best = { name, node, meta: reg.meta, stamp: reg.stamp };
        bestRev = reg.rev ?? 0;
      }
    }
    if (byNode && best && byNode.size > 1) {
      for (const node of byNode.keys()) {
        if (node === best.node) continue;
        if (newcomer === node || newcomer === best.node) this.onEvent({ type: 'conflict', name, winner: best.node, loser: node });
        if (node === this.self && !this.losing.includes(name)) this.losing.push(name);
      }
    }
    if (!best) {
      if (before) {
        this.owners.delete(name);
        this.ownerRevs.delete(name);
        this.onEvent({ type: 'unregister', name, node: before.node });
      }
      return;
    }
    const revBefore = this.ownerRevs.get(name);
    this.owners.set(name, best);
    this.ownerRevs.set(name, bestRev);
    if (!before || before.node !== best.node || compareStamps(before.stamp, best.stamp) !== 0) this.onEvent({ type: 'register', owner: best });
    else if (revBefore !== bestRev) this.onEvent({ type: 'update', owner: best });
  }

  /** Gives up the names this node lost (after the change that revealed the winner is applied). */
  private settleLosers(): void {
    while (this.losing.length > 0) {
      const names = this.losing;
      this.losing = [];
      for (const name of names) {
        const winner = this.owners.get(name);
        if (winner && winner.node !== this.self) this.replica.delete(name);
      }
    }
  }
}
