/**
 * The two-phase commit of `node.config.setClusterWide`: the coordinator and participant state
 * machines, pure (no timers, no sockets: the host passes the time, delivers messages and calls
 * `tick`), so a property test can drive them over a simulated network.
 *
 * Every node runs one `TwoPhase`, coordinator of the transactions it starts and participant in
 * every transaction (its own included). The protocol:
 *
 * 1. **Prepare.** The coordinator sends `prepare` (the writes, the base version, the participants
 *    with the incarnation each had) to every participant. A participant takes the lock (one
 *    prepared transaction per node: a second prepare votes no, `locked`), checks the base version
 *    (`stale` otherwise), runs the validators (through the host) and votes.
 * 2. **Decide.** All yes: the coordinator decides commit. Any no, or a missing vote at the
 *    deadline: abort, sent to every participant.
 * 3. **Commit.** The coordinator sends `commit` and applies it itself only once one other
 *    participant acknowledged it (so a commit is never applied by the coordinator alone; see
 *    "termination"). A participant applies a `commit` and acknowledges it, unless it is fenced.
 *
 * **Termination (the recovery of a participant that voted yes and lost the coordinator).** When
 * its coordinator goes down, or no decision came within the prepare's timeout plus a grace, a
 * prepared participant fences itself (it will refuse a direct `commit` from now on) and asks
 * every other participant for the outcome. An answer counts only from the incarnation that was
 * asked to prepare. Answers and what they do:
 * - `committed` (the responder applied it): commit;
 * - `aborted` (the responder aborted, or never voted and now never will): abort;
 * - `prepared` (voted yes, no decision): the responder fences itself too;
 * - every participant other than the coordinator answered `prepared`: abort. This is safe
 *   because a commit is only ever applied after a participant other than the coordinator accepted
 *   a direct `commit`, and a fenced participant never does: none did, none will.
 *
 * **The case that stays blocked.** A participant other than the coordinator crashed (or stays
 * partitioned) after voting yes, and every participant still reachable is prepared and fenced,
 * with no outcome known to anyone reachable: the crashed one may have accepted the commit (and
 * acknowledged it, letting the coordinator apply it) just before dying, or may not have. Nobody
 * can know, the coordinator included; classic 2PC blocks here, and so does this one. The
 * transaction stays in doubt, its lock held, listed by `inDoubt()` (stats, `/config`). It
 * resolves when that incarnation answers again (a partition heals). A restarted node is a new
 * incarnation that remembers nothing, so after a crash the only way out is an operator's
 * `forceResolve` on each blocked node (docs/guides/config.md says how to choose).
 */

/** One change of a transaction: `value` undefined deletes the path. */
export interface ConfigWrite {
  path: string;
  value?: unknown;
}

/** Why a participant voted no (or what stood for its vote). */
export type VoteCode =
  /** A validator threw or rejected; `reason` is its message. */
  | 'veto'
  /** The participant holds another prepared transaction. */
  | 'locked'
  /** The participant's config version differs from the coordinator's (one of them missed a commit). */
  | 'stale'
  /** The participant has not fetched the cluster config yet (it just started). */
  | 'syncing'
  /** No vote came before the deadline. */
  | 'timeout'
  /** The participant is not connected (down, partitioned). */
  | 'unreachable'
  /** The participant restarted since the transaction began (another incarnation answered). */
  | 'incarnation'
  /** The participant had already aborted the transaction (it answered an outcome query first). */
  | 'aborted';

/** One participant's vote, as the coordinator saw it. */
export interface Vote {
  node: string;
  /** `yes`, `no`, or `none` when no vote came (`code` says why). */
  vote: 'yes' | 'no' | 'none';
  code?: VoteCode;
  reason?: string;
}

/** Participants of a transaction: node name → incarnation asked to prepare. */
export type Participants = Record<string, number>;

export type Outcome = 'committed' | 'aborted';

