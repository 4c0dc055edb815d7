/**
 * The quorum lease over a timed simulated network (test/helpers/timed-sim.ts): per-message
 * delays (so reordering), loss, duplication, long-delayed stale messages, partitions and heals
 * seen after a detection delay, pauses (SIGSTOP: nothing runs, the clock jumps on resume),
 * crashes with restart (state lost), handles stopped and declared again, clocks running at
 * different rates within the drift bound, wall clocks off by up to a quarter lease.
 *
 * The checker states the invariants in true (simulated) time:
 * 1. no two activations overlap; an activation runs from `acquired` to the first of its `lost`
 *    (or its node's crash) and its deadline, as the holder's own clock reads it, mapped to true
 *    time (a paused holder's activation ends at its deadline, not when it wakes);
 * 2. fencing tokens strictly increase in the order activations begin;
 * and no deadline is ever moved once passed. Liveness: once the network heals and stays quiet,
 * some node holds within a bounded time, and keeps holding.
 * The checker is itself tested: deliberately broken variants (a holder that does not subtract
 * the drift margin, acceptors that do not wait out leases, acceptors without the restart
 * quarantine) must be caught.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  holderLeaseMs,
  majorityOf,
  parseQuorumMessage,
  QuorumLease,
  type QuorumLeaseConfig,
  type QuorumLeaseEnv,
  type QuorumLeaseEvent,
} from '../../../src/processes/quorum-lease.js';
import { type NetProfile, QUIET_NET, type SimClock, type TimedEnv, TimedSim } from '../../helpers/timed-sim.js';

const LEASE = 300;
const CONFIG = (clusterSize: number): QuorumLeaseConfig => ({
  clusterSize,
  leaseMs: LEASE,
  renewEveryMs: LEASE / 3,
  maxClockDrift: 0.05,
  claimStaggerMs: LEASE / 3,
});

type LeaseClass = new (config: QuorumLeaseConfig, env: QuorumLeaseEnv) => QuorumLease;

/** Broken on purpose: the holder counts on the full lease (no drift margin). */
class NoDriftMargin extends QuorumLease {
  protected override holderLease(): number {
    return this.config.leaseMs;
  }
}
/** Broken on purpose: acceptors grant a new claimant even while another's lease runs. */
class NoWaitOut extends QuorumLease {
  protected override grantBlocks(): boolean {
    return false;
  }
}
/** Broken on purpose: a restarted acceptor votes at once. */
class NoQuarantine extends QuorumLease {
  protected override inQuarantine(): boolean {
    return false;
  }
}

interface Activation {
  node: string;
  inc: number;
  token: number;
  start: number;
  deadline: number;
  clock: SimClock;
  end?: number;
}

/** Runs the protocol on a simulation and records every activation in true time. */
class LeaseSim {
  readonly sim: TimedSim<QuorumLease>;
  readonly activations: Activation[] = [];
  readonly violations: string[] = [];
  private readonly open = new Map<string, Activation>();
  private readonly seqs = new Map<string, number>();
  readonly stopped = new Set<string>();
  readonly lostBy = { lease_expired: 0, superseded: 0, stopped: 0 };

  constructor(
    readonly names: string[],
    seed: number,
    readonly config: QuorumLeaseConfig,
    private readonly Lease: LeaseClass = QuorumLease,
    net: NetProfile = QUIET_NET,
    /** A node's own configuration, when not `config`. */
    private readonly configOf: (name: string) => QuorumLeaseConfig = () => config,
  ) {
    this.sim = new TimedSim<QuorumLease>(
      names,
      { seed, maxDrift: config.maxClockDrift, maxWallSkewMs: LEASE / 4, detectMs: [20, 150], connectMs: [1, 30], net },
      (name, inc, env) => this.make(name, inc, env),
      parseQuorumMessage,
      (name) => this.close(name),
    );
  }

  private make(name: string, inc: number, env: TimedEnv): QuorumLease {
    const key = `${name}#${inc}`;
    return new this.Lease(this.configOf(name), {
      name: 'scheduler',
      self: name,
      incarnation: inc,
      now: env.now,
      tokenFloor: () => Math.floor(env.wallNow() * 1000),
      send: (to, msg) => env.send(to, msg),
      onEvent: (e) => this.event(name, inc, e),
      nextSeq: () => {
        const s = (this.seqs.get(key) ?? 0) + 1;
        this.seqs.set(key, s);
        return s;
      },
    });
  }

