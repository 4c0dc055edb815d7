/**
 * Everything this node holds about one connected peer, in one place: its current link and
 * handshake, the addresses that reach it, its state, and who waits for its lanes to drain.
 * The transitions between states are made by `Peers` (peers.ts).
 *
 *   (handshake admitted) ──► up ──► replacing ──► up (same incarnation, new link: `link-replaced`)
 *                             │          └──────► down (the replacement did not come up)
 *                             ├──► superseded (a newer incarnation's link took its place) ──► down
 *                             └──► down (link closed, heartbeat timeout, left, disconnected)
 */
import { ErrorCodes, MessagingError } from '../errors.js';
import type { HandshakeResult, HelloInfo } from './handshake.js';
import type { Link } from './link.js';

/**
 * `up`: the link is live. `replacing`: the peer closed the link while our own dial to the same
 * incarnation was completing; sends are queued on the closed link's outbox and move onto the
 * new link when it comes up (or count as lost if it does not). `down`: gone for good.
 */
export type PeerState = 'up' | 'replacing' | 'down';

interface DrainWaiter {
  resolve: () => void;
  reject: (e: Error) => void;
}

export class Peer {
  state: PeerState = 'up';
  /** Incarnation whose replacement link is awaited (state `replacing`). */
  replacingIncarnation?: number;
  /** Drain waiters, per lane number. */
  private drainWaiters: Array<DrainWaiter[] | undefined> = [];

  constructor(
    readonly name: string,
    /** The link messages to the peer go out on (in state `replacing`: the closed one, holding the queue). */
    public link: Link,
    /** The handshake of `link`: who the peer is, the session id. */
    public hs: HandshakeResult,
    /** Addresses this peer satisfies for the dialer (dialed, advertised). */
    readonly addresses: Set<string>,
  ) {}

  get info(): HelloInfo {
    return this.hs.peer;
  }

  get incarnation(): number {
    return this.hs.peer.incarnation;
  }

  /** Id of the current link, the same at both ends. */
  get session(): string {
    return this.hs.linkId;
  }

  /** Resolves once `lane` is under its high-water mark again. */
  waitDrain(lane: number): Promise<void> {
    return new Promise((resolve, reject) => {
      let list = this.drainWaiters[lane];
      if (!list) {
        list = [];
        this.drainWaiters[lane] = list;
      }
      list.push({ resolve, reject });
    });
  }

  /** The link's lane went under its high-water mark. */
  drained(lane: number): void {
    const list = this.drainWaiters[lane];
    if (!list) return;
    this.drainWaiters[lane] = undefined;
    for (const w of list) w.resolve();
  }

  /** After the queue moved to a new link: wake the waiters of every lane that is under its mark there. */
  recheckDrained(): void {
    for (let lane = 0; lane < this.drainWaiters.length; lane++) {
      if (this.drainWaiters[lane] && !this.link.outbox.isOverHighWaterMark(lane)) this.drained(lane);
    }
  }

  /** The peer is gone: nobody will see its lanes drain. */
  failDrainWaiters(why: string): void {
    const lists = this.drainWaiters;
    this.drainWaiters = [];
    for (const list of lists) for (const w of list ?? []) w.reject(new MessagingError(ErrorCodes.LINK_CLOSED, why));
  }
}