/** Messages of the protocol (on the wire, checked by {@link parseTwoPhaseMessage}). */
export type TwoPhaseMessage =
  | { t: 'prepare'; tx: string; coord: string; parts: Participants; writes: ConfigWrite[]; base: number; timeoutMs: number }
  | { t: 'vote'; tx: string; yes: boolean; code?: VoteCode; reason?: string; version: number }
  | { t: 'commit'; tx: string; parts: Participants }
  | { t: 'abort'; tx: string }
  | { t: 'ack'; tx: string; ok: boolean; state?: 'fenced' | 'aborted' | 'unknown' }
  | { t: 'query'; tx: string; coord: string; parts: Participants }
  | { t: 'outcome'; tx: string; state: 'committed' | 'aborted' | 'prepared' | 'gone'; parts?: Participants };

/** A transaction this node holds prepared without a decision, past its deadline: in doubt. */
export interface InDoubtTransaction {
  tx: string;
  coordinator: string;
  paths: string[];
  /** When this node voted yes (ms since epoch). */
  preparedAt: number;
  /** When it started asking the others for the outcome. */
  terminatingSince: number;
  /** Participants (other than the coordinator) whose voting incarnation has not answered yet. */
  waitingFor: string[];
}

/** What the coordinator reports to the caller of `begin`. */
export interface CoordinatorResult {
  tx: string;
  /** `committed` (applied here, and by every node in `acked`), `aborted`, or `in-doubt` (no outcome within twice the timeout). */
  outcome: Outcome | 'in-doubt';
  votes: Vote[];
  /** Participants that acknowledged the commit when the result was reported. */
  acked: string[];
  /** The cluster config version the commit made (base + 1). */
  version: number;
}

/** What the state machines need from their node. */
export interface TwoPhaseHost {
  /** Milliseconds (simulated or wall-clock). */
  now(): number;
  /** Sends a message to another node (never this one: the machine handles its own part locally). Must not throw. */
  send(to: string, msg: TwoPhaseMessage): void;
  /** This node's cluster config version. */
  version(): number;
  /**
   * Runs this node's validators on a prepared transaction. The host answers later (or at once)
   * with `TwoPhase.voted`.
   */
  validate(tx: string, writes: ConfigWrite[]): void;
  /** Applies a committed transaction: the store goes to `version`. */
  apply(tx: string, writes: ConfigWrite[], version: number, coordinator: string): void;
  /** A transaction ended on this node (for stats and tests). */
  ended?(tx: string, outcome: Outcome): void;
}

/** Timing of the machines, in ms. */
export interface TwoPhaseTiming {
  /** A participant waits this long past the prepare's timeout for a decision, then asks the others. */
  graceMs: number;
  /** An in-doubt participant asks again this often; a coordinator resends unacknowledged commits this often. */
  retryMs: number;
}

export const DEFAULT_TIMING: TwoPhaseTiming = { graceMs: 1000, retryMs: 500 };

/** How many final outcomes a node remembers, to answer late queries and duplicates. */
const OUTCOMES_KEPT = 10_000;

/** A transaction as a participant holds it (exported for the property tests' broken variants). */
export interface ParticipantTx {
  tx: string;
  coord: string;
  parts: Participants;
  writes: ConfigWrite[];
  base: number;
  phase: 'validating' | 'prepared';
  /** Answered an outcome query while validating: the vote will be no. */
  refuse: boolean;
  /** Will refuse a direct commit (asked the others, or answered `prepared` to one who did). */
  fenced: boolean;
  preparedAt: number;
  deadline: number;
  terminatingSince?: number;
  lastQueryAt: number;
  /** Participants whose voting incarnation answered `prepared`. */
  prepared: Set<string>;
}

/** A transaction as its coordinator tracks it. */
export interface CoordinatorTx {
  tx: string;
  parts: Participants;
  writes: ConfigWrite[];
  base: number;
  votes: Map<string, Vote>;
  phase: 'collecting' | 'committing' | 'applied';
  deadline: number;
  timeoutMs: number;
  decidedAt: number;
  lastSendAt: number;
  acked: Set<string>;
  reported: boolean;
  done: (r: CoordinatorResult) => void;
}