  private event(node: string, inc: number, e: QuorumLeaseEvent): void {
    const clock = this.sim.clockOf(node);
    const t = this.sim.time;
    switch (e.type) {
      case 'acquired': {
        if (this.open.has(node)) this.violations.push(`${node} acquired twice at ${t}`);
        if (!Number.isSafeInteger(e.token)) this.violations.push(`token ${e.token} is not a safe integer`);
        const a: Activation = { node, inc, token: e.token, start: t, deadline: e.deadline, clock };
        this.activations.push(a);
        this.open.set(node, a);
        break;
      }
      case 'extended': {
        const a = this.open.get(node);
        if (!a) {
          this.violations.push(`${node} extended without an activation at ${t}`);
          break;
        }
        if (this.sim.localTime(clock, t) >= a.deadline) this.violations.push(`${node} moved a passed deadline at ${t}`);
        a.deadline = e.deadline;
        break;
      }
      case 'lost':
        this.lostBy[e.reason]++;
        this.close(node);
        break;
      case 'misconfigured':
        this.violations.push(`${node} misconfigured: ${e.detail}`);
        break;
    }
    void inc;
  }

  /** Ends the node's open activation: at the first of now and its deadline. */
  close(node: string): void {
    const a = this.open.get(node);
    if (!a) return;
    this.open.delete(node);
    a.end = Math.min(this.sim.time, this.sim.trueTime(a.clock, a.deadline));
  }

  closeAll(): void {
    for (const n of [...this.open.keys()]) this.close(n);
  }

  /** Stops the node's handle (graceful) and declares it again after `ms`. */
  stopAndRedeclare(node: string, ms: number): void {
    if (this.stopped.has(node)) return;
    this.stopped.add(node);
    this.sim.node(node).stop();
    const inc = this.sim.incOf(node);
    this.sim.at(this.sim.time + ms, () => this.redeclare(node, inc));
  }

  redeclare(node: string, inc: number): void {
    if (!this.stopped.has(node) || this.sim.incOf(node) !== inc) return;
    this.stopped.delete(node);
    this.sim.replace(node, (env) => this.make(node, inc, env));
  }

  /** Who holds right now (by the holders' own deadlines). */
  holdersNow(): string[] {
    return this.names.filter((n) => !this.sim.isPaused(n) && this.sim.node(n).isHolder());
  }

  /** The invariants; returns what broke. */
  check(): string[] {
    const problems = [...this.violations];
    const acts = [...this.activations].sort((a, b) => a.start - b.start);
    let lastEnd = Number.NEGATIVE_INFINITY;
    let lastBy: Activation | undefined;
    for (const a of acts) {
      const end = a.end ?? Math.min(this.sim.time, this.sim.trueTime(a.clock, a.deadline));
      if (lastBy && a.start < lastEnd - 1e-6) {
        problems.push(`overlap: ${lastBy.node} (token ${lastBy.token}) until ${lastEnd.toFixed(3)}, ${a.node} (token ${a.token}) from ${a.start.toFixed(3)}`);
      }
      if (lastBy && a.token <= lastBy.token)
        problems.push(`token ${a.token} of ${a.node} at ${a.start.toFixed(3)} after token ${lastBy.token} of ${lastBy.node}`);
      if (end > lastEnd) lastEnd = end;
      lastBy = a;
    }
    return problems;
  }
}

const PROFILES: Record<string, NetProfile> = {
  quiet: QUIET_NET,
  jittery: { minDelayMs: 0, maxDelayMs: LEASE / 3, longDelayChance: 0, longDelayMs: 0, loss: 0, duplicate: 0 },
  lossy: { minDelayMs: 0.2, maxDelayMs: 20, longDelayChance: 0, longDelayMs: 0, loss: 0.25, duplicate: 0.15 },
  stale: { minDelayMs: 0.2, maxDelayMs: 10, longDelayChance: 0.08, longDelayMs: 3 * LEASE, loss: 0.05, duplicate: 0.1 },
};

type Op =
  | { k: 'wait'; ms: number }
  | { k: 'partition'; sides: number[] }
  | { k: 'isolate' }
  | { k: 'heal' }
  | { k: 'cut'; a: number; b: number }
  | { k: 'link'; a: number; b: number }
  | { k: 'pause'; n: number; ms: number; detected: boolean }
  | { k: 'restart'; n: number }
  | { k: 'stop'; n: number; ms: number }
  | { k: 'net'; profile: keyof typeof PROFILES };

