/**
 * The base of every table built on an owned replica (the registry's names, pubsub's interest,
 * the process table, presence): the transport's calls (`ReplicaEndpoint`) go straight to the
 * replica, so a table only adds what is its own (resolution, views, events). A table that must
 * act after the replica applied something (the registry settling a lost conflict) overrides the
 * call and calls `super` first.
 */
import type { ReplicaEndpoint } from './mesh-replica.js';
import type { OwnedReplica, ReplicaMessage } from './owned-replica.js';

export abstract class ReplicatedTable<V> implements ReplicaEndpoint<ReplicaMessage<V>> {
  protected abstract readonly replica: OwnedReplica<V>;

  /** Announces this node's pending changes (one delta). */
  flush(): void {
    this.replica.flush();
  }
  /** A member came up (or its link was replaced): it gets this node's whole map. */
  peerUp(node: string): void {
    this.replica.peerUp(node);
  }
  /** A member went down: its entries go. */
  peerDown(node: string): void {
    this.replica.peerDown(node);
  }
  /** Periodic digest: repairs a lost last delta (see `OwnedReplica.tick`). */
  tick(quietDigestDue?: boolean): void {
    this.replica.tick(quietDigestDue);
  }
  /** Whether `node` is up as far as this table knows. */
  isUp(node: string): boolean {
    return this.replica.isUp(node);
  }
  /** A message from `node`, whose link vouches for `incarnation`. */
  receive(node: string, incarnation: number, msg: ReplicaMessage<V>): void {
    this.replica.receive(node, incarnation, msg);
  }
  /** Checks a message from the wire; undefined when it is malformed. */
  parse(v: unknown): ReplicaMessage<V> | undefined {
    return this.replica.parse(v);
  }
}
