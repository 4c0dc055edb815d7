/**
 * Transitive join: a node that links to one member learns every other member and links to them
 * too, so a cluster needs only one seed. When a link comes up, each end tells the new peer every
 * member it knows, and tells the other members about the new peer; a node hearing of a member it
 * has no link to dials it (the pair's first address at once, the second after a wait: one
 * connection per pair, see pair-order.ts). It also keeps redialing, for a while, a member learnt
 * this way that dropped (nobody else may be left to dial it after a partition heals).
 *
 * Built on the internal interface (a system topic, `send`) plus the connector's dials.
 */
import type { Logger } from '../util/logger.js';
import type { ConnectResult } from './connector.js';
import type { Dialer } from './dialer.js';
import type { MessageHandler } from './dispatch.js';
import type { HelloInfo } from './handshake.js';
import { addressFirst } from './pair-order.js';
import type { Peer } from './peer.js';
import type { LaneName, NodeIdentity } from './types.js';

/** System topic of member lists exchanged by transitive joins. */
export const TOPIC_PEERS = '$mesh.peers';
/** Dialer owner for members redialed after they dropped (see `rejoin`). */
const REJOIN_OWNER = '$rejoin';
/** How long a dropped member is redialed when no topology asks for it. */
const REJOIN_WINDOW_MS = 60_000;
/** Longest member list taken from one message. */
const MAX_ENTRIES = 10_000;

/** What the transitive join uses of the mesh. */
export interface TransitiveJoinDeps {
  self: NodeIdentity;
  /** A hidden node (a tool) neither tells nor learns members. */
  hidden: boolean;
  handleSystem(topic: string, handler: MessageHandler): () => void;
  send(node: string, topic: string, payload: unknown, lane: LaneName): boolean;
  peer(name: string): Peer | undefined;
  peers(): Iterable<Peer>;
  connect(address: string): Promise<ConnectResult>;
  dialer: Dialer;
  mutualDialDelay(): number;
  isStopping(): boolean;
  log: Logger;
}

export class TransitiveJoin {
  private announceQueue: NodeIdentity[] = [];

  constructor(private readonly d: TransitiveJoinDeps) {
    d.handleSystem(TOPIC_PEERS, (payload, ctx) => this.onPeers(payload, ctx.from));
  }

  /** A link to `peer` came up: tell it everyone we know, and everyone else about it. */
  linked(peer: Peer): void {
    const info = peer.info;
    if (info.hidden || this.d.hidden) return;
    this.sendQuietly(peer.name, [this.d.self, ...this.membersForGossip()]);
    // Newcomers are told to the other members in one message per member per turn of the loop:
    // a cluster forming at once would otherwise send a message per (newcomer, member) pair.
    this.announceQueue.push({ name: info.name, address: info.address, incarnation: info.incarnation });
    if (this.announceQueue.length > 1) return;
    setImmediate(() => {
      const entries = this.announceQueue;
      this.announceQueue = [];
      for (const other of this.d.peers()) {
        if (other.info.hidden || other.state !== 'up') continue;
        const forOther = entries.filter((e) => e.name !== other.name);
        if (forOther.length > 0) this.sendQuietly(other.name, forOther);
      }
    });
  }

  /**
   * A member learnt through another member (not from a topology) has nobody to redial it after a
   * partition heals if that other member is gone too: keep trying it for a while ourselves.
   */
  rejoin(peer: HelloInfo): void {
    const dialer = this.d.dialer;
    if (peer.hidden || this.d.hidden || dialer.isWanted(peer.address)) return;
    dialer.want(peer.address, REJOIN_OWNER);
    setTimeout(() => dialer.release(peer.address, REJOIN_OWNER), REJOIN_WINDOW_MS).unref();
  }

  private sendQuietly(node: string, payload: NodeIdentity[]): void {
    try {
      this.d.send(node, TOPIC_PEERS, payload, 'control');
    } catch (err) {
      this.d.log.debug({ node, error: (err as Error).message }, 'member list not sent');
    }
  }

  private membersForGossip(): NodeIdentity[] {
    const out: NodeIdentity[] = [];
    for (const p of this.d.peers()) {
      const i = p.info;
      if (!i.hidden) out.push({ name: i.name, address: i.address, incarnation: i.incarnation });
    }
    return out;
  }

  private onPeers(payload: unknown, from: string): void {
    if (this.d.hidden || !Array.isArray(payload)) return;
    for (const e of payload.slice(0, MAX_ENTRIES)) {
      if (typeof e !== 'object' || e === null) continue;
      const { name, address, incarnation } = e as Partial<NodeIdentity>;
      if (typeof name !== 'string' || typeof address !== 'string' || typeof incarnation !== 'number') continue;
      if (name === this.d.self.name) continue;
      const known = this.d.peer(name);
      if (known && known.incarnation >= incarnation) continue;
      // A topology already dials it: a second, transitive dial would only race the first.
      if (this.d.dialer.isWanted(address) && !known) continue;
      // Both ends usually hear of each other at once: the first address dials now, the second
      // only if no link has appeared after a short wait.
      const dial = () => {
        const now = this.d.peer(name);
        if (this.d.isStopping() || (now && now.incarnation >= incarnation)) return;
        this.d.connect(address).then((r) => {
          if (!r.ok) this.d.log.debug({ address, via: from, error: r.error.message }, 'transitive connect failed');
        });
      };
      if (addressFirst(this.d.self.address, address)) dial();
      else setTimeout(dial, this.d.mutualDialDelay()).unref();
    }
  }
}