/** A node by index; 5 means the current holder (faults aimed at it move the lease). */
const idx = fc.nat({ max: 5 });
const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 6, arbitrary: fc.record({ k: fc.constant('wait' as const), ms: fc.integer({ min: 0, max: 2 * LEASE }) }) },
  { weight: 2, arbitrary: fc.record({ k: fc.constant('partition' as const), sides: fc.array(fc.nat({ max: 2 }), { minLength: 5, maxLength: 5 }) }) },
  { weight: 2, arbitrary: fc.record({ k: fc.constant('isolate' as const) }) },
  { weight: 2, arbitrary: fc.record({ k: fc.constant('heal' as const) }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('cut' as const), a: idx, b: idx }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('link' as const), a: idx, b: idx }) },
  {
    weight: 2,
    arbitrary: fc.record({ k: fc.constant('pause' as const), n: idx, ms: fc.integer({ min: 1, max: 3 * LEASE }), detected: fc.boolean() }),
  },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('restart' as const), n: idx }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('stop' as const), n: idx, ms: fc.integer({ min: 0, max: 2 * LEASE }) }) },
  { weight: 2, arbitrary: fc.record({ k: fc.constant('net' as const), profile: fc.constantFrom(...(Object.keys(PROFILES) as Array<keyof typeof PROFILES>)) }) },
);

interface Scenario {
  seed: number;
  nodes: number;
  /** Each fault, and the time that passes after it. */
  ops: Array<[Op, number]>;
}
const scenarioArb: fc.Arbitrary<Scenario> = fc.record({
  seed: fc.integer({ min: 0, max: 2 ** 31 - 1 }),
  nodes: fc.constantFrom(3, 3, 5),
  ops: fc.array(fc.tuple(opArb, fc.integer({ min: 0, max: LEASE })), { minLength: 6, maxLength: Number(process.env.QUORUM_OPS ?? 30), size: 'max' }),
});

/** Longest time from heal (every node resumed, network quiet) to a holder; see the liveness test for the budget. */
const LIVENESS_MS = 8 * LEASE;

interface Outcome {
  problems: string[];
  ls: LeaseSim;
  healedAt: number;
  holders: string[];
  heldSince: number | undefined;
}

function runScenario(s: Scenario, Lease: LeaseClass = QuorumLease): Outcome {
  const names = ['n1', 'n2', 'n3', 'n4', 'n5'].slice(0, s.nodes);
  const ls = new LeaseSim(names, s.seed, CONFIG(s.nodes), Lease);
  const sim = ls.sim;
  const pick = (i: number) => (i === 5 ? (ls.holdersNow()[0] ?? 'n1') : (names[i % names.length] as string));
  let lastResume = 0;
  sim.run(LEASE / 2);
  for (const [op, gap] of s.ops) {
    switch (op.k) {
      case 'wait':
        sim.run(op.ms);
        break;
      case 'partition':
        sim.partition(Object.fromEntries(names.map((n, i) => [n, op.sides[i] ?? 0])));
        break;
      case 'isolate': {
        // The holder alone on one side.
        const h = pick(5);
        sim.partition(Object.fromEntries(names.map((n) => [n, n === h ? 1 : 0])));
        break;
      }
      case 'heal':
        sim.healAll();
        break;
      case 'cut':
        sim.cutLink(pick(op.a), pick(op.b));
        break;
      case 'link':
        sim.healLink(pick(op.a), pick(op.b));
        break;
      case 'pause':
        sim.pause(pick(op.n), op.ms, op.detected);
        lastResume = Math.max(lastResume, sim.time + op.ms);
        break;
      case 'restart':
        ls.stopped.delete(pick(op.n));
        sim.restart(pick(op.n));
        break;
      case 'stop':
        ls.stopAndRedeclare(pick(op.n), op.ms);
        break;
      case 'net':
        sim.net = PROFILES[op.profile] as NetProfile;
        break;
    }
    sim.run(gap);
  }
  // Heal: every pause over, every link up, every handle declared, the network quiet; stale
  // messages still in flight may still land.
  sim.runUntil(Math.max(sim.time, lastResume) + 1);
  sim.healAll();
  sim.net = QUIET_NET;
  for (const n of [...ls.stopped]) ls.redeclare(n, sim.incOf(n));
  const healedAt = sim.time;
  sim.run(LIVENESS_MS + 4 * LEASE);
  const holders = ls.holdersNow();
  const current = ls.activations.find((a) => a.end === undefined && holders.includes(a.node));
  ls.closeAll();
  return { problems: ls.check(), ls, healedAt, holders, heldSince: current?.start };
}

