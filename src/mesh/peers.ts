/**
 * The peers this node is connected to, and the state machine each one goes through (see
 * peer.ts): a link admitted by the handshake makes its peer `up` (or replaces the link of a peer
 * that is up: same incarnation, queued messages carried over, `link-replaced`; or supersedes an
 * older incarnation); a link that ends takes its peer `down`, unless our own dial to it is
 * completing (`replacing`).
 *
 * Delivery rules kept here: the member's `up` (and a replacement's `link-replaced`) fires before
 * the new link dispatches anything that arrived behind its handshake; what was queued for the
 * old link and not written goes out on the new one first, in order; what is lost is counted.
 */
import type { EventEmitter } from 'node:events';
import type { FoundationError } from '../errors.js';
import type { Logger, RateLimitedLog } from '../util/logger.js';
import { publish, TelemetryChannels } from '../util/telemetry.js';
import { encode } from './codec.js';
import type { Dialer } from './dialer.js';
import type { Dispatcher, MessageSource } from './dispatch.js';
import type { HandshakeResult, HelloInfo } from './handshake.js';
import type { HeartbeatService } from './heartbeat.js';
import { parseAddress } from './identity.js';
import type { Link, LinkCloseCause } from './link.js';
import type { Membership } from './membership.js';
import { newLinkWins } from './pair-order.js';
import { Peer } from './peer.js';
import type { Requests } from './requests.js';
import { type DownReason, LANES, type LaneTally, type MeshEvents, type NodeIdentity } from './types.js';

/** System topic telling a node that a newer incarnation of its name took its place. */
export const TOPIC_NAME_TAKEN = '$mesh.name-taken';

/** Counters of links that are gone, summed per lane. */
export interface ClosedLaneCounters {
  messagesSent: number;
  bytesSent: number;
  dropped: number;
  lost: number;
  possiblyLost: number;
}

/** What the peer table needs from the rest of the mesh. */
export interface PeersHooks {
  /** A link came up (new member or replacement): transitive join. */
  linked(peer: Peer): void;
  /** A member went down: the dialer and rejoin take over. */
  gone(info: HelloInfo, reason: DownReason): void;
  /** Our dial to that node, if one is finishing its handshake. */
  dialInFlightTo(name: string): Promise<unknown> | undefined;
  isStopping(): boolean;
}

export class Peers {
  private readonly byName = new Map<string, Peer>();
  readonly closedLanes: ClosedLaneCounters[] = LANES.map(() => ({ messagesSent: 0, bytesSent: 0, dropped: 0, lost: 0, possiblyLost: 0 }));
  readonly counters = { linksOpened: 0, linksClosed: 0, linksReplaced: 0, framesRejected: 0 };

  constructor(
    private readonly self: NodeIdentity,
    private readonly membership: Membership,
    private readonly heartbeat: HeartbeatService,
    private readonly dialer: Dialer,
    private readonly dispatcher: Dispatcher,
    private readonly requests: Requests,
    private readonly events: EventEmitter<MeshEvents>,
    private readonly log: Logger,
    private readonly warnOnce: RateLimitedLog,
    private readonly hooks: PeersHooks,
  ) {}

  /** The peer of that name (up, or being replaced). */
  get(name: string): Peer | undefined {
    return this.byName.get(name);
  }

  names(): string[] {
    return [...this.byName.keys()];
  }

  all(): IterableIterator<Peer> {
    return this.byName.values();
  }

  /** The peer that reaches `address`: dialed there, or its advertised address. */
  at(address: string): Peer | undefined {
    for (const p of this.byName.values()) if (p.addresses.has(address) || p.info.address === address) return p;
    return undefined;
  }