export class TwoPhase {
  protected readonly participant = new Map<string, ParticipantTx>();
  protected readonly coordinated = new Map<string, CoordinatorTx>();
  protected readonly outcomes = new Map<string, Outcome>();
  /** The transaction holding this node's lock (prepared here, or coordinated here and not yet applied or aborted). */
  protected lockHolder: string | undefined;
  private seq = 0;
  readonly counters = { committed: 0, aborted: 0, terminations: 0, terminationCommits: 0, terminationAborts: 0, fencedRefusals: 0 };

  constructor(
    readonly self: string,
    readonly incarnation: number,
    protected readonly host: TwoPhaseHost,
    protected readonly timing: TwoPhaseTiming = DEFAULT_TIMING,
  ) {}

  /** The transaction holding the lock, if any. */
  get locked(): string | undefined {
    return this.lockHolder;
  }

  /** The outcome this node knows of `tx`. */
  outcome(tx: string): Outcome | undefined {
    return this.outcomes.get(tx);
  }

  /** Transactions this node is coordinating or holds prepared. */
  pending(): string[] {
    return [...new Set([...this.coordinated.keys(), ...this.participant.keys()])];
  }

  /**
   * Starts a transaction coordinated by this node. `parts` must include this node. `done` is
   * called once with the result. Returns the transaction id.
   */
  begin(parts: Participants, writes: ConfigWrite[], timeoutMs: number, done: (r: CoordinatorResult) => void, unreachable: readonly string[] = []): string {
    const tx = `${this.self}:${this.incarnation}:${++this.seq}`;
    const now = this.host.now();
    const c: CoordinatorTx = {
      tx,
      parts: { ...parts, [this.self]: this.incarnation },
      writes,
      base: this.host.version(),
      votes: new Map(),
      phase: 'collecting',
      deadline: now + timeoutMs,
      timeoutMs,
      decidedAt: 0,
      lastSendAt: now,
      acked: new Set(),
      reported: false,
      done,
    };
    this.coordinated.set(tx, c);
    for (const n of unreachable) c.votes.set(n, { node: n, vote: 'none', code: 'unreachable', reason: 'not connected' });
    if (c.votes.size > 0) {
      this.decide(c, false);
      return tx;
    }
    // This node's own part: lock, then its validators.
    if (this.lockHolder !== undefined) {
      c.votes.set(this.self, { node: this.self, vote: 'no', code: 'locked', reason: `this node holds transaction ${this.lockHolder}` });
      this.decide(c, false);
      return tx;
    }
    this.lockHolder = tx;
    const prepare: TwoPhaseMessage = { t: 'prepare', tx, coord: this.self, parts: c.parts, writes, base: c.base, timeoutMs };
    for (const n of Object.keys(c.parts)) if (n !== this.self) this.host.send(n, prepare);
    this.host.validate(tx, writes);
    return tx;
  }

  /** The host's answer to `validate`. */
  voted(tx: string, yes: boolean, code?: VoteCode, reason?: string): void {
    const c = this.coordinated.get(tx);
    if (c) {
      if (c.phase !== 'collecting' || c.votes.has(this.self)) return;
      c.votes.set(this.self, yes ? { node: this.self, vote: 'yes' } : { node: this.self, vote: 'no', code: code ?? 'veto', ...(reason ? { reason } : {}) });
      this.maybeDecide(c);
      return;
    }
    const p = this.participant.get(tx);
    if (p?.phase !== 'validating') return;
    if (p.refuse || !yes) {
      this.sendVote(p.coord, tx, false, p.refuse ? 'aborted' : (code ?? 'veto'), p.refuse ? 'answered an outcome query before voting' : reason);
      this.finishParticipant(p, 'aborted');
      return;
    }
    p.phase = 'prepared';
    p.preparedAt = this.host.now();
    this.sendVote(p.coord, tx, true);
  }

  private sendVote(to: string, tx: string, yes: boolean, code?: VoteCode, reason?: string): void {
    const msg: TwoPhaseMessage = { t: 'vote', tx, yes, version: this.host.version() };
    if (!yes) {
      if (code) msg.code = code;
      if (reason) msg.reason = reason;
    }
    this.host.send(to, msg);
  }

