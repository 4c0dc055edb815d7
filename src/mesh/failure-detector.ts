/**
 * Phi accrual failure detector (Hayashibara et al., "The φ Accrual Failure Detector", 2004),
 * following Akka's implementation.
 *
 * Instead of a yes/no timeout, the detector outputs a suspicion level
 *
 *     φ(t) = -log10( P(next heartbeat arrives later than t) )
 *
 * where `t` is the time since the last heartbeat and the inter-arrival times are modelled as a
 * normal distribution whose mean and standard deviation are learnt from recent history. φ = 1
 * means a 10 % chance that we are wrong to suspect the peer, φ = 8 a 10⁻⁸ chance.
 *
 * Like Akka, the normal CDF is approximated with a logistic function
 *
 *     P(X ≤ x) ≈ 1 / (1 + e^(−z)),   z = y · (1.5976 + 0.070566 · y²),   y = (x − μ) / σ
 *
 * so that φ = −log10(1 − CDF) = log10(1 + e^z). We evaluate that as a numerically stable
 * softplus (`z + log1p(e^(−z))` for z > 0), which never produces NaN or Infinity, and cap the
 * result at {@link MAX_PHI}.
 *
 * Two knobs keep the detector from being hair-triggered on a quiet, very regular network:
 * - `acceptablePauseMs` is added to the learnt mean: a silence of that length is "normal"
 *   (GC pause, brief network hiccup) and barely moves φ.
 * - `minStdDevMs` is a floor on σ: a perfectly regular history would otherwise make σ ≈ 0 and
 *   turn φ into a step function.
 *
 * ## When does φ cross the threshold? (defaults)
 *
 * Interval 250 ms, minStdDev 100 ms, acceptable pause 1000 ms, threshold 8. With steady
 * heartbeats the learnt σ is a few ms, so the floor applies: μ' = 250 + 1000 = 1250 ms, σ = 100 ms.
 * φ = 8 needs log10(1 + e^z) = 8, i.e. z ≈ 8 · ln 10 ≈ 18.42, i.e. y ≈ 5.22, i.e.
 *
 *     silence ≈ 1250 + 5.22 · 100 ≈ 1772 ms since the last heartbeat.
 *
 * (φ = 3, the default "suspect" level, is reached at y ≈ 3.06 → ≈ 1556 ms.) The peer stopped at
 * most one heartbeat interval after its last heartbeat, and the detector is sampled every
 * ~100 ms, so a peer that goes silent is declared down ≈ 1.6–2.0 s after it stopped —
 * comfortably inside the 3 s budget, while a 1 s pause stays at φ ≈ 0.
 *
 * In Foundation each end sends one heartbeat per interval (in two copies, one arrival), so the
 * learnt mean is the interval itself: ≈ 1772 ms of silence, as above. The heartbeat worker does
 * not poll φ: it sleeps until {@link PhiAccrualDetector.reachesPhiAt} says the next threshold
 * can be crossed.
 *
 * The class is pure: it never reads a clock and holds no timers. Time is passed in, in
 * milliseconds, from any monotonic clock (`performance.now()`).
 */

import { ConfigError } from '../errors.js';

/** Default floor on the standard deviation of heartbeat inter-arrival times: 100 ms. */
export const DEFAULT_MIN_STD_DEV_MS = 100;
/** Default silence that is considered normal on top of the learnt mean: 1000 ms. */
export const DEFAULT_ACCEPTABLE_PAUSE_MS = 1000;
/** Default number of inter-arrival samples kept: 200. */
export const DEFAULT_MAX_SAMPLES = 200;
/** Default heartbeat interval of the mesh: 250 ms. */
export const DEFAULT_HEARTBEAT_INTERVAL_MS = 250;
/** Default guess of the inter-arrival time before any real sample exists: the heartbeat interval, 250 ms. */
export const DEFAULT_FIRST_HEARTBEAT_ESTIMATE_MS = DEFAULT_HEARTBEAT_INTERVAL_MS;
/** Default φ at or above which a peer is declared down: 8. */
export const DEFAULT_PHI_THRESHOLD = 8;
/**
 * Upper bound of φ. Past ~300 the probability is below a double's range anyway; capping keeps
 * φ a finite, printable number even after hours of silence.
 */
export const MAX_PHI = 1000;

/** Options of {@link PhiAccrualDetector}. */
export interface PhiAccrualOptions {
  /** Floor on the standard deviation of inter-arrival times, in ms (must be > 0). Default 100. */
  minStdDevMs?: number;
  /** Silence tolerated on top of the learnt mean before φ starts climbing, in ms (≥ 0). Default 1000. */
  acceptablePauseMs?: number;
  /** Number of inter-arrival samples kept (integer ≥ 1). Default 200. */
  maxSamples?: number;
  /** Inter-arrival estimate used before real samples exist, in ms (> 0). Default 250 (the heartbeat interval). */
  firstHeartbeatEstimateMs?: number;
}

