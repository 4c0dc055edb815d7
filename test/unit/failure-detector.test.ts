import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ConfigError } from '../../src/errors.js';
import {
  DEFAULT_ACCEPTABLE_PAUSE_MS,
  DEFAULT_FIRST_HEARTBEAT_ESTIMATE_MS,
  DEFAULT_HEARTBEAT_INTERVAL_MS,
  DEFAULT_MAX_SAMPLES,
  DEFAULT_MIN_STD_DEV_MS,
  DEFAULT_PHI_THRESHOLD,
  MAX_PHI,
  PhiAccrualDetector,
  phiOf,
  yForPhi,
} from '../../src/mesh/failure-detector.js';

/** A detector fed `n` heartbeats every `interval` ms; returns it and the last heartbeat time. */
function steady(n = 300, interval = 250, opts = {}): { d: PhiAccrualDetector; last: number } {
  const d = new PhiAccrualDetector(opts);
  let t = 1_000;
  for (let i = 0; i < n; i++) {
    t += interval;
    d.heartbeat(t);
  }
  return { d, last: t };
}

/** First silence (1 ms steps) at which φ reaches `threshold`. */
function crossing(d: PhiAccrualDetector, last: number, threshold: number): number {
  for (let x = 0; x < 100_000; x++) if (d.phi(last + x) >= threshold) return x;
  return Number.POSITIVE_INFINITY;
}

