/**
 * The quorum lease: the protocol that keeps at most one activation of a singleton alive at any
 * moment, across partitions, lost and late messages, process pauses and restarts, for a fixed,
 * configured number of voters (`clusterSize`). Every node that declares the singleton is a voter
 * and runs both roles of this class: acceptor (it promises its vote) and claimant/holder.
 *
 * The class is pure (no sockets, no timers): the driver (`quorum-singleton.ts`) or a simulation
 * gives it a monotonic clock (`now`), a wall-clock token floor, and a `send`; it calls `tick()`
 * at `nextWakeAt()` and feeds it membership changes and messages. Documented in
 * docs/guides/quorum-singletons.md, which also holds the safety argument in full.
 *
 * The rules, in short:
 * - A claimant sends `claim(r)` to the voters with a round `r` higher than any it has seen (and
 *   not below the wall-clock floor). It holds the lease when a majority (`floor(clusterSize/2)+1`
 *   distinct voters) has acknowledged it, until `sentAt + holderLeaseMs` on its own clock, where
 *   `sentAt` is when it SENT the claim and `holderLeaseMs = leaseMs·(1-ρ)/(1+ρ)` (ρ = maxClockDrift).
 * - An acceptor acknowledges a claim (promises round `r` to that claimant incarnation) only if `r`
 *   is above every round it promised, and no lease it granted to anyone else is still running:
 *   a grant runs `leaseMs` on the ACCEPTOR's clock from when it RECEIVED the claim or renewal.
 *   Received ≥ sent, and the drift factor covers a fast acceptor clock against a slow holder
 *   clock, so the holder's view of its lease always ends first (in true time).
 * - The holder renews (`renew(r)`, a new sequence number each time) every `renewEveryMs`; each
 *   renewal a majority acknowledges moves its deadline to `renewalSentAt + holderLeaseMs`. An
 *   acceptor acknowledges a renewal unless a grant to another claimant runs there; it need not be
 *   of the highest round promised (a renewal never starts an activation, so it does not take part
 *   in ordering tokens), which lets a voter whose own claim failed follow the holder again. When
 *   the deadline passes the holder steps down (`lost`, `lease_expired`) before it handles anything
 *   else; nothing extends a deadline that has passed.
 * - A claim counts only within its window (`renewEveryMs` after it was sent): a won claim starts
 *   soon after it was sent, which the token order across restarts relies on.
 * - A new acceptor (a restart: state lost, new incarnation) refuses every claim and renewal for
 *   `leaseMs` (quarantine), so a grant its previous incarnation made has run out before it votes.
 * - A release (graceful stop, or a failed claim) ends a grant early: only the grant of that very
 *   round and claimant incarnation.
 * - The fencing token of an activation is its round: rounds only grow at each acceptor, and any
 *   two majorities share an acceptor, so tokens grow in the order activations begin. Across the
 *   loss of a majority's state (a full restart) the wall-clock floor (`Date.now()·1000`) keeps
 *   them growing, assuming wall clocks disagree by less than `leaseMs - renewEveryMs`.
 *
 * Who claims: when no grant is running at this node's acceptor, the voters reachable from here
 * are ranked by rendezvous hash of the singleton's name (`rankFor`, the last grantee whose grant
 * ran out excluded) and the one ranked k claims `k·claimStaggerMs` after the grant ended, so
 * normally only one node claims and no duel happens. A failed claim is released and retried
 * when the refusing voters said their grants end. A node that reaches fewer voters than a
 * majority, or sees more voters than `clusterSize` (misconfiguration), does not claim.
 *
 * Why this design and not another: a lease on a majority (rather than a lock on one store, or a
 * leader elected by the membership view) is what makes the minority side of a partition unable to
 * hold, with no clock synchronisation, and with a token that orders activations. Leases are
 * measured only as durations on each node's own monotonic clock, from send (holder) and from
 * receipt (acceptor): no timestamp crosses the wire, so clock offsets do not matter, only rates.
 */
import { rankFor } from './placement.js';

/** Why a holder stopped holding. */
export type QuorumLostReason = 'lease_expired' | 'superseded' | 'stopped';