  /** A message from `from` (incarnation `inc`). */
  receive(from: string, inc: number, msg: TwoPhaseMessage): void {
    switch (msg.t) {
      case 'prepare':
        this.onPrepare(from, inc, msg);
        break;
      case 'vote':
        this.onVote(from, inc, msg);
        break;
      case 'commit':
        this.onCommit(from, msg);
        break;
      case 'abort':
        this.onAbort(msg.tx);
        break;
      case 'ack':
        this.onAck(from, inc, msg);
        break;
      case 'query':
        this.onQuery(from, msg);
        break;
      case 'outcome':
        this.onOutcome(from, inc, msg);
        break;
    }
  }

  protected onPrepare(from: string, _inc: number, m: Extract<TwoPhaseMessage, { t: 'prepare' }>): void {
    if (m.coord !== from) return;
    if (m.parts[this.self] !== this.incarnation) {
      this.sendVote(from, m.tx, false, 'incarnation', 'this node restarted since the transaction began');
      return;
    }
    const known = this.outcomes.get(m.tx);
    if (known) {
      this.sendVote(from, m.tx, known === 'committed', known === 'aborted' ? 'aborted' : undefined);
      return;
    }
    const existing = this.participant.get(m.tx);
    if (existing) {
      if (existing.phase === 'prepared') this.sendVote(from, m.tx, true);
      return;
    }
    if (this.lockHolder !== undefined) {
      this.sendVote(from, m.tx, false, 'locked', `node ${this.self} holds transaction ${this.lockHolder}`);
      return;
    }
    const version = this.host.version();
    if (version !== m.base) {
      this.sendVote(from, m.tx, false, 'stale', `node ${this.self} is at version ${version}, the coordinator at ${m.base}`);
      return;
    }
    const now = this.host.now();
    this.lockHolder = m.tx;
    this.participant.set(m.tx, {
      tx: m.tx,
      coord: m.coord,
      parts: m.parts,
      writes: m.writes,
      base: m.base,
      phase: 'validating',
      refuse: false,
      fenced: false,
      preparedAt: now,
      deadline: now + m.timeoutMs + this.timing.graceMs,
      lastQueryAt: 0,
      prepared: new Set(),
    });
    this.host.validate(m.tx, m.writes);
  }

  protected onVote(from: string, inc: number, m: Extract<TwoPhaseMessage, { t: 'vote' }>): void {
    const c = this.coordinated.get(m.tx);
    if (c?.phase !== 'collecting' || !(from in c.parts) || c.votes.has(from)) return;
    if (c.parts[from] !== inc) {
      c.votes.set(from, { node: from, vote: 'none', code: 'incarnation', reason: 'the node restarted since the transaction began' });
    } else if (m.yes) {
      c.votes.set(from, { node: from, vote: 'yes' });
    } else {
      c.votes.set(from, { node: from, vote: 'no', code: m.code ?? 'veto', ...(m.reason !== undefined ? { reason: m.reason } : {}) });
    }
    this.maybeDecide(c);
  }

  private maybeDecide(c: CoordinatorTx): void {
    for (const v of c.votes.values()) {
      if (v.vote !== 'yes') {
        this.decide(c, false);
        return;
      }
    }
    if (c.votes.size === Object.keys(c.parts).length) this.decide(c, true);
  }

  protected decide(c: CoordinatorTx, commit: boolean): void {
    if (c.phase !== 'collecting') return;
    c.decidedAt = this.host.now();
    if (!commit) {
      const late = c.decidedAt >= c.deadline;
      for (const n of Object.keys(c.parts)) {
        if (c.votes.has(n)) continue;
        // At the deadline a missing vote is why it aborted; before it, another vote was.
        c.votes.set(
          n,
          late
            ? { node: n, vote: 'none', code: 'timeout', reason: `no vote within ${c.timeoutMs} ms` }
            : { node: n, vote: 'none', reason: 'aborted before this vote came' },
        );
      }
      for (const n of Object.keys(c.parts)) if (n !== this.self) this.host.send(n, { t: 'abort', tx: c.tx });
      this.finishCoordinator(c, 'aborted');
      return;
    }
    c.phase = 'committing';
    c.lastSendAt = c.decidedAt;
    const others = Object.keys(c.parts).filter((n) => n !== this.self);
    if (others.length === 0) {
      this.applyCoordinator(c);
      return;
    }
    this.sendCommits(c, others);
  }