/** The property: safety always; liveness after the heal. */
function holds(s: Scenario, Lease: LeaseClass = QuorumLease, liveness = true): boolean {
  return check(runScenario(s, Lease), liveness);
}

function check(out: Outcome, liveness = true): boolean {
  if (out.problems.length > 0) throw new Error(out.problems.slice(0, 3).join('\n'));
  if (liveness) {
    if (out.holders.length !== 1) throw new Error(`after the heal at ${out.healedAt}, ${out.holders.length} holders at the end`);
    const since = out.heldSince as number;
    if (since - out.healedAt > LIVENESS_MS) throw new Error(`the holder took ${since - out.healedAt} ms after the heal (budget ${LIVENESS_MS})`);
  }
  return true;
}

/** More runs, another seed, longer histories, locally: QUORUM_RUNS=20000 QUORUM_SEED=7 QUORUM_OPS=80 npx vitest run test/unit/processes/quorum-lease.test.ts -t property --testTimeout=0 */
const RUNS = Number(process.env.QUORUM_RUNS ?? 250);

describe('quorum lease: safety and liveness under faults (property)', () => {
  it('no overlapping activations, increasing tokens, and a holder after the heal', () => {
    const tally = { runs: 0, activations: 0, handovers: 0, expired: 0, superseded: 0, stopped: 0, restarts: 0, pauses: 0 };
    fc.assert(
      fc.property(scenarioArb, (s) => {
        const out = runScenario(s);
        tally.runs++;
        tally.activations += out.ls.activations.length;
        const acts = [...out.ls.activations].sort((a, b) => a.start - b.start);
        for (let i = 1; i < acts.length; i++) if ((acts[i] as Activation).node !== (acts[i - 1] as Activation).node) tally.handovers++;
        tally.expired += out.ls.lostBy.lease_expired;
        tally.superseded += out.ls.lostBy.superseded;
        tally.stopped += out.ls.lostBy.stopped;
        tally.restarts += s.ops.filter(([o]) => o.k === 'restart').length;
        tally.pauses += s.ops.filter(([o]) => o.k === 'pause').length;
        return check(out);
      }),
      { numRuns: RUNS, seed: Number(process.env.QUORUM_SEED ?? 0x5eed_1eaf) },
    );
    // The property is not vacuous: the runs moved the lease around a lot, for every reason.
    console.log('quorum lease property:', JSON.stringify(tally));
    expect(tally.handovers).toBeGreaterThan(RUNS);
    expect(tally.activations).toBeGreaterThan(3 * RUNS);
    expect(Math.min(tally.expired, tally.stopped)).toBeGreaterThan(RUNS / 10);
  });
});