/** Why an acceptor refused a claim or renewal. */
export type QuorumRefusal =
  /** A lease it granted to another claimant is still running (`w` ms left on its clock). */
  | 'held'
  /** The round is not above the highest it promised (`pr`). */
  | 'round'
  /** The acceptor started less than a lease ago (`w` ms left). */
  | 'quarantine'
  /** Cluster size or lease length differ from the acceptor's, or it sees more voters than the cluster size. */
  | 'config';

/** The protocol's messages (one singleton name; the driver wraps them with the name). */
export type QuorumMessage =
  /** "I declare this singleton (I am a voter)", with the configuration it must agree on; `a`: answer with a hello. */
  | { t: 'hello'; cs: number; ls: number; a: boolean }
  /** "I do not declare it" (the reply of a node that has no such singleton). */
  | { t: 'nv' }
  /** "I no longer declare it" (the handle was stopped). */
  | { t: 'bye' }
  /** A claim of round `r`; `s` numbers it for the replies. */
  | { t: 'claim'; r: number; s: number; cs: number; ls: number }
  /** A renewal by the holder of round `r`. */
  | { t: 'renew'; r: number; s: number; cs: number; ls: number }
  /** Acknowledged: the acceptor granted (or extended) round `r` to claimant incarnation `ci`. */
  | { t: 'ack'; r: number; s: number; ci: number }
  /** Refused, why, the acceptor's highest promised round, the grantee it holds (or ''), and ms left of what blocks. */
  | { t: 'nack'; r: number; s: number; ci: number; why: QuorumRefusal; pr: number; h: string; w: number }
  /** Ends the grant of round `r` to the sender (graceful stop, or a failed claim). */
  | { t: 'release'; r: number };

/** What the protocol reports to its driver. */
export type QuorumLeaseEvent =
  /** This node holds the lease, with fencing token `token`, until `deadline` (its own monotonic clock). */
  | { type: 'acquired'; token: number; deadline: number }
  /** A renewal moved the deadline. */
  | { type: 'extended'; token: number; deadline: number }
  /** This node no longer holds the lease. */
  | { type: 'lost'; token: number; reason: QuorumLostReason }
  /** This node will not claim (nor vote): it sees more voters than `clusterSize`; or (not blocking) a voter is configured differently. */
  | { type: 'misconfigured'; detail: string };

/** Timing and sizing of one quorum lease (every voter must use the same `clusterSize` and `leaseMs`). */
export interface QuorumLeaseConfig {
  /** Number of voters the majority is computed over: the most nodes that ever declare the singleton. */
  clusterSize: number;
  /** How long an acceptor's grant runs after it received the claim or renewal (its own clock). */
  leaseMs: number;
  /** How often the holder renews; also how long a claim waits for its majority. Below `holderLeaseMs / 2`. */
  renewEveryMs: number;
  /** Largest rate error of any node's monotonic clock against true time, as a fraction (0.01 = 1%). */
  maxClockDrift: number;
  /** Delay per rank before a voter that is not the rendezvous owner claims. */
  claimStaggerMs: number;
}

/** What the protocol needs from its environment. */
export interface QuorumLeaseEnv {
  /** The singleton's name (ranks the voters). */
  name: string;
  /** This node's name and incarnation. */
  self: string;
  incarnation: number;
  /** Monotonic milliseconds (performance.now()). */
  now(): number;
  /** The least token a new claim may take: wall-clock microseconds (Date.now()·1000). */
  tokenFloor(): number;
  /** Sends one message to one other node (may drop it; the protocol never relies on delivery). */
  send(to: string, msg: QuorumMessage): void;
  /** Protocol events. */
  onEvent(e: QuorumLeaseEvent): void;
  /**
   * Numbers for the claims and renewals of this node, increasing across every QuorumLease this
   * node incarnation creates (a stopped and re-declared singleton must not take a late reply to
   * its predecessor's message for its own). Default: a counter of this instance.
   */
  nextSeq?(): number;
}

/** Counters and state of one quorum lease on this node. */
export interface QuorumLeaseStats {
  /** `idle`, `claiming` or `holding`. */
  state: 'idle' | 'claiming' | 'holding' | 'stopped';
  /** Claims sent (first attempts and retries). */
  claims: number;
  /** Claims that reached a majority (activations on this node). */
  acquired: number;
  /** Renewals sent while holding. */
  renewals: number;
  /** Activations that ended on this node, any reason. */
  lost: number;
  /** This node's token while it holds, else undefined. */
  token: number | undefined;
  /** The holder as this node knows it: itself, or the grantee of its own acceptor's running grant. */
  holder: { node: string; token: number } | undefined;
  /** Acceptor: claims and renewals acknowledged, and refused. */
  promises: number;
  refusals: number;
  /** Declared voters reachable from here, this node included. */
  voters: number;
  /** Set while the node refuses to claim because it sees more voters than `clusterSize`, or while a voter is configured differently (see the `misconfigured` event). */
  misconfigured: string | undefined;
}