  /** Sends the commit decision (a hook point: the test host may hold it back). */
  protected sendCommits(c: CoordinatorTx, to: string[]): void {
    for (const n of to) this.host.send(n, { t: 'commit', tx: c.tx, parts: c.parts });
  }

  private applyCoordinator(c: CoordinatorTx): void {
    if (c.phase === 'applied') return;
    c.phase = 'applied';
    this.host.apply(c.tx, c.writes, c.base + 1, this.self);
    this.remember(c.tx, 'committed');
    if (this.lockHolder === c.tx) this.lockHolder = undefined;
    this.counters.committed++;
    this.host.ended?.(c.tx, 'committed');
    this.maybeReport(c);
  }

  private maybeReport(c: CoordinatorTx): void {
    if (c.reported || c.phase !== 'applied') return;
    const others = Object.keys(c.parts).filter((n) => n !== this.self);
    if (others.every((n) => c.acked.has(n)) || this.host.now() >= c.decidedAt + c.timeoutMs) this.report(c, 'committed');
  }

  private report(c: CoordinatorTx, outcome: CoordinatorResult['outcome']): void {
    if (c.reported) return;
    c.reported = true;
    c.done({ tx: c.tx, outcome, votes: Object.keys(c.parts).map((n) => c.votes.get(n) as Vote), acked: [...c.acked].sort(), version: c.base + 1 });
    if (outcome !== 'in-doubt' && (c.phase !== 'applied' || c.acked.size === Object.keys(c.parts).length - 1)) this.coordinated.delete(c.tx);
  }

  private finishCoordinator(c: CoordinatorTx, outcome: Outcome): void {
    if (outcome === 'aborted') {
      this.remember(c.tx, 'aborted');
      if (this.lockHolder === c.tx) this.lockHolder = undefined;
      this.counters.aborted++;
      this.host.ended?.(c.tx, 'aborted');
      c.phase = 'applied';
      this.report(c, 'aborted');
      this.coordinated.delete(c.tx);
    }
  }

  protected onAck(from: string, inc: number, m: Extract<TwoPhaseMessage, { t: 'ack' }>): void {
    const c = this.coordinated.get(m.tx);
    if (!c || c.parts[from] !== inc) return;
    if (m.ok) {
      c.acked.add(from);
      if (c.phase === 'committing') this.applyCoordinator(c);
      else this.maybeReport(c);
      if (c.reported && c.acked.size === Object.keys(c.parts).length - 1) this.coordinated.delete(c.tx);
    } else if (m.state === 'aborted' && c.phase === 'committing') {
      // Only a termination aborts a transaction whose votes were all yes, and it does so only
      // when no participant other than this coordinator accepted the commit: never applied anywhere.
      this.finishCoordinator(c, 'aborted');
    }
  }

  protected onCommit(from: string, m: Extract<TwoPhaseMessage, { t: 'commit' }>): void {
    if (m.parts[this.self] !== this.incarnation) return;
    const known = this.outcomes.get(m.tx);
    if (known) {
      this.host.send(from, { t: 'ack', tx: m.tx, ok: known === 'committed', ...(known === 'aborted' ? { state: 'aborted' as const } : {}) });
      return;
    }
    const p = this.participant.get(m.tx);
    if (p?.phase !== 'prepared') {
      this.host.send(from, { t: 'ack', tx: m.tx, ok: false, state: 'unknown' });
      return;
    }
    if (p.fenced) {
      this.counters.fencedRefusals++;
      this.host.send(from, { t: 'ack', tx: m.tx, ok: false, state: 'fenced' });
      return;
    }
    this.commitParticipant(p);
    this.host.send(from, { t: 'ack', tx: m.tx, ok: true });
  }

  protected onAbort(tx: string): void {
    const p = this.participant.get(tx);
    if (p) this.finishParticipant(p, 'aborted');
  }

  protected commitParticipant(p: ParticipantTx): void {
    this.host.apply(p.tx, p.writes, p.base + 1, p.coord);
    this.finishParticipant(p, 'committed');
  }

