import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { backoffDelay, type DialAttempt, Dialer } from '../../src/mesh/dialer.js';

const opts = { baseMs: 100, maxMs: 1000 };

/** A dialer whose dials are recorded and settled by the test. */
function harness() {
  const dials: Array<{ address: string; settle: (ok: boolean) => void }> = [];
  const attempts: DialAttempt[] = [];
  const dialer = new Dialer(
    (address) =>
      new Promise((resolve) => {
        dials.push({ address, settle: (ok) => resolve(ok ? { ok } : { ok, error: new Error('refused') }) });
      }),
    opts,
    (a) => attempts.push(a),
  );
  return { dialer, dials, attempts };
}

describe('Dialer', () => {
  beforeEach(() => {
    vi.useFakeTimers();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it('dials a newly wanted address at once', () => {
    const { dialer, dials } = harness();
    dialer.want('10.0.0.2:7400', 'topo');
    expect(dials.map((d) => d.address)).toEqual(['10.0.0.2:7400']);
    dialer.want('10.0.0.2:7400', 'other');
    expect(dials).toHaveLength(1);
    dialer.stop();
  });

  it('with a first delay, dials only when no link came up meanwhile', async () => {
    const { dialer, dials } = harness();
    dialer.want('10.0.0.2:7400', 'topo', 200);
    dialer.want('10.0.0.3:7400', 'topo', 200);
    await vi.advanceTimersByTimeAsync(199);
    expect(dials).toHaveLength(0);
    // The peer at .2 dialed us first: nothing left to do for it.
    dialer.connected('10.0.0.2:7400');
    await vi.advanceTimersByTimeAsync(1);
    expect(dials.map((d) => d.address)).toEqual(['10.0.0.3:7400']);
    await vi.advanceTimersByTimeAsync(10_000);
    expect(dials).toHaveLength(1);
    dialer.stop();
  });

  it('retries a failed dial with capped, jittered backoff until it connects, and reports each attempt', async () => {
    const { dialer, dials, attempts } = harness();
    dialer.want('10.0.0.2:7400', 'topo');
    for (let i = 0; i < 6; i++) {
      dials[i]?.settle(false);
      await vi.advanceTimersByTimeAsync(0);
      // backoffDelay(i) is at most min(1000, 100·2^i).
      await vi.advanceTimersByTimeAsync(Math.min(1000, 100 * 2 ** i));
      expect(dials).toHaveLength(i + 2);
    }
    dials[6]?.settle(true);
    await vi.advanceTimersByTimeAsync(5000);
    expect(dials).toHaveLength(7);
    expect(attempts.map((a) => a.ok)).toEqual([false, false, false, false, false, false, true]);
    expect(attempts[0]).toMatchObject({ address: '10.0.0.2:7400', owners: ['topo'] });
    dialer.stop();
  });

  it('stops retrying once no owner wants the address', async () => {
    const { dialer, dials } = harness();
    dialer.want('10.0.0.2:7400', 'a');
    dialer.want('10.0.0.2:7400', 'b');
    dials[0]?.settle(false);
    await vi.advanceTimersByTimeAsync(0);
    dialer.release('10.0.0.2:7400', 'a');
    expect(dialer.isWanted('10.0.0.2:7400')).toBe(true);
    dialer.release('10.0.0.2:7400', 'b');
    expect(dialer.isWanted('10.0.0.2:7400')).toBe(false);
    await vi.advanceTimersByTimeAsync(5000);
    expect(dials).toHaveLength(1);
    dialer.stop();
  });

  it('redials with backoff after a connected address is reported disconnected', async () => {
    const { dialer, dials } = harness();
    dialer.want('10.0.0.2:7400', 'topo');
    dials[0]?.settle(true);
    await vi.advanceTimersByTimeAsync(0);
    dialer.disconnected('10.0.0.2:7400');
    expect(dials).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(100);
    expect(dials).toHaveLength(2);
    dialer.stop();
  });
});

describe('backoffDelay', () => {
  it('doubles from baseMs up to maxMs, jittered into [50%, 100%] of that', () => {
    expect(backoffDelay(0, opts, () => 0)).toBe(50);
    expect(backoffDelay(0, opts, () => 1)).toBe(100);
    expect(backoffDelay(3, opts, () => 1)).toBe(800);
    expect(backoffDelay(4, opts, () => 1)).toBe(1000);
    expect(backoffDelay(50, opts, () => 0)).toBe(500);
  });
});