/** Largest cluster size accepted (a majority of more voters than this is not a singleton's job). */
export const MAX_CLUSTER_SIZE = 255;
const MAX_NODE_NAME = 1024;

interface ClaimAttempt {
  r: number;
  s: number;
  sentAt: number;
  windowEnd: number;
  acks: Set<string>;
  nacks: Map<string, { why: QuorumRefusal; w: number; h: string; pr: number }>;
}

interface Holding {
  token: number;
  deadline: number;
  nextRenewAt: number;
  renewals: Map<number, { sentAt: number; acks: Set<string> }>;
  superseded: Set<string>;
}

/** The acceptor's memory (lost on restart: that is what the quarantine covers). */
interface AcceptorState {
  /** Highest round promised to a claim (renewals may be of a lower round, never claims). */
  promised: number;
  /** The last grant: to whom (claimant incarnation), of which round, until when (local time), whether released. */
  grantee: { node: string; inc: number } | undefined;
  round: number;
  until: number;
  released: boolean;
}

/** Majority of `clusterSize` voters. */
export function majorityOf(clusterSize: number): number {
  return Math.floor(clusterSize / 2) + 1;
}

/** The lease the holder counts on: `leaseMs` shortened so that a slow holder clock and a fast acceptor clock still agree. */
export function holderLeaseMs(leaseMs: number, maxClockDrift: number): number {
  return (leaseMs * (1 - maxClockDrift)) / (1 + maxClockDrift);
}

export class QuorumLease {
  private readonly majority: number;
  private readonly startedAt: number;
  private readonly quarantineUntil: number;
  /** Mesh members up (other than this node). */
  private readonly up = new Set<string>();
  /** Of those, the ones that declared this singleton, and the ones that said they do not. */
  private readonly voters = new Set<string>();
  private readonly nonVoters = new Set<string>();
  /** Voters whose configuration differs from ours (cleared when they go down). */
  private readonly mismatched = new Map<string, string>();
  private reportedMisconfig: string | undefined;
  private readonly acceptor: AcceptorState = { promised: 0, grantee: undefined, round: 0, until: Number.NEGATIVE_INFINITY, released: false };

  private state: 'idle' | 'claiming' | 'holding' | 'stopped' = 'idle';
  private claim?: ClaimAttempt;
  private holding?: Holding;
  /** Highest round seen anywhere (own acceptor, replies). */
  private highestSeen = 0;
  private seq = 0;
  /** Earliest time of the next claim (after a failed one, or the quarantine at start). */
  private retryAt: number;
  private nextHelloAt = 0;
  private stopping = false;
  /** The last round each node released to this acceptor (a hint for retrying a refused claim soon). */
  private readonly lastRelease = new Map<string, number>();
  private rankCache?: { key: string; ranked: string[] };
  private readonly counters = { claims: 0, acquired: 0, renewals: 0, lost: 0, promises: 0, refusals: 0 };

  constructor(
    readonly config: QuorumLeaseConfig,
    private readonly env: QuorumLeaseEnv,
  ) {
    this.majority = majorityOf(config.clusterSize);
    this.startedAt = env.now();
    this.quarantineUntil = this.startedAt + config.leaseMs;
    this.retryAt = this.quarantineUntil;
  }

  /** Read through a call so TypeScript does not narrow it away after a listener may have run. */
  private stoppedNow(): boolean {
    return this.state === 'stopped';
  }

  // ---- overridable rules (the property test's deliberately broken variants override these) --------

  /** How long the holder counts on a majority's acknowledgement, from when it sent the message. */
  protected holderLease(): number {
    return holderLeaseMs(this.config.leaseMs, this.config.maxClockDrift);
  }

  /** Whether this acceptor's running grant to another claimant blocks a claim now. */
  protected grantBlocks(now: number): boolean {
    return now < this.acceptor.until;
  }