  protected finishParticipant(p: ParticipantTx, outcome: Outcome): void {
    if (this.participant.get(p.tx) !== p) return;
    this.participant.delete(p.tx);
    this.remember(p.tx, outcome);
    if (this.lockHolder === p.tx) this.lockHolder = undefined;
    if (outcome === 'committed') this.counters.committed++;
    else this.counters.aborted++;
    if (p.terminatingSince !== undefined) {
      if (outcome === 'committed') this.counters.terminationCommits++;
      else this.counters.terminationAborts++;
    }
    this.host.ended?.(p.tx, outcome);
  }

  private remember(tx: string, outcome: Outcome): void {
    this.outcomes.set(tx, outcome);
    if (this.outcomes.size > OUTCOMES_KEPT) {
      const oldest = this.outcomes.keys().next().value as string;
      this.outcomes.delete(oldest);
    }
  }

  protected onQuery(from: string, m: Extract<TwoPhaseMessage, { t: 'query' }>): void {
    this.host.send(from, { t: 'outcome', tx: m.tx, state: this.answerQuery(m) });
  }

  /** What this node answers to an outcome query (and what answering does here). */
  private answerQuery(m: Extract<TwoPhaseMessage, { t: 'query' }>): 'committed' | 'aborted' | 'prepared' | 'gone' {
    if (m.parts[this.self] !== this.incarnation) return 'gone';
    const c = this.coordinated.get(m.tx);
    if (c) {
      if (c.phase === 'collecting') {
        // A participant gave up waiting: abort (always allowed before deciding).
        this.decide(c, false);
        return 'aborted';
      }
      if (c.phase === 'committing') return 'prepared';
    }
    const known = this.outcomes.get(m.tx);
    if (known) return known;
    const p = this.participant.get(m.tx);
    if (p) {
      if (p.phase === 'validating') {
        p.refuse = true;
        return 'aborted';
      }
      p.fenced = true;
      return 'prepared';
    }
    // Never saw the prepare: abort it here, so a late prepare votes no, and say so.
    if (m.coord === this.self) return 'aborted';
    this.remember(m.tx, 'aborted');
    this.counters.aborted++;
    this.host.ended?.(m.tx, 'aborted');
    return 'aborted';
  }

  protected onOutcome(from: string, inc: number, m: Extract<TwoPhaseMessage, { t: 'outcome' }>): void {
    const c = this.coordinated.get(m.tx);
    if (c && c.phase === 'committing' && c.parts[from] === inc) {
      if (m.state === 'aborted') this.finishCoordinator(c, 'aborted');
      else if (m.state === 'committed') this.applyCoordinator(c);
      return;
    }
    const p = this.participant.get(m.tx);
    if (p?.phase !== 'prepared' || p.parts[from] !== inc) return;
    if (m.state === 'committed') {
      this.commitParticipant(p);
      this.broadcastOutcome(p, 'committed');
    } else if (m.state === 'aborted') {
      this.finishParticipant(p, 'aborted');
      this.broadcastOutcome(p, 'aborted');
    } else if (m.state === 'prepared' && p.terminatingSince !== undefined) {
      p.prepared.add(from);
      this.maybeTerminate(p);
    }
  }

  /** Tells every other participant what this terminating node learnt (they may be waiting too). */
  private broadcastOutcome(p: ParticipantTx, state: Outcome): void {
    if (p.terminatingSince === undefined) return;
    for (const n of Object.keys(p.parts)) if (n !== this.self) this.host.send(n, { t: 'outcome', tx: p.tx, state });
  }

  private maybeTerminate(p: ParticipantTx): void {
    const others = Object.keys(p.parts).filter((n) => n !== p.coord && n !== this.self);
    if (others.every((n) => p.prepared.has(n))) {
      // Every participant but the coordinator is prepared and fenced: none accepted the commit,
      // none will, so the coordinator never applied it either.
      this.finishParticipant(p, 'aborted');
      for (const n of Object.keys(p.parts)) if (n !== this.self) this.host.send(n, { t: 'outcome', tx: p.tx, state: 'aborted' });
    }
  }