  /** A handshake succeeded on `link`: make it its peer's link, or close it (duplicate, stale). */
  admitted(link: Link, hs: HandshakeResult, dialedAddress: string | undefined): void {
    const name = hs.peer.name;
    const prev = this.byName.get(name);
    const addresses = new Set<string>([hs.peer.address]);
    if (dialedAddress) addresses.add(dialedAddress);
    if (prev && hs.peer.incarnation < prev.incarnation) {
      // Our dial reached an older incarnation of a name that is connected with a newer one: two
      // live nodes share the name. The newer one keeps it; the old one is told, and its address
      // counts as served, so it is not redialed while the newer one is up.
      for (const a of addresses) prev.addresses.add(a);
      this.warnOnce.warn(
        `stale:${name}`,
        { peer: name, address: hs.peer.address, incarnation: hs.peer.incarnation, current: prev.incarnation },
        'reached an older incarnation of a connected node name: two live nodes share the name; told the old one',
      );
      this.tellNameTaken(link, name, prev.incarnation);
      return;
    }
    if (prev && prev.state === 'up' && prev.incarnation === hs.peer.incarnation && !newLinkWins(this.self.name, this.self.address, prev.hs, hs)) {
      // Two links raced to completion; both ends keep the same one and drop the other.
      link.close('duplicate-link');
      for (const a of addresses) prev.addresses.add(a);
      return;
    }
    let peer: Peer;
    let replaced: { oldSession: string; carried: LaneTally; possiblyLost: LaneTally } | undefined;
    if (prev && prev.incarnation === hs.peer.incarnation) {
      // Same incarnation: the link is replaced, the member stays up.
      peer = prev;
      for (const a of addresses) peer.addresses.add(a);
      this.heartbeat.removePeer(name);
      if (prev.state === 'up') this.requests.failPeer(name, 'replaced by a newer link to the same node');
      const oldLink = prev.link;
      const oldSession = prev.session;
      peer.link = link;
      peer.hs = hs;
      peer.state = 'up';
      peer.replacingIncarnation = undefined;
      const carried = tally(oldLink.outbox.moveQueuedTo(link.outbox));
      const possiblyLost = tally(oldLink.outbox.unacknowledged());
      this.retireLink(oldLink);
      this.counters.linksReplaced++;
      peer.recheckDrained();
      replaced = { oldSession, carried, possiblyLost };
    } else {
      if (prev) {
        this.log.info({ peer: name, old: prev.incarnation, new: hs.peer.incarnation }, 'peer restarted: new incarnation supersedes the old');
        // If the old incarnation is alive after all (two live nodes, one name), it learns why:
        // told on its link, which then closes gracefully.
        this.retire(prev, 'superseded', prev.link.isClosed ? undefined : { name, incarnation: hs.peer.incarnation });
        for (const a of prev.addresses) addresses.add(a);
      }
      peer = new Peer(name, link, hs, addresses);
      this.byName.set(name, peer);
    }
    this.counters.linksOpened++;
    // Heartbeats go where the peer listens (its advertised host), not to the source address of
    // its connection, which differs on multi-homed hosts and with address aliases.
    const remoteHost = parseAddress(hs.peer.address)?.host ?? link.socket.remoteAddress ?? '127.0.0.1';
    this.heartbeat.addPeer({ peer: name, linkId: hs.linkId, sessionKey: hs.sessionKey, host: remoteHost, port: hs.peer.heartbeatPort });
    for (const a of peer.addresses) this.dialer.connected(a);
    // Announced before the link dispatches anything: a handler never sees a message from a peer
    // whose `up` (or whose new session's `link-replaced`) has not fired yet.
    if (replaced) {
      this.events.emit('link-replaced', { peer: name, incarnation: hs.peer.incarnation, newSession: hs.linkId, ...replaced });
      this.log.debug({ peer: name, ...replaced }, 'link replaced');
    } else {
      this.membership.markUp(hs.peer, hs.peer.hidden);
      this.log.info({ peer: name, address: hs.peer.address, incarnation: hs.peer.incarnation, hidden: hs.peer.hidden }, 'member up');
    }
    const source: MessageSource = {
      name,
      incarnation: hs.peer.incarnation,
      session: hs.linkId,
      reply: (lane, flags, corrId, topic, body) => {
        const p = this.byName.get(name);
        if (p && p.incarnation === hs.peer.incarnation) p.link.send(lane, flags, corrId, topic, body);
      },
    };
    link.activate(hs, {
      onMessage: (msg) => this.dispatcher.onLinkMessage(source, msg),
      onLeave: () => {
        if (peer.link !== link) return;
        this.log.info({ peer: name }, 'peer is leaving');
        this.retire(peer, 'left');
      },
      onDrain: (lane) => {
        if (peer.link === link) peer.drained(lane);
      },
      onClose: (cause) => this.onLinkClosed(peer, link, cause),
    });
    if (link.isClosed || peer.link !== link) return;
    this.hooks.linked(peer);
  }

  /** Closes the peer's link on our initiative and marks the member down (heartbeat timeout, disconnect). */
  drop(name: string, reason: DownReason): void {
    const peer = this.byName.get(name);
    if (peer?.state !== 'up') return;
    this.retire(peer, reason);
  }

  private onLinkClosed(peer: Peer, link: Link, cause: LinkCloseCause): void {
    if (peer.link !== link || peer.state !== 'up' || this.byName.get(peer.name) !== peer) return;
    if (cause.kind === 'protocol-error') {
      this.counters.framesRejected++;
      this.log.warn(
        { peer: peer.name, remote: link.remote, error: cause.error.message, code: (cause.error as FoundationError).code },
        'closing link: peer broke the protocol',
      );
    }
    const reason: DownReason = cause.kind === 'protocol-error' ? 'protocol-error' : cause.kind === 'left' ? 'left' : 'connection-closed';
    if (reason === 'connection-closed' && this.awaitReplacement(peer)) return;
    this.retire(peer, reason);
  }