  /** Whether this acceptor is still in its start-up quarantine. */
  protected inQuarantine(now: number): boolean {
    return now < this.quarantineUntil;
  }

  // ---- membership --------------------------------------------------------------------------------

  /** A mesh member came up: tell it we are a voter. */
  peerUp(node: string): void {
    if (node === this.env.self || this.state === 'stopped') return;
    this.up.add(node);
    this.env.send(node, this.hello(true));
    this.step();
  }

  /** A mesh member went down. */
  peerDown(node: string): void {
    this.up.delete(node);
    this.voters.delete(node);
    this.nonVoters.delete(node);
    this.mismatched.delete(node);
    this.step();
  }

  /** Declared voters reachable from here, this node first. */
  reachableVoters(): string[] {
    return [this.env.self, ...[...this.voters].filter((v) => this.up.has(v))];
  }

  private markVoter(node: string): void {
    if (node === this.env.self || !this.up.has(node)) return;
    this.voters.add(node);
    this.nonVoters.delete(node);
  }

  /**
   * Why this node refuses to claim and to vote, or undefined: it sees more voters than
   * `clusterSize` (two disjoint majorities could each grant the lease). Voters configured
   * differently (another `clusterSize` or `leaseMs`) count as voters here, but only refuse each
   * other's claims: with at most `clusterSize` declaring nodes (as every node checks), two groups
   * of different configurations cannot both gather a majority of their own, so the group that
   * can keeps the singleton and the other is reported (`configMismatch`).
   */
  misconfiguration(): string | undefined {
    const n = this.reachableVoters().length;
    if (n > this.config.clusterSize) {
      return `${n} nodes declare this singleton but clusterSize is ${this.config.clusterSize}: two disjoint majorities could each grant it`;
    }
    return undefined;
  }

  /** A voter configured differently from this node, as last heard, or undefined. */
  configMismatch(): string | undefined {
    for (const [node, detail] of this.mismatched) return `voter ${node} is configured differently (${detail}): each refuses the other's claims`;
    return undefined;
  }

  /** Reports a new misconfiguration (or mismatch) once; returns whether this node may claim and vote. */
  private checkConfig(): boolean {
    const blocking = this.misconfiguration();
    const m = blocking ?? this.configMismatch();
    if (m !== this.reportedMisconfig) {
      this.reportedMisconfig = m;
      if (m !== undefined) this.env.onEvent({ type: 'misconfigured', detail: m });
    }
    return blocking === undefined;
  }

  private configDiff(cs: number, ls: number): string | undefined {
    if (cs !== this.config.clusterSize) return `clusterSize ${cs}, here ${this.config.clusterSize}`;
    if (ls !== this.config.leaseMs) return `leaseMs ${ls}, here ${this.config.leaseMs}`;
    return undefined;
  }

  // ---- messages ----------------------------------------------------------------------------------

  /** A message from `from`, incarnation `inc` (as its link vouches). */
  receive(from: string, inc: number, msg: QuorumMessage): void {
    if (this.state === 'stopped') return;
    const now = this.env.now();
    this.expireIfDue(now);
    if (this.stoppedNow()) return; // a listener of \`lost\` may have stopped it
    switch (msg.t) {
      case 'hello': {
        const diff = this.configDiff(msg.cs, msg.ls);
        if (diff) this.mismatched.set(from, diff);
        else this.mismatched.delete(from);
        this.markVoter(from);
        if (msg.a) this.env.send(from, this.hello(false));
        break;
      }
      case 'nv':
        this.voters.delete(from);
        if (this.up.has(from)) this.nonVoters.add(from);
        break;
      case 'bye':
        this.voters.delete(from);
        this.mismatched.delete(from);
        if (this.up.has(from)) this.nonVoters.add(from);
        break;
      case 'claim':
      case 'renew': {
        this.markVoter(from);
        const reply = this.accept(from, inc, msg, now);
        this.env.send(from, reply);
        break;
      }
      case 'release':
        this.release(from, inc, msg.r, now);
        break;
      case 'ack':
      case 'nack':
        this.markVoter(from);
        this.reply(from, msg, now);
        break;
    }
    this.step();
  }

  /** Periodic: the driver calls it at `nextWakeAt()` (earlier or extra calls are harmless). */
  tick(): void {
    if (this.state === 'stopped') return;
    this.step();
  }