/** {@link PhiAccrualOptions} with every default applied. */
export type ResolvedPhiAccrualOptions = Required<PhiAccrualOptions>;

/**
 * Applies defaults and validates detector options.
 * @param prefix dotted config path used in error messages, e.g. `failureDetector`.
 * @throws ConfigError when a value is out of range.
 */
export function resolvePhiAccrualOptions(options: PhiAccrualOptions = {}, prefix = 'failureDetector'): ResolvedPhiAccrualOptions {
  const resolved: ResolvedPhiAccrualOptions = {
    minStdDevMs: options.minStdDevMs ?? DEFAULT_MIN_STD_DEV_MS,
    acceptablePauseMs: options.acceptablePauseMs ?? DEFAULT_ACCEPTABLE_PAUSE_MS,
    maxSamples: options.maxSamples ?? DEFAULT_MAX_SAMPLES,
    firstHeartbeatEstimateMs: options.firstHeartbeatEstimateMs ?? DEFAULT_FIRST_HEARTBEAT_ESTIMATE_MS,
  };
  const finite = (key: keyof ResolvedPhiAccrualOptions, ok: (v: number) => boolean, what: string): void => {
    const v = resolved[key];
    if (typeof v !== 'number' || !Number.isFinite(v) || !ok(v)) {
      throw new ConfigError(`${prefix}.${key}`, `expected ${what}, got ${String(v)}`);
    }
  };
  finite('minStdDevMs', (v) => v > 0, 'a number > 0');
  finite('acceptablePauseMs', (v) => v >= 0, 'a number >= 0');
  finite('maxSamples', (v) => Number.isInteger(v) && v >= 1 && v <= 1_000_000, 'an integer in 1..1000000');
  finite('firstHeartbeatEstimateMs', (v) => v > 0, 'a number > 0');
  return resolved;
}

const LN10 = Math.log(10);

/**
 * φ for a silence of `timeDiffMs` given a normal model (`meanMs`, `stdDevMs`), using the logistic
 * approximation of the normal CDF. Always finite, in [0, {@link MAX_PHI}].
 */
export function phiOf(timeDiffMs: number, meanMs: number, stdDevMs: number): number {
  // A non-positive σ would divide by zero; the detector never passes one, but stay total.
  const sd = stdDevMs > 0 ? stdDevMs : Number.MIN_VALUE;
  const y = (timeDiffMs - meanMs) / sd;
  if (Number.isNaN(y)) return 0;
  if (y === Number.POSITIVE_INFINITY) return MAX_PHI;
  if (y === Number.NEGATIVE_INFINITY) return 0;
  const z = y * (1.5976 + 0.070566 * y * y);
  // φ = log10(1 + e^z), computed without overflow (z large) or loss of precision (z very negative).
  const softplus = z > 0 ? z + Math.log1p(Math.exp(-z)) : Math.log1p(Math.exp(z));
  const phi = softplus / LN10;
  if (!(phi > 0)) return 0; // also catches NaN
  return Math.min(phi, MAX_PHI);
}

/**
 * The normalised silence `y = (t − μ) / σ` at which {@link phiOf} equals `phi` (0 < phi < MAX_PHI):
 * solves log10(1 + e^z) = phi for z, then the cubic z = y · (1.5976 + 0.070566 · y²), which is
 * strictly increasing, with Cardano's formula (one real root).
 */
export function yForPhi(phi: number): number {
  // z = ln(10^phi − 1), written so that 10^phi never overflows.
  const z = phi * LN10 + Math.log1p(-(10 ** -phi));
  const a = 0.070566;
  const p = 1.5976 / a;
  const q = -z / a;
  const d = Math.sqrt((q * q) / 4 + (p * p * p) / 27);
  return Math.cbrt(-q / 2 + d) + Math.cbrt(-q / 2 - d);
}

/**
 * Bounded history of inter-arrival intervals with running sums, so that mean and variance are
 * O(1) per heartbeat.
 */
class IntervalHistory {
  private readonly samples: Float64Array;
  private next = 0;
  private count = 0;
  private sum = 0;
  private sumSq = 0;
  private sinceRecompute = 0;

  constructor(readonly capacity: number) {
    this.samples = new Float64Array(capacity);
  }

  add(interval: number): void {
    if (this.count === this.capacity) {
      const old = this.samples[this.next] ?? 0;
      this.sum -= old;
      this.sumSq -= old * old;
    } else {
      this.count++;
    }
    this.samples[this.next] = interval;
    this.next = (this.next + 1) % this.capacity;
    this.sum += interval;
    this.sumSq += interval * interval;
    // Running sums of doubles drift after millions of add/subtract cycles; recompute exactly now and then.
    if (++this.sinceRecompute >= 10_000) this.recompute();
  }