  /**
   * The peer closed our current link to it while our own dial to it is finishing its handshake:
   * the peer's tie-break chose that new link and closed the old one, and the close may be read
   * before the new link's last HELLO (two sockets, no order between them). The member stays up
   * meanwhile: sends queue on the old link's outbox and move to the new link when it comes up;
   * the member goes down only if it does not.
   */
  private awaitReplacement(peer: Peer): boolean {
    const replacement = this.hooks.dialInFlightTo(peer.name);
    if (!replacement) return false;
    const link = peer.link;
    peer.state = 'replacing';
    peer.replacingIncarnation = peer.incarnation;
    this.heartbeat.removePeer(peer.name);
    this.requests.failPeer(peer.name, `link to ${peer.name} closed (connection-closed)`);
    void replacement.finally(() => {
      if (peer.state === 'replacing' && peer.link === link && this.byName.get(peer.name) === peer) this.retire(peer, 'connection-closed');
    });
    return true;
  }

  /** The peer's link is gone for good: the member is down, what was queued for it is lost. */
  private retire(peer: Peer, reason: DownReason, nameTaken?: { name: string; incarnation: number }): void {
    const name = peer.name;
    if (this.byName.get(name) === peer) this.byName.delete(name);
    peer.state = 'down';
    this.heartbeat.removePeer(name);
    this.requests.failPeer(name, `link to ${name} closed (${reason})`);
    peer.failDrainWaiters(`link to ${name} closed (${reason})`);
    this.retireLink(peer.link, nameTaken);
    this.membership.markDown(name, reason);
    this.log.info({ peer: name, reason }, 'member down');
    publish(TelemetryChannels.linkClosed, { node: this.self.name, peer: name, remote: peer.link.remote, reason });
    if (!this.hooks.isStopping()) {
      for (const a of peer.addresses) this.dialer.disconnected(a);
      this.hooks.gone(peer.info, reason);
    }
  }

  /**
   * Folds a link's counters into the closed totals and closes it. Whatever it still queues is
   * lost. With `nameTaken`, the peer is told its name was taken before a graceful close.
   */
  private retireLink(link: Link, nameTaken?: { name: string; incarnation: number }): void {
    const counters = link.outbox.counters();
    const unacked = link.outbox.unacknowledged();
    for (let i = 0; i < LANES.length; i++) {
      const c = counters[i];
      const acc = this.closedLanes[i];
      if (!c || !acc) continue;
      acc.messagesSent += c.messagesSent;
      acc.bytesSent += c.bytesSent;
      acc.dropped += c.dropped;
      acc.lost += c.messagesQueued;
      acc.possiblyLost += unacked[i]?.messages ?? 0;
    }
    link.outbox.clear();
    this.counters.linksClosed++;
    if (nameTaken) this.tellNameTaken(link, nameTaken.name, nameTaken.incarnation);
    else link.close('retired');
  }

  /** Tells the node at the other end of `link` that a newer incarnation holds its name, then closes the link. */
  private tellNameTaken(link: Link, name: string, incarnation: number): void {
    try {
      link.send(0, 0, 0, TOPIC_NAME_TAKEN, encode({ name, incarnation }));
    } catch {
      // Best effort: the link may be over its limits.
    }
    link.close('name-taken', true);
  }

  /** Graceful leave: tell every peer, flush, close. Resolves when the sockets closed (or after 1 s). */
  async leaveAll(): Promise<void> {
    const leave = encode({ name: this.self.name, incarnation: this.self.incarnation });
    const closing: Promise<void>[] = [];
    const peers = [...this.byName.values()];
    // Forget the peers first, so their links closing is not mistaken for the peers failing.
    this.byName.clear();
    for (const peer of peers) {
      const link = peer.link;
      peer.state = 'down';
      link.sendLeave(leave);
      if (!link.isClosed) closing.push(new Promise((resolve) => link.socket.once('close', () => resolve())));
      link.close('left', true);
      this.requests.failPeer(peer.name, 'node is stopping');
      peer.failDrainWaiters('node is stopping');
      this.counters.linksClosed++;
      publish(TelemetryChannels.linkClosed, { node: this.self.name, peer: peer.name, remote: link.remote, reason: 'left' });
      this.membership.markDown(peer.name, 'left');
    }
    await Promise.race([Promise.all(closing), new Promise((r) => setTimeout(r, 1000).unref())]);
  }
}

function tally(perLane: ReadonlyArray<{ messages: number; bytes: number }>): LaneTally {
  const out = {} as LaneTally;
  LANES.forEach((lane, i) => {
    const t = perLane[i];
    out[lane] = { messages: t?.messages ?? 0, bytes: t?.bytes ?? 0 };
  });
  return out;
}