  /** Starts (or restarts) the termination of a prepared transaction: fence, then ask. */
  protected startTermination(p: ParticipantTx): void {
    const now = this.host.now();
    if (p.terminatingSince === undefined) {
      p.terminatingSince = now;
      p.fenced = true;
      this.counters.terminations++;
      this.maybeTerminate(p);
      if (this.participant.get(p.tx) !== p) return;
    }
    p.lastQueryAt = now;
    const query: TwoPhaseMessage = { t: 'query', tx: p.tx, coord: p.coord, parts: p.parts };
    for (const n of Object.keys(p.parts)) if (n !== this.self && !p.prepared.has(n)) this.host.send(n, query);
  }

  /**
   * A member went down: transactions this node coordinates that still wait for its vote abort
   * now, and prepared transactions it coordinates start their termination now.
   */
  peerDown(name: string): void {
    for (const c of [...this.coordinated.values()]) {
      if (c.phase === 'collecting' && name in c.parts && !c.votes.has(name)) {
        c.votes.set(name, { node: name, vote: 'none', code: 'unreachable', reason: 'went down before voting' });
        this.decide(c, false);
      }
    }
    for (const p of [...this.participant.values()]) if (p.coord === name && p.phase === 'prepared') this.startTermination(p);
  }

  /**
   * The link to `name` was replaced while both ends stayed up (a tie-break, a re-dial): what was in
   * flight on the old link may be lost. A prepare that `name` has not voted on goes again, and so
   * does this node's yes vote on a transaction `name` coordinates; both are idempotent (a
   * participant that holds the transaction votes the same again, a coordinator counts one vote per
   * node). Commits, acknowledgements and queries are retried by `tick` and `peerUp` anyway.
   * Without this a transaction begun as links settle waits out its timeout and aborts.
   */
  linkReplaced(name: string): void {
    if (name === this.self) return;
    for (const c of this.coordinated.values()) {
      if (c.phase === 'collecting' && name in c.parts && !c.votes.has(name)) {
        this.host.send(name, { t: 'prepare', tx: c.tx, coord: this.self, parts: c.parts, writes: c.writes, base: c.base, timeoutMs: c.timeoutMs });
      }
    }
    for (const p of this.participant.values()) if (p.coord === name && p.phase === 'prepared') this.sendVote(name, p.tx, true);
  }

  /** A member came up: in-doubt transactions ask it at once. */
  peerUp(name: string): void {
    for (const p of [...this.participant.values()]) {
      if (p.terminatingSince !== undefined && name in p.parts && !p.prepared.has(name)) {
        this.host.send(name, { t: 'query', tx: p.tx, coord: p.coord, parts: p.parts });
      }
    }
  }

  /** Deadlines: votes not in, decisions not come, commits not acknowledged. Call every `retryMs` or so. */
  tick(): void {
    const now = this.host.now();
    for (const c of [...this.coordinated.values()]) {
      if (c.phase === 'collecting' && now >= c.deadline) this.decide(c, false);
      else if (c.phase === 'committing' || (c.phase === 'applied' && c.acked.size < Object.keys(c.parts).length - 1)) {
        if (now - c.lastSendAt >= this.timing.retryMs && now - c.decidedAt < 60_000) {
          c.lastSendAt = now;
          this.sendCommits(
            c,
            Object.keys(c.parts).filter((n) => n !== this.self && !c.acked.has(n)),
          );
        }
        if (c.phase === 'applied') this.maybeReport(c);
        else if (!c.reported && now >= c.decidedAt + 2 * c.timeoutMs + this.timing.graceMs) this.report(c, 'in-doubt');
        if (c.phase === 'applied' && now - c.decidedAt >= 60_000) this.coordinated.delete(c.tx);
      }
    }
    for (const p of [...this.participant.values()]) {
      if (p.phase !== 'prepared') continue;
      if (p.terminatingSince === undefined) {
        if (now >= p.deadline) this.startTermination(p);
      } else if (now - p.lastQueryAt >= this.timing.retryMs) {
        this.startTermination(p);
      }
    }
  }