  private recompute(): void {
    this.sinceRecompute = 0;
    let s = 0;
    let sq = 0;
    for (let i = 0; i < this.count; i++) {
      const v = this.samples[i] ?? 0;
      s += v;
      sq += v * v;
    }
    this.sum = s;
    this.sumSq = sq;
  }

  get size(): number {
    return this.count;
  }

  get mean(): number {
    return this.count === 0 ? 0 : this.sum / this.count;
  }

  get stdDev(): number {
    if (this.count === 0) return 0;
    const m = this.mean;
    const variance = this.sumSq / this.count - m * m;
    // Cancellation can make a tiny variance negative.
    return variance > 0 ? Math.sqrt(variance) : 0;
  }
}

/**
 * Phi accrual failure detector for one peer. Feed it {@link heartbeat} on every heartbeat
 * arrival and ask {@link phi} / {@link isAvailable} periodically. Times are in milliseconds of a
 * monotonic clock.
 */
export class PhiAccrualDetector {
  /** The options in effect, defaults applied. */
  readonly options: ResolvedPhiAccrualOptions;
  private readonly history: IntervalHistory;
  private lastTimestamp: number | undefined;

  /** @throws ConfigError when an option is out of range. */
  constructor(options: PhiAccrualOptions = {}) {
    this.options = resolvePhiAccrualOptions(options);
    this.history = new IntervalHistory(this.options.maxSamples);
    // Seed the history as Akka does: two samples around the estimate (σ = estimate / 4), so the
    // first real heartbeats are judged against a plausible distribution instead of an empty one.
    const mean = this.options.firstHeartbeatEstimateMs;
    const sd = mean / 4;
    this.history.add(mean - sd);
    this.history.add(mean + sd);
  }

  /** Records a heartbeat arrival at `nowMs`. Non-finite or backwards timestamps are ignored. */
  heartbeat(nowMs: number): void {
    if (!Number.isFinite(nowMs)) return;
    const last = this.lastTimestamp;
    if (last === undefined) {
      // First heartbeat: nothing to measure an interval from.
      this.lastTimestamp = nowMs;
      return;
    }
    const interval = nowMs - last;
    if (interval < 0) return; // clock went backwards: keep the later timestamp
    // Like Akka, do not learn from the gap that ended an outage: one 5 s interval would inflate
    // mean and σ and make the next detection slow.
    if (this.isAvailable(nowMs, DEFAULT_PHI_THRESHOLD)) this.history.add(interval);
    this.lastTimestamp = nowMs;
  }

  /**
   * Pretends a heartbeat arrived at `nowMs` without recording an interval (history is kept).
   * Used after a local pause (SIGSTOP, starvation): the silence was ours, not the peer's.
   */
  reset(nowMs: number): void {
    if (!Number.isFinite(nowMs)) return;
    this.lastTimestamp = nowMs;
  }

  /** Suspicion level at `nowMs`: 0 before the first heartbeat, finite, at most {@link MAX_PHI}. */
  phi(nowMs: number): number {
    const last = this.lastTimestamp;
    if (last === undefined) return 0;
    const timeDiff = nowMs - last;
    const mean = this.history.mean + this.options.acceptablePauseMs;
    const stdDev = Math.max(this.history.stdDev, this.options.minStdDevMs);
    return phiOf(timeDiff, mean, stdDev);
  }

  /**
   * When φ will reach `phi` if no heartbeat arrives before: the timestamp (same clock as the
   * arrivals) at which to look again. `Infinity` before the first heartbeat or for a `phi` the
   * detector never reports (≤ 0, ≥ {@link MAX_PHI}, not finite). Inverts {@link phiOf} exactly, so
   * a caller can sleep until a threshold is crossed instead of polling φ.
   */
  reachesPhiAt(phi: number): number {
    const last = this.lastTimestamp;
    if (last === undefined || !(phi > 0 && phi < MAX_PHI)) return Number.POSITIVE_INFINITY;
    const mean = this.history.mean + this.options.acceptablePauseMs;
    const stdDev = Math.max(this.history.stdDev, this.options.minStdDevMs);
    return last + mean + yForPhi(phi) * stdDev;
  }

  /** Whether φ at `nowMs` is below `threshold`. */
  isAvailable(nowMs: number, threshold: number): boolean {
    return this.phi(nowMs) < threshold;
  }

  /** Timestamp of the last heartbeat (or reset), or `undefined` before the first. */
  get lastHeartbeatMs(): number | undefined {
    return this.lastTimestamp;
  }

  /** Current model, for diagnostics: learnt mean / σ of intervals (without pause / floor) and sample count. */
  get model(): { meanMs: number; stdDevMs: number; samples: number } {
    return { meanMs: this.history.mean, stdDevMs: this.history.stdDev, samples: this.history.size };
  }
}