  /** Local time of the next `tick` this protocol needs (undefined: none until a message or membership change). */
  nextWakeAt(): number | undefined {
    if (this.state === 'stopped') return undefined;
    let at: number | undefined;
    const min = (t: number | undefined) => {
      if (t !== undefined && (at === undefined || t < at)) at = t;
    };
    if (this.state === 'holding' && this.holding) {
      min(this.holding.deadline);
      min(this.holding.nextRenewAt);
    } else if (this.state === 'claiming' && this.claim) {
      min(this.claim.windowEnd);
    } else {
      min(this.claimAt());
    }
    if (this.wantsHello()) min(this.nextHelloAt);
    return at;
  }

  /** Runs every time-driven rule that is due. */
  private step(): void {
    if (this.state === 'stopped') return;
    const now = this.env.now();
    this.expireIfDue(now);
    if (this.stoppedNow()) return; // a listener of \`lost\` may have stopped it
    const configOk = this.checkConfig();
    if (this.state === 'holding' && this.holding && now >= this.holding.nextRenewAt) this.renew(now);
    if (this.state === 'claiming' && this.claim && now >= this.claim.windowEnd) this.abandon(now);
    if (this.state === 'idle' && configOk) {
      const at = this.claimAt();
      if (at !== undefined && now >= at) this.startClaim(now);
    }
    if (this.wantsHello() && now >= this.nextHelloAt) {
      this.nextHelloAt = now + this.config.leaseMs;
      for (const n of this.up) {
        if (!this.voters.has(n) && !this.nonVoters.has(n)) this.env.send(n, this.hello(true));
      }
    }
  }

  private hello(answer: boolean): QuorumMessage {
    return { t: 'hello', cs: this.config.clusterSize, ls: this.config.leaseMs, a: answer };
  }

  /** Peers whose answer to our hello got lost are asked again while fewer voters than the cluster size are known. */
  private wantsHello(): boolean {
    if (this.reachableVoters().length >= this.config.clusterSize) return false;
    for (const n of this.up) if (!this.voters.has(n) && !this.nonVoters.has(n)) return true;
    return false;
  }

  // ---- acceptor ----------------------------------------------------------------------------------

  /**
   * The acceptor's answer to a claim or a renewal. The one rule safety rests on: while a grant
   * runs (not released), no other claimant incarnation gets an acknowledgement, claim or renewal.
   * Claims must also beat every round promised (that orders the tokens); a renewal need not (a
   * renewal never starts an activation), so an acceptor that promised a claim which then failed
   * still takes the holder's renewals, and knows the holder.
   */
  private accept(from: string, inc: number, msg: Extract<QuorumMessage, { t: 'claim' | 'renew' }>, now: number): QuorumMessage {
    const a = this.acceptor;
    const refuse = (why: QuorumRefusal, w: number): QuorumMessage => {
      this.counters.refusals++;
      return { t: 'nack', r: msg.r, s: msg.s, ci: inc, why, pr: a.promised, h: a.grantee?.node ?? '', w: Math.max(0, Math.ceil(w)) };
    };
    const grant = (): QuorumMessage => {
      this.counters.promises++;
      return { t: 'ack', r: msg.r, s: msg.s, ci: inc };
    };
    if (this.inQuarantine(now)) return refuse('quarantine', this.quarantineUntil - now);
    if (this.configDiff(msg.cs, msg.ls) !== undefined || this.misconfiguration() !== undefined) return refuse('config', 0);
    const mine = a.grantee !== undefined && a.grantee.node === from && a.grantee.inc === inc;
    const sameGrant = mine && a.round === msg.r;
    if (sameGrant && !a.released) {
      // A renewal (or a duplicate of the claim): the grant runs a lease from now.
      a.until = Math.max(a.until, now + this.config.leaseMs);
      return grant();
    }
    if (!a.released && this.grantBlocks(now)) {
      if (!mine) return refuse('held', a.until - now);
      // A late renewal of an earlier round of the same claimant must not take over its running
      // grant: the grant's round is what a release names, and the release of that earlier round
      // would then end the grant the current activation relies on (a counterexample the property
      // found: regression test "a late renewal of an earlier activation").
      if (msg.t === 'renew') return refuse('round', 0);
    }
    if (msg.t === 'claim' && msg.r <= a.promised) return refuse('round', 0);
    if (msg.t === 'renew' && sameGrant) return refuse('round', 0); // that round was released: a late copy
    if (msg.r > a.promised) a.promised = msg.r;
    a.grantee = { node: from, inc };
    a.round = msg.r;
    a.until = now + this.config.leaseMs;
    a.released = false;
    if (msg.r > this.highestSeen) this.highestSeen = msg.r;
    return grant();
  }