  /** Prepared transactions that are asking the others for their outcome. */
  inDoubt(): InDoubtTransaction[] {
    const out: InDoubtTransaction[] = [];
    for (const p of this.participant.values()) {
      if (p.terminatingSince === undefined) continue;
      out.push({
        tx: p.tx,
        coordinator: p.coord,
        paths: p.writes.map((w) => w.path),
        preparedAt: p.preparedAt,
        terminatingSince: p.terminatingSince,
        waitingFor: Object.keys(p.parts)
          .filter((n) => n !== p.coord && n !== this.self && !p.prepared.has(n))
          .sort(),
      });
    }
    for (const c of this.coordinated.values()) {
      if (c.phase !== 'committing' || !c.reported) continue;
      out.push({
        tx: c.tx,
        coordinator: this.self,
        paths: c.writes.map((w) => w.path),
        preparedAt: c.decidedAt,
        terminatingSince: c.decidedAt,
        waitingFor: Object.keys(c.parts)
          .filter((n) => n !== this.self && !c.acked.has(n))
          .sort(),
      });
    }
    return out;
  }

  /**
   * Operator's way out of a transaction blocked for good (coordinator and another participant
   * both crashed): decides it on this node only. Choosing wrong breaks atomicity (docs/guides/config.md).
   * Returns false when this node does not hold `tx` in doubt.
   */
  forceResolve(tx: string, outcome: Outcome): boolean {
    const p = this.participant.get(tx);
    if (p?.phase !== 'prepared') return false;
    if (outcome === 'committed') this.commitParticipant(p);
    else this.finishParticipant(p, 'aborted');
    return true;
  }
}

const T_KINDS = new Set(['prepare', 'vote', 'commit', 'abort', 'ack', 'query', 'outcome']);
const OUTCOME_STATES = new Set(['committed', 'aborted', 'prepared', 'gone']);
const ACK_STATES = new Set(['fenced', 'aborted', 'unknown']);

function isParts(v: unknown): v is Participants {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return false;
  const entries = Object.entries(v);
  return entries.length > 0 && entries.length <= 10_000 && entries.every(([, inc]) => Number.isSafeInteger(inc));
}

function isWrites(v: unknown): v is ConfigWrite[] {
  return (
    Array.isArray(v) && v.length > 0 && v.length <= 10_000 && v.every((w) => typeof w === 'object' && w !== null && typeof (w as ConfigWrite).path === 'string')
  );
}

/** The wire check of a protocol message: the message, or undefined when malformed. */
export function parseTwoPhaseMessage(v: unknown): TwoPhaseMessage | undefined {
  if (typeof v !== 'object' || v === null) return undefined;
  const m = v as Record<string, unknown>;
  if (typeof m.t !== 'string' || !T_KINDS.has(m.t) || typeof m.tx !== 'string' || m.tx.length === 0 || m.tx.length > 512) return undefined;
  switch (m.t) {
    case 'prepare':
      return typeof m.coord === 'string' &&
        isParts(m.parts) &&
        isWrites(m.writes) &&
        Number.isSafeInteger(m.base) &&
        typeof m.timeoutMs === 'number' &&
        m.timeoutMs > 0 &&
        m.timeoutMs <= 3_600_000
        ? (m as TwoPhaseMessage)
        : undefined;
    case 'vote':
      return typeof m.yes === 'boolean' && Number.isSafeInteger(m.version) && (m.reason === undefined || typeof m.reason === 'string')
        ? (m as TwoPhaseMessage)
        : undefined;
    case 'commit':
      return isParts(m.parts) ? (m as TwoPhaseMessage) : undefined;
    case 'abort':
      return m as TwoPhaseMessage;
    case 'ack':
      return typeof m.ok === 'boolean' && (m.state === undefined || ACK_STATES.has(m.state as string)) ? (m as TwoPhaseMessage) : undefined;
    case 'query':
      return typeof m.coord === 'string' && isParts(m.parts) ? (m as TwoPhaseMessage) : undefined;
    case 'outcome':
      return typeof m.state === 'string' && OUTCOME_STATES.has(m.state) ? (m as TwoPhaseMessage) : undefined;
  }
  return undefined;
}