describe('quorum lease: the checker catches broken variants', () => {
  // The same property, searching for a counterexample (no shrinking: finding one is the point).
  // Each seed was picked so the search ends early (they fail after about 2-90 runs on most seeds).
  const broken = (Lease: LeaseClass, seed: number): fc.RunDetails<[Scenario]> =>
    fc.check(
      fc.property(scenarioArb, (s) => holds(s, Lease, false)),
      { numRuns: 400, seed, endOnFailure: true },
    );

  it('a holder that counts on the full lease (no drift margin) is caught', () => {
    const r = broken(NoDriftMargin, 0xbad_c10c);
    expect(r.failed, 'the property must fail for this variant').toBe(true);
    expect(String(r.errorInstance)).toMatch(/overlap/);
  });

  it('acceptors that do not wait out a running lease are caught', () => {
    const r = broken(NoWaitOut, 0xbad_c10c);
    expect(r.failed).toBe(true);
    expect(String(r.errorInstance)).toMatch(/overlap|token/);
  });

  it('acceptors without the restart quarantine are caught', () => {
    const r = broken(NoQuarantine, 5);
    expect(r.failed).toBe(true);
    expect(String(r.errorInstance)).toMatch(/overlap|token/);
  });

  it('regression: a late renewal of an earlier activation does not take over (and then lose, to its release) the grant of the current one', () => {
    // Found by the property (seed 11, run 3954 of 4000): n3's renewal of its previous activation,
    // delayed, reached n2 after n2 granted n3's new claim; n2 moved its grant to the old round,
    // n3 released that old round on the late acknowledgement, and n2 then granted n1 while n3's
    // new activation still counted on n2.
    const scenario: Scenario = {
      seed: 21,
      nodes: 3,
      ops: [
        [{ k: 'net', profile: 'stale' }, 81],
        [{ k: 'wait', ms: 336 }, 145],
        [{ k: 'cut', a: 5, b: 0 }, 0],
        [{ k: 'wait', ms: 209 }, 251],
        [{ k: 'wait', ms: 281 }, 223],
        [{ k: 'restart', n: 0 }, 0],
        [{ k: 'isolate' }, 0],
        [{ k: 'isolate' }, 0],
        [{ k: 'link', a: 0, b: 0 }, 0],
        [{ k: 'wait', ms: 0 }, 0],
      ],
    };
    expect(runScenario(scenario).problems).toEqual([]);
    expect(holds(scenario)).toBe(true);
  });

  // The shrunk counterexamples the searches found, kept as regressions: each breaks its variant
  // and must never break the protocol.
  const regressions: Array<[string, LeaseClass, Scenario, RegExp]> = [
    [
      'holder isolated right after a renewal, drift margin missing: the majority side takes over before the old deadline',
      NoDriftMargin,
      {
        seed: 862176944,
        nodes: 3,
        ops: [
          [{ k: 'cut', a: 0, b: 0 }, 0],
          [{ k: 'wait', ms: 0 }, 11],
          [{ k: 'partition', sides: [1, 0, 1, 0, 0] }, 52],
          [{ k: 'wait', ms: 0 }, 144],
          [{ k: 'heal' }, 1],
          [{ k: 'isolate' }, 144],
        ],
      },
      /overlap/,
    ],
    [
      'holder isolated, acceptors not waiting out its lease: the other side holds at once',
      NoWaitOut,
      {
        seed: 0,
        nodes: 3,
        ops: [
          [{ k: 'isolate' }, 165],
          [{ k: 'wait', ms: 2 }, 6],
          [{ k: 'wait', ms: 47 }, 5],
          [{ k: 'heal' }, 47],
          [{ k: 'net', profile: 'quiet' }, 0],
          [{ k: 'wait', ms: 0 }, 0],
        ],
      },
      /overlap/,
    ],
    [
      'a voter of the holder restarts and votes at once for the other side: overlap and a smaller token',
      NoQuarantine,
      {
        seed: 0,
        nodes: 3,
        ops: [
          [{ k: 'isolate' }, 0],
          [{ k: 'link', a: 0, b: 4 }, 72],
          [{ k: 'wait', ms: 0 }, 76],
          [{ k: 'restart', n: 4 }, 0],
          [{ k: 'heal' }, 0],
          [{ k: 'wait', ms: 0 }, 0],
          [{ k: 'wait', ms: 0 }, 0],
          [{ k: 'heal' }, 0],
          [{ k: 'cut', a: 0, b: 0 }, 0],
          [{ k: 'wait', ms: 0 }, 0],
        ],
      },
      /overlap|token/,
    ],
  ];
  for (const [name, Lease, scenario, problem] of regressions) {
    it(`regression: ${name}`, () => {
      expect(runScenario(scenario, Lease).problems.join('\n')).toMatch(problem);
      expect(runScenario(scenario).problems).toEqual([]);
      expect(holds(scenario)).toBe(true);
    });
  }
});