  private release(from: string, inc: number, r: number, now: number): void {
    this.lastRelease.set(from, r);
    if (this.lastRelease.size > 4 * MAX_CLUSTER_SIZE) this.lastRelease.clear();
    const a = this.acceptor;
    if (a.grantee?.node === from && a.grantee.inc === inc && a.round === r && !a.released) {
      a.released = true;
      a.until = Math.min(a.until, now);
    }
  }

  // ---- claimant / holder -------------------------------------------------------------------------

  /** When this idle node will claim (undefined: it will not, until something changes). */
  private claimAt(): number | undefined {
    if (this.state !== 'idle' || this.misconfiguration() !== undefined) return undefined;
    const reach = this.reachableVoters();
    if (reach.length < this.majority) return undefined;
    const a = this.acceptor;
    // Not before the grant our own acceptor knows of ended (ran out, or released): the ranks
    // stagger from that moment. A grantee whose grant ran out unreleased is in trouble: the
    // others rank without it.
    const base = Math.max(this.retryAt, a.until);
    let exclude: string | undefined;
    if (a.grantee && !a.released && a.grantee.node !== this.env.self) exclude = a.grantee.node;
    const ranked = this.ranked(reach.filter((n) => n !== exclude));
    let rank = ranked.indexOf(this.env.self);
    if (rank < 0) rank = ranked.length;
    return base + rank * this.config.claimStaggerMs;
  }

  /** Rendezvous ranking of `voters` for this name (cached: it hashes every voter, and the set rarely changes). */
  private ranked(voters: string[]): string[] {
    const key = voters.join('\u0000');
    if (this.rankCache?.key !== key) this.rankCache = { key, ranked: rankFor(this.env.name, voters) };
    return this.rankCache.ranked;
  }

  private nextRound(): number {
    let r = Math.max(this.highestSeen, this.acceptor.promised) + 1;
    const floor = Math.floor(this.env.tokenFloor());
    if (Number.isSafeInteger(floor) && floor > r) r = floor;
    return r;
  }

  /** Sends `msg` to every reachable voter, and hands it to this node's own acceptor at once. */
  private toVoters(msg: QuorumMessage, now: number): void {
    for (const v of this.reachableVoters()) if (v !== this.env.self) this.env.send(v, msg);
    const self = this.env.self;
    const inc = this.env.incarnation;
    if (msg.t === 'claim' || msg.t === 'renew') this.reply(self, this.accept(self, inc, msg, now) as Extract<QuorumMessage, { t: 'ack' | 'nack' }>, now);
    else if (msg.t === 'release') this.release(self, inc, msg.r, now);
  }

  private nextSeq(): number {
    return this.env.nextSeq ? this.env.nextSeq() : ++this.seq;
  }

  private startClaim(now: number): void {
    const r = this.nextRound();
    if (!Number.isSafeInteger(r)) {
      this.retryAt = now + this.config.renewEveryMs; // rounds exhausted (not before the year 2255): never spin
      return;
    }
    this.highestSeen = r;
    const s = this.nextSeq();
    this.claim = { r, s, sentAt: now, windowEnd: now + this.config.renewEveryMs, acks: new Set(), nacks: new Map() };
    this.state = 'claiming';
    this.counters.claims++;
    this.toVoters({ t: 'claim', r, s, cs: this.config.clusterSize, ls: this.config.leaseMs }, now);
  }