describe('PhiAccrualDetector', () => {
  it('exports the documented defaults', () => {
    expect(DEFAULT_MIN_STD_DEV_MS).toBe(100);
    expect(DEFAULT_ACCEPTABLE_PAUSE_MS).toBe(1000);
    expect(DEFAULT_MAX_SAMPLES).toBe(200);
    expect(DEFAULT_HEARTBEAT_INTERVAL_MS).toBe(250);
    expect(DEFAULT_FIRST_HEARTBEAT_ESTIMATE_MS).toBe(250);
    expect(DEFAULT_PHI_THRESHOLD).toBe(8);
    expect(new PhiAccrualDetector().options).toEqual({ minStdDevMs: 100, acceptablePauseMs: 1000, maxSamples: 200, firstHeartbeatEstimateMs: 250 });
  });

  it('is 0 before the first heartbeat and right after one', () => {
    const d = new PhiAccrualDetector();
    expect(d.phi(0)).toBe(0);
    expect(d.phi(1e12)).toBe(0);
    d.heartbeat(5000);
    expect(d.phi(5000)).toBeLessThan(1e-6);
  });

  it('crosses φ=8 after ≈1.77 s of silence and φ=3 after ≈1.56 s with the defaults (as documented)', () => {
    const { d, last } = steady();
    // σ of a perfectly regular history is 0, so the 100 ms floor applies: μ' = 1250, σ = 100.
    expect(crossing(d, last, 8)).toBeGreaterThanOrEqual(1765);
    expect(crossing(d, last, 8)).toBeLessThanOrEqual(1780);
    expect(crossing(d, last, 3)).toBeGreaterThanOrEqual(1550);
    expect(crossing(d, last, 3)).toBeLessThanOrEqual(1562);
    // A 1 s pause (GC, hiccup) barely registers; a regular heartbeat not at all.
    expect(d.phi(last + 1000)).toBeLessThan(0.01);
    expect(d.phi(last + 250)).toBeLessThan(1e-6);
    expect(d.isAvailable(last + 1700, 8)).toBe(true);
    expect(d.isAvailable(last + 1800, 8)).toBe(false);
  });

  it('with pings and pongs both counted (mean ≈ 125 ms, σ ≈ 105) it still detects in < 2 s', () => {
    const d = new PhiAccrualDetector();
    let t = 0;
    for (let i = 0; i < 300; i++) {
      t += i % 2 ? 20 : 230;
      d.heartbeat(t);
    }
    const x = crossing(d, t, 8);
    expect(x).toBeGreaterThan(1500);
    expect(x).toBeLessThan(2000);
  });

  it('a jittery history detects later than a regular one', () => {
    const regular = steady();
    const d = new PhiAccrualDetector();
    let t = 0;
    for (let i = 0; i < 300; i++) {
      t += i % 2 ? 50 : 450; // mean 250, σ 200
      d.heartbeat(t);
    }
    expect(crossing(d, t, 8)).toBeGreaterThan(crossing(regular.d, regular.last, 8) + 300);
  });

  it('does not learn from the gap that ended an outage', () => {
    const { d, last } = steady();
    const before = d.model;
    d.heartbeat(last + 10_000);
    expect(d.model).toEqual(before);
    // ... but does restart the silence clock.
    expect(d.phi(last + 10_000 + 250)).toBeLessThan(1e-6);
  });

  it('reset() restarts the silence clock and keeps the history', () => {
    const { d, last } = steady();
    expect(d.phi(last + 5000)).toBeGreaterThan(8);
    const before = d.model;
    d.reset(last + 5000);
    expect(d.model).toEqual(before);
    expect(d.lastHeartbeatMs).toBe(last + 5000);
    expect(d.phi(last + 5000 + 1000)).toBeLessThan(0.01);
    expect(crossing(d, last + 5000, 8)).toBe(crossing(steady().d, steady().last, 8));
  });

  it('keeps at most maxSamples intervals', () => {
    const { d } = steady(500, 100, { maxSamples: 50 });
    expect(d.model.samples).toBe(50);
    // The seeds (187.5, 312.5) have been pushed out: the model is exactly the 100 ms rhythm.
    expect(d.model.meanMs).toBeCloseTo(100, 6);
    expect(d.model.stdDevMs).toBeLessThan(1e-3);
  });

  it('ignores non-finite and backwards timestamps', () => {
    const { d, last } = steady();
    const before = d.model;
    d.heartbeat(Number.NaN);
    d.heartbeat(Number.POSITIVE_INFINITY);
    d.heartbeat(last - 100);
    d.reset(Number.NaN);
    expect(d.model).toEqual(before);
    expect(d.lastHeartbeatMs).toBe(last);
    expect(d.phi(Number.NaN)).toBe(0);
    expect(d.phi(Number.POSITIVE_INFINITY)).toBe(MAX_PHI);
    expect(d.phi(Number.NEGATIVE_INFINITY)).toBe(0);
  });

  it('validates options with ConfigError', () => {
    expect(() => new PhiAccrualDetector({ minStdDevMs: 0 })).toThrow(ConfigError);
    expect(() => new PhiAccrualDetector({ acceptablePauseMs: -1 })).toThrow(/acceptablePauseMs/);
    expect(() => new PhiAccrualDetector({ maxSamples: 0 })).toThrow(ConfigError);
    expect(() => new PhiAccrualDetector({ maxSamples: 1.5 })).toThrow(ConfigError);
    expect(() => new PhiAccrualDetector({ firstHeartbeatEstimateMs: Number.NaN })).toThrow(ConfigError);
    try {
      new PhiAccrualDetector({ minStdDevMs: -5 });
    } catch (err) {
      expect((err as ConfigError).key).toBe('failureDetector.minStdDevMs');
    }
  });

  it('phiOf is total: finite, within [0, MAX_PHI], for any inputs', () => {
    fc.assert(
      fc.property(fc.double(), fc.double(), fc.double(), (x, m, s) => {
        const p = phiOf(x, m, s);
        return Number.isFinite(p) && p >= 0 && p <= MAX_PHI;
      }),
      { numRuns: 5000 },
    );
    expect(phiOf(1e308, -1e308, 1e-300)).toBe(MAX_PHI);
    expect(phiOf(0, 0, 0)).toBeGreaterThanOrEqual(0);
  });

  it('φ is finite, bounded and non-decreasing in silence, whatever the history', () => {
    fc.assert(
      fc.property(
        fc.array(fc.double({ min: 0, max: 1e7, noNaN: true }), { maxLength: 300 }),
        fc.array(fc.double({ min: 0, max: 1e9, noNaN: true }), { minLength: 2, maxLength: 20 }),
        fc.record({
          minStdDevMs: fc.double({ min: 1e-6, max: 1e4, noNaN: true }),
          acceptablePauseMs: fc.double({ min: 0, max: 1e5, noNaN: true }),
          maxSamples: fc.integer({ min: 1, max: 300 }),
        }),
        (intervals, silences, opts) => {
          const d = new PhiAccrualDetector(opts);
          let t = 0;
          for (const i of intervals) {
            t += i;
            d.heartbeat(t);
          }
          const sorted = [...silences].sort((a, b) => a - b);
          let prev = -1;
          for (const s of sorted) {
            const p = d.phi(t + s);
            if (!Number.isFinite(p) || p < 0 || p > MAX_PHI || p < prev) return false;
            prev = p;
          }
          return true;
        },
      ),
      { numRuns: 500 },
    );
  });
});