describe('quorum lease: scenarios', () => {
  const quiet = (names: string[], seed = 1) => new LeaseSim(names, seed, CONFIG(names.length));

  it('three nodes: one holds after the start quarantine, renews, and nobody else claims', () => {
    const ls = quiet(['n1', 'n2', 'n3']);
    ls.sim.run(4 * LEASE);
    const holders = ls.holdersNow();
    expect(holders).toHaveLength(1);
    const h = holders[0] as string;
    const stats = ls.sim.node(h).stats();
    expect(stats.acquired).toBe(1);
    ls.sim.run(20 * LEASE);
    expect(ls.holdersNow()).toEqual([h]);
    expect(ls.activations).toHaveLength(1);
    expect(ls.sim.node(h).stats().renewals).toBeGreaterThan(50);
    for (const n of ls.names) {
      if (n !== h) expect(ls.sim.node(n).stats().claims, `${n} never claims while ${h} holds`).toBe(0);
      expect(ls.sim.node(n).holder()?.node).toBe(h);
    }
    expect(ls.check()).toEqual([]);
  });

  it('partition 2|1 with the holder alone: it steps down within its lease, the majority side takes over after it', () => {
    const ls = quiet(['n1', 'n2', 'n3']);
    ls.sim.run(4 * LEASE);
    const h = ls.holdersNow()[0] as string;
    const others = ls.names.filter((n) => n !== h);
    const cutAt = ls.sim.time;
    ls.sim.partition({ [h]: 1, [others[0] as string]: 0, [others[1] as string]: 0 });
    ls.sim.run(6 * LEASE);
    const holders = ls.holdersNow();
    expect(holders).toHaveLength(1);
    expect(others).toContain(holders[0]);
    const first = ls.activations[0] as Activation;
    const second = ls.activations[1] as Activation;
    expect(first.end as number).toBeLessThanOrEqual(cutAt + LEASE);
    // Failover: the old grants run out (at most a lease after the last renewal), then the new owner claims.
    expect(second.start - cutAt).toBeLessThan(LEASE + LEASE / 3 + 50);
    expect(second.token).toBeGreaterThan(first.token);
    expect(ls.sim.node(h).stats().lost).toBe(1);
    // The minority side never claims with one voter of three.
    const claimsBefore = ls.sim.node(h).stats().claims;
    ls.sim.run(10 * LEASE);
    expect(ls.sim.node(h).stats().claims).toBe(claimsBefore);
    ls.sim.healAll();
    ls.sim.run(5 * LEASE);
    expect(ls.holdersNow()).toEqual(holders);
    ls.closeAll();
    expect(ls.check()).toEqual([]);
  });

  it('a graceful stop releases: the successor takes over well before a lease', () => {
    const ls = quiet(['n1', 'n2', 'n3']);
    ls.sim.run(4 * LEASE);
    const h = ls.holdersNow()[0] as string;
    const at = ls.sim.time;
    ls.sim.node(h).stop();
    ls.sim.run(2 * LEASE);
    const next = ls.activations[1] as Activation;
    expect(next.node).not.toBe(h);
    expect(next.start - at).toBeLessThan(LEASE / 3);
    ls.closeAll();
    expect(ls.check()).toEqual([]);
  });

  it('a paused holder loses the lease at its deadline, not when it wakes; on resume it steps down before anything else', () => {
    const ls = quiet(['n1', 'n2', 'n3']);
    ls.sim.run(4 * LEASE);
    const h = ls.holdersNow()[0] as string;
    ls.sim.pause(h, 5 * LEASE, false);
    ls.sim.run(3 * LEASE);
    const next = ls.activations[1] as Activation;
    expect(next.node).not.toBe(h);
    ls.sim.run(3 * LEASE);
    expect(ls.sim.node(h).stats().lost).toBe(1);
    expect(ls.holdersNow()).toEqual([next.node]);
    ls.closeAll();
    expect(ls.check()).toEqual([]);
  });

  it('a full restart of every node: tokens still grow (wall-clock floor)', () => {
    const ls = quiet(['n1', 'n2', 'n3']);
    ls.sim.run(4 * LEASE);
    const before = (ls.activations[0] as Activation).token;
    for (const n of ls.names) ls.sim.restart(n);
    ls.sim.run(6 * LEASE);
    expect(ls.activations).toHaveLength(2);
    expect((ls.activations[1] as Activation).token).toBeGreaterThan(before);
    ls.closeAll();
    expect(ls.check()).toEqual([]);
  });

  it("regression: a voter whose own claim failed still takes the holder's renewals (it used to refuse them for a lower round and claim forever)", () => {
    const ls = quiet(['n1', 'n2', 'n3'], 7);
    ls.sim.run(4 * LEASE);
    const h = ls.holdersNow()[0] as string;
    const other = ls.names.find((n) => n !== h) as string;
    // Restarted while cut off from the holder, it claims once its quarantine is over (with a round
    // above the holder's token) and is refused by the third node. After the heal it must follow
    // the holder, not refuse its renewals for their lower round and claim again and again.
    ls.sim.cutLink(h, other);
    ls.sim.restart(other);
    ls.sim.run(3 * LEASE);
    expect(ls.sim.node(other).stats().claims).toBeGreaterThan(0);
    ls.sim.healLink(h, other);
    ls.sim.run(LEASE);
    const claimsAfterHeal = ls.sim.node(other).stats().claims;
    ls.sim.run(20 * LEASE);
    expect(ls.holdersNow()).toEqual([h]);
    const st = ls.sim.node(other).stats();
    expect(st.claims).toBe(claimsAfterHeal);
    expect(st.holder?.node).toBe(h);
    ls.closeAll();
    expect(ls.check()).toEqual([]);
  });

  it('a voter configured with another lease: each refuses the other, it reports, the two that agree keep the singleton', () => {
    const names = ['n1', 'n2', 'n3'];
    const ls = new LeaseSim(names, 5, CONFIG(3), QuorumLease, QUIET_NET, (n) => (n === 'n3' ? { ...CONFIG(3), leaseMs: 2 * LEASE } : CONFIG(3)));
    ls.sim.run(10 * LEASE);
    expect(ls.holdersNow()).toHaveLength(1);
    expect(ls.holdersNow()[0]).not.toBe('n3');
    expect(ls.sim.node('n3').stats().acquired).toBe(0);
    for (const n of names) expect(ls.sim.node(n).stats().misconfigured).toMatch(/configured differently/);
    ls.closeAll();
    expect(ls.check().filter((p) => !p.includes('misconfigured'))).toEqual([]);
  });

  it('more voters than clusterSize: nobody claims, and each reports the misconfiguration', () => {
    const names = ['n1', 'n2', 'n3', 'n4'];
    const ls = new LeaseSim(names, 3, CONFIG(3));
    ls.sim.run(6 * LEASE);
    expect(ls.activations).toEqual([]);
    for (const n of names) {
      expect(ls.sim.node(n).stats().claims).toBe(0);
      expect(ls.sim.node(n).stats().misconfigured).toMatch(/4 nodes declare/);
    }
    expect(ls.violations.filter((v) => v.includes('misconfigured'))).toHaveLength(4);
  });
});