  /** A claim that cannot (or did not in time) reach a majority: release what it got, retry later. */
  private abandon(now: number): void {
    const c = this.claim;
    if (!c || this.state !== 'claiming') return;
    this.state = 'idle';
    this.claim = undefined;
    this.toVoters({ t: 'release', r: c.r }, now);
    // Retry when enough refusing acceptors should be free: the acceptors that acknowledged (now
    // released) and those that only wanted a higher round count as free; of the others, the
    // soonest free ones make up the rest. Never later than one claim window.
    // A grant held by a node that released that very round to us is about to be released there too.
    const window = this.config.renewEveryMs;
    let free = c.acks.size;
    const waits: number[] = [];
    for (const n of c.nacks.values()) {
      if (n.why === 'round') free++;
      else if (n.why === 'held' && this.lastRelease.get(n.h) === n.pr) waits.push(window / 8);
      else if (n.why === 'held' || n.why === 'quarantine') waits.push(n.w);
    }
    waits.sort((x, y) => x - y);
    const need = this.majority - free;
    const hint = need <= 0 ? 0 : need <= waits.length ? Math.min(waits[need - 1] as number, window) : window;
    // A known wait is waited exactly (the next grant to run out frees the majority); otherwise a
    // short pause, not a storm.
    this.retryAt = now + (hint > 0 ? hint + 1 : window / 8);
  }

  private reply(from: string, msg: Extract<QuorumMessage, { t: 'ack' | 'nack' }>, now: number): void {
    if (msg.ci !== this.env.incarnation) return; // an answer to another incarnation of this node
    if (msg.t === 'nack' && msg.pr > this.highestSeen) this.highestSeen = msg.pr;
    if (msg.t === 'nack' && msg.why === 'config' && from !== this.env.self && !this.mismatched.has(from)) {
      this.mismatched.set(from, 'it refuses our claims');
    }
    const c = this.claim;
    if (this.state === 'claiming' && c && msg.r === c.r && msg.s === c.s) {
      if (now >= c.windowEnd) {
        // Too late, even if the timer has not fired yet: a won claim must start within its window (the token order relies on it).
        this.abandon(now);
        return;
      }
      if (msg.t === 'ack') {
        c.acks.add(from);
        if (c.acks.size >= this.majority) this.acquire(c, now);
      } else {
        c.nacks.set(from, { why: msg.why, w: msg.w, h: msg.h, pr: msg.pr });
        if (this.reachableVoters().length - c.nacks.size < this.majority) this.abandon(now);
      }
      return;
    }
    const h = this.holding;
    if (msg.t === 'ack' && from !== this.env.self && !(this.state === 'holding' && h?.token === msg.r) && !(c && c.r === msg.r)) {
      // A grant for a claim this node gave up (a late or duplicated copy reached a voter): release
      // it there, so it does not hold other claimants off for a lease.
      this.env.send(from, { t: 'release', r: msg.r });
      return;
    }
    if (this.state === 'holding' && h && msg.r === h.token) {
      if (msg.t === 'ack') {
        const entry = h.renewals.get(msg.s);
        if (!entry) return;
        entry.acks.add(from);
        if (entry.acks.size >= this.majority) {
          const deadline = entry.sentAt + this.holderLease();
          if (deadline > h.deadline) {
            h.deadline = deadline;
            this.env.onEvent({ type: 'extended', token: h.token, deadline });
          }
        }
      } else if (msg.why === 'held' && msg.h !== this.env.self) {
        h.superseded.add(from);
        if (h.superseded.size >= this.majority) this.lose('superseded', now);
      }
    }
  }

  private acquire(c: ClaimAttempt, now: number): void {
    const deadline = c.sentAt + this.holderLease();
    if (now >= deadline) {
      this.abandon(now);
      return;
    }
    this.claim = undefined;
    this.state = 'holding';
    this.holding = {
      token: c.r,
      deadline,
      nextRenewAt: c.sentAt + this.config.renewEveryMs,
      renewals: new Map([[c.s, { sentAt: c.sentAt, acks: c.acks }]]),
      superseded: new Set(),
    };
    this.counters.acquired++;
    this.env.onEvent({ type: 'acquired', token: c.r, deadline });
    if (now >= this.holding.nextRenewAt) this.renew(now);
  }

  private renew(now: number): void {
    const h = this.holding;
    if (!h) return;
    const s = this.nextSeq();
    h.renewals.set(s, { sentAt: now, acks: new Set() });
    // Renewals too old to move the deadline any more are forgotten.
    const lease = this.holderLease();
    for (const [k, e] of h.renewals) if (e.sentAt + lease <= h.deadline) h.renewals.delete(k);
    h.nextRenewAt = now + this.config.renewEveryMs;
    this.counters.renewals++;
    this.toVoters({ t: 'renew', r: h.token, s, cs: this.config.clusterSize, ls: this.config.leaseMs }, now);
  }

  private expireIfDue(now: number): void {
    if (this.state === 'holding' && this.holding && now >= this.holding.deadline) this.lose('lease_expired', now);
  }

