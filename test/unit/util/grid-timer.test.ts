import { describe, expect, it } from 'vitest';
import { delayToNextGridPoint, epochNowMs, gridInterval } from '../../../src/util/grid-timer.js';

describe('grid timer', () => {
  it('aims at the next multiple of the period on the epoch clock', () => {
    expect(delayToNextGridPoint(2000, 10_000, Number.POSITIVE_INFINITY)).toBe(2000);
    expect(delayToNextGridPoint(2000, 10_500, Number.POSITIVE_INFINITY)).toBe(1500);
    expect(delayToNextGridPoint(2000, 11_999.2, Number.POSITIVE_INFINITY)).toBe(1);
  });

  it('skips the grid point it has just served when a timer fired a little early', () => {
    // Fired at 11 999 for the point at 12 000, 0.1 ms after the last tick ran: the next is 14 000.
    expect(delayToNextGridPoint(2000, 11_999, 0.1)).toBe(2001);
    // The same instant long after the last tick: 12 000 is still to be served.
    expect(delayToNextGridPoint(2000, 11_999, 1999)).toBe(1);
  });

  it('fires on the grid with consecutive indexes, and stops', async () => {
    const period = 40;
    const seen: Array<{ n: number; offset: number }> = [];
    const timer = gridInterval(period, (n) => seen.push({ n, offset: epochNowMs() - n * period }));
    await new Promise((r) => setTimeout(r, period * 6.5));
    timer.stop();
    const count = seen.length;
    await new Promise((r) => setTimeout(r, period * 3));
    expect(seen.length).toBe(count);
    expect(count).toBeGreaterThanOrEqual(4);
    for (let i = 1; i < seen.length; i++) expect((seen[i]?.n ?? 0) - (seen[i - 1]?.n ?? 0)).toBeGreaterThanOrEqual(1);
    // Each call came at its grid point: never before it by more than libuv's early firing, and late only by loop lag.
    for (const s of seen) expect(s.offset).toBeGreaterThan(-2);
    expect(new Set(seen.map((s) => s.n)).size).toBe(seen.length);
  });
});