describe('PhiAccrualDetector.reachesPhiAt', () => {
  it('is the exact moment φ reaches the level, so a timer can sleep until then', () => {
    const d = new PhiAccrualDetector();
    expect(d.reachesPhiAt(8)).toBe(Number.POSITIVE_INFINITY);
    for (let i = 0; i <= 100; i++) d.heartbeat(i * 250);
    for (const level of [0.5, 3, 8, 50]) {
      const at = d.reachesPhiAt(level);
      expect(d.phi(at)).toBeCloseTo(level, 6);
      expect(d.phi(at - 1)).toBeLessThan(level);
    }
    // The documented figure: φ = 8 about 1.77 s after the last of steady 250 ms heartbeats.
    expect(d.reachesPhiAt(8) - 100 * 250).toBeGreaterThan(1700);
    expect(d.reachesPhiAt(8) - 100 * 250).toBeLessThan(1850);
    expect(d.reachesPhiAt(0)).toBe(Number.POSITIVE_INFINITY);
    expect(d.reachesPhiAt(MAX_PHI)).toBe(Number.POSITIVE_INFINITY);
    expect(d.reachesPhiAt(Number.NaN)).toBe(Number.POSITIVE_INFINITY);
  });

  it('inverts phiOf over its whole range (property)', () => {
    fc.assert(
      fc.property(fc.double({ min: 1e-3, max: 900, noNaN: true }), (phi) => Math.abs(phiOf(yForPhi(phi), 0, 1) - phi) < 1e-6 * Math.max(1, phi)),
      { numRuns: 2000 },
    );
  });
});

/**
 * Heartbeats every 250 ms, each sent in `copies` copies, each copy lost at random with
 * probability `loss`; φ is looked at just before every arrival (where it peaks). Returns how
 * often φ reached the down threshold although the peer never stopped. Deterministic (seeded).
 */
function falseDownsUnderLoss(hours: number, loss: number, copies: number): number {
  let seed = 0x9e3779b9;
  const random = () => {
    // mulberry32
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const d = new PhiAccrualDetector({ firstHeartbeatEstimateMs: DEFAULT_HEARTBEAT_INTERVAL_MS });
  d.heartbeat(0);
  let downs = 0;
  const end = hours * 3_600_000;
  for (let t = DEFAULT_HEARTBEAT_INTERVAL_MS; t < end; t += DEFAULT_HEARTBEAT_INTERVAL_MS) {
    let arrived = false;
    for (let c = 0; c < copies && !arrived; c++) arrived = random() >= loss;
    if (!arrived) continue;
    const at = t + random() * 5; // a few ms of jitter
    if (d.phi(at) >= DEFAULT_PHI_THRESHOLD) downs++;
    d.heartbeat(at);
  }
  return downs;
}

describe('30 % random packet loss (on a lossy link the heartbeat worker sends every heartbeat twice)', () => {
  it('never reaches φ = 8 over 24 simulated hours with two copies, and would with one', () => {
    expect(falseDownsUnderLoss(24, 0.3, 2)).toBe(0);
    // Why two copies: with one datagram per direction and interval, 30 % loss means a false
    // down every few hours per peer (about 0.26 per hour in a 1000-hour run).
    expect(falseDownsUnderLoss(24, 0.3, 1)).toBeGreaterThan(0);
  });
});