  /** Ends the activation (the event first: the worker stops before any acceptor is released). */
  private lose(reason: QuorumLostReason, now: number): void {
    const h = this.holding;
    if (!h) return;
    this.holding = undefined;
    this.state = 'idle';
    this.counters.lost++;
    this.env.onEvent({ type: 'lost', token: h.token, reason });
    this.toVoters({ t: 'release', r: h.token }, now);
  }

  /**
   * Leaves: an activation ends (`lost`, `stopped`) and its grants are released, so a successor
   * need not wait out the lease; peers stop counting this node as a voter. Final.
   */
  stop(): void {
    if (this.stopping || this.state === 'stopped') return;
    this.stopping = true;
    const now = this.env.now();
    this.expireIfDue(now);
    // "Not a voter any more" goes out before the release, so that peers rank its successor without it.
    for (const n of this.up) this.env.send(n, { t: 'bye' });
    if (this.state === 'holding') this.lose('stopped', now);
    if (this.state === 'claiming') this.abandon(now);
    this.state = 'stopped';
  }

  // ---- views -------------------------------------------------------------------------------------

  /** Whether this node holds the lease right now (its deadline has not passed). */
  isHolder(): boolean {
    return this.state === 'holding' && this.holding !== undefined && this.env.now() < this.holding.deadline;
  }

  /** This node's token while it holds. */
  token(): number | undefined {
    return this.isHolder() ? this.holding?.token : undefined;
  }

  /** The holder as this node knows it: itself while it holds, else the grantee of its own acceptor's running grant. */
  holder(): { node: string; token: number } | undefined {
    if (this.isHolder() && this.holding) return { node: this.env.self, token: this.holding.token };
    const a = this.acceptor;
    if (a.grantee && !a.released && this.env.now() < a.until && a.grantee.node !== this.env.self) return { node: a.grantee.node, token: a.round };
    return undefined;
  }

  stats(): QuorumLeaseStats {
    return {
      state: this.state,
      ...this.counters,
      token: this.token(),
      holder: this.holder(),
      voters: this.reachableVoters().length,
      misconfigured: this.misconfiguration() ?? this.configMismatch(),
    };
  }
}

/**
 * Checks the shape of a message from the wire (untrusted bytes, decoded): undefined when it is
 * not one of the protocol's messages.
 */
export function parseQuorumMessage(v: unknown): QuorumMessage | undefined {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return undefined;
  const m = v as Record<string, unknown>;
  const round = (x: unknown): x is number => typeof x === 'number' && Number.isSafeInteger(x) && x >= 0;
  const num = (x: unknown): x is number => typeof x === 'number' && Number.isFinite(x);
  const size = (x: unknown): x is number => typeof x === 'number' && Number.isInteger(x) && x >= 1 && x <= MAX_CLUSTER_SIZE;
  const lease = (x: unknown): x is number => typeof x === 'number' && Number.isFinite(x) && x > 0;
  switch (m.t) {
    case 'hello':
      return size(m.cs) && lease(m.ls) && typeof m.a === 'boolean' ? { t: 'hello', cs: m.cs, ls: m.ls, a: m.a } : undefined;
    case 'nv':
      return { t: 'nv' };
    case 'bye':
      return { t: 'bye' };
    case 'claim':
    case 'renew':
      return round(m.r) && round(m.s) && size(m.cs) && lease(m.ls) ? { t: m.t, r: m.r, s: m.s, cs: m.cs, ls: m.ls } : undefined;
    case 'ack':
      return round(m.r) && round(m.s) && num(m.ci) ? { t: 'ack', r: m.r, s: m.s, ci: m.ci } : undefined;
    case 'nack':
      return round(m.r) &&
        round(m.s) &&
        num(m.ci) &&
        (m.why === 'held' || m.why === 'round' || m.why === 'quarantine' || m.why === 'config') &&
        round(m.pr) &&
        typeof m.h === 'string' &&
        m.h.length <= MAX_NODE_NAME &&
        num(m.w) &&
        m.w >= 0
        ? { t: 'nack', r: m.r, s: m.s, ci: m.ci, why: m.why, pr: m.pr, h: m.h, w: m.w }
        : undefined;
    case 'release':
      return round(m.r) ? { t: 'release', r: m.r } : undefined;
    default:
      return undefined;
  }
}
