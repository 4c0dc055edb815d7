/**
 * Carries one owner-versioned replica (`owned-replica.ts`, or a table built on it) over the mesh's
 * internal interface: its messages on a `$` system topic on the control lane, sent to every up
 * member at once (`sendMany`, encoded once); members already up and every later change through
 * `watchMembers` (no gap, no duplicate); a `link-replaced` resyncs that peer (what the old link
 * lost is repaired by a full map); a periodic digest repairs a lost last delta; changes made in
 * one turn of the event loop go out as one delta just after it, those a table makes of its own
 * entries in reaction to a peer's message or departure included.
 *
 * Malformed messages (untrusted bytes, decoded) are dropped, counted, and logged at a limited
 * rate; they never reach the replica.
 */
import type { InternalMesh, MembersWatch } from '../mesh/interface.js';
import type { MembershipChange } from '../mesh/types.js';
import { type GridTimer, gridInterval } from '../util/grid-timer.js';
import type { Logger } from '../util/logger.js';
import { RateLimitedLog } from '../util/logger.js';
import { isQuietDigestTick } from './owned-replica.js';

/** What a replicated table exposes to its transport (`OwnedReplica` and the tables built on it). */
export interface ReplicaEndpoint<M> {
  flush(): void;
  peerUp(node: string): void;
  peerDown(node: string): void;
  /** Periodic digest; `quietDigestDue` on the grid ticks where one goes out even without a change. */
  tick(quietDigestDue?: boolean): void;
  receive(node: string, incarnation: number, msg: M): void;
  /** Checks a decoded message from the wire; undefined refuses it. */
  parse(v: unknown): M | undefined;
}

/** Options of a `MeshReplicaLink`. */
export interface MeshReplicaLinkOptions {
  /** The `$` system topic of the replica's messages. */
  topic: string;
  /** Period of the digest that repairs a lost last delta, in ms (its ticks fall on multiples of it on the epoch clock). */
  digestMs: number;
  /** What the replica is, for log lines (`registry`, `processes`). */
  what: string;
  /** Called after each member change has been applied to the replica (placement reacts here). */
  onMembers?: (change: MembershipChange) => void;
}

export class MeshReplicaLink<M> {
  /** Members up (not hidden): where the replica's messages go. */
  readonly up = new Set<string>();
  /** Replication messages from peers that were malformed and dropped. */
  messagesDropped = 0;
  private endpoint?: ReplicaEndpoint<M>;
  private readonly warn: RateLimitedLog;
  private readonly offs: Array<() => void> = [];
  private watchHandle?: MembersWatch;
  private digestTimer?: GridTimer;
  private flushScheduled = false;
  private stopped = false;

  constructor(
    private readonly mesh: InternalMesh,
    log: Logger,
    private readonly opts: MeshReplicaLinkOptions,
  ) {
    this.warn = new RateLimitedLog(log);
  }

  /** The replica's `emit`: to one node, or to every up member when `to` is null. */
  readonly emit = (to: string | null, msg: M): void => {
    if (to !== null) {
      try {
        this.mesh.send(to, this.opts.topic, msg, 'control');
      } catch {
        // Gone in between: its down event drops its entries; a new up resyncs.
      }
      return;
    }
    if (this.up.size > 0) this.mesh.sendMany(this.up, this.opts.topic, msg, 'control');
  };

  /** Starts carrying `endpoint`'s messages: members already up get its whole map now, later ones when they come up. */
  start(endpoint: ReplicaEndpoint<M>): void {
    this.endpoint = endpoint;
    this.offs.push(
      this.mesh.handleSystem(this.opts.topic, (payload, ctx) => {
        if (ctx.from === this.mesh.self.name) return;
        const msg = endpoint.parse(payload);
        if (msg === undefined) {
          this.messagesDropped++;
          this.warn.warn(`bad:${ctx.from}`, { from: ctx.from }, `malformed ${this.opts.what} replication message dropped`);
          return;
        }
        endpoint.receive(ctx.from, ctx.incarnation, msg);
        // What a table changed of its own in reaction (the registry withdrawing a name it lost)
        // goes out now, not at the next digest up to `digestMs` later.
        this.scheduleFlush();
      }),
    );
    this.offs.push(
      this.mesh.onLinkReplaced((e) => {
        if (this.up.has(e.peer)) endpoint.peerUp(e.peer);
      }),
    );
    this.watchHandle = this.mesh.watchMembers((change: MembershipChange) => {
      if (change.member.hidden) return;
      if (change.type === 'up') {
        this.up.add(change.member.name);
        endpoint.peerUp(change.member.name);
      } else if (change.type === 'down') {
        this.up.delete(change.member.name);
        endpoint.peerDown(change.member.name);
        this.scheduleFlush();
      }
      this.digestWhilePeers();
      this.opts.onMembers?.(change);
    });
    for (const m of this.watchHandle.members) {
      this.up.add(m.name);
      endpoint.peerUp(m.name);
    }
    this.digestWhilePeers();
  }

  /**
   * The digest runs only while some member is up: a node alone does not wake up for it. Its ticks
   * fall on the epoch grid, so the digests of every replica of every node on a host share their
   * wake-ups (see `util/grid-timer.ts`), quiet digests included.
   */
  private digestWhilePeers(): void {
    if (this.up.size > 0 && !this.digestTimer && !this.stopped) {
      const endpoint = this.endpoint as ReplicaEndpoint<M>;
      this.digestTimer = gridInterval(this.opts.digestMs, (n) => endpoint.tick(isQuietDigestTick(n)));
    } else if (this.up.size === 0 && this.digestTimer) {
      this.digestTimer.stop();
      this.digestTimer = undefined;
    }
  }

  /** Changes made in one turn of the loop go out together, at once after it. */
  scheduleFlush(): void {
    if (this.flushScheduled || this.stopped) return;
    this.flushScheduled = true;
    queueMicrotask(() => {
      this.flushScheduled = false;
      if (!this.stopped) this.endpoint?.flush();
    });
  }

  get isStopped(): boolean {
    return this.stopped;
  }

  /** Stops carrying; this node's entries leave with the node (peers drop them when it goes down). */
  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    this.digestTimer?.stop();
    this.watchHandle?.stop();
    for (const off of this.offs.splice(0)) off();
  }
}