describe('quorum lease: pieces', () => {
  it('majority and the holder lease', () => {
    expect([1, 2, 3, 4, 5, 6, 7].map(majorityOf)).toEqual([1, 2, 2, 3, 3, 4, 4]);
    expect(holderLeaseMs(2000, 0.01)).toBeCloseTo((2000 * 0.99) / 1.01, 9);
    expect(holderLeaseMs(2000, 0)).toBe(2000);
  });

  it('the wire check refuses what is not a message', () => {
    const good = [
      { t: 'hello', cs: 3, ls: 2000, a: true },
      { t: 'nv' },
      { t: 'bye' },
      { t: 'claim', r: 5, s: 1, cs: 3, ls: 2000 },
      { t: 'ack', r: 5, s: 1, ci: 17 },
      { t: 'nack', r: 5, s: 1, ci: 17, why: 'held', pr: 9, h: 'n2', w: 100 },
      { t: 'release', r: 5 },
    ];
    for (const m of good) expect(parseQuorumMessage(m)).toEqual(m);
    const bad: unknown[] = [
      null,
      7,
      'claim',
      [],
      {},
      { t: 'what' },
      { t: 'hello', cs: 0, ls: 2000, a: true },
      { t: 'hello', cs: 3, ls: -1, a: true },
      { t: 'hello', cs: 3, ls: 2000 },
      { t: 'claim', r: -1, s: 1, cs: 3, ls: 2000 },
      { t: 'claim', r: 2 ** 60, s: 1, cs: 3, ls: 2000 },
      { t: 'claim', r: 1.5, s: 1, cs: 3, ls: 2000 },
      { t: 'claim', r: 1, s: 1, cs: 1000, ls: 2000 },
      { t: 'ack', r: 1, s: 1 },
      { t: 'ack', r: 1, s: 1, ci: 'x' },
      { t: 'nack', r: 1, s: 1, ci: 1, why: 'nope', pr: 1, h: '', w: 0 },
      { t: 'nack', r: 1, s: 1, ci: 1, why: 'held', pr: 1, h: 3, w: 0 },
      { t: 'nack', r: 1, s: 1, ci: 1, why: 'held', pr: 1, h: '', w: -5 },
      { t: 'release', r: 'x' },
    ];
    for (const m of bad) expect(parseQuorumMessage(m), JSON.stringify(m)).toBeUndefined();
  });
});
