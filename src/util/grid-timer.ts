/**
 * A periodic timer whose ticks fall on multiples of its period on the epoch clock.
 *
 * Why: an idle node pays for wake-ups, not for the work done in them (each costs on the order of
 * 100 µs of CPU on a small VM). Timers with the same period that fire at the same instant share
 * one wake-up of their thread, and their messages reach a peer together, so the peer wakes once
 * for all of them. Aligning every periodic digest of a node (registry, processes, presence,
 * config, pubsub interest) to the epoch grid makes them fire together on every node of a host,
 * instead of at the phases their start-up happened to give them.
 */

/** Current time in epoch milliseconds from the monotonic clock (comparable across threads and processes). */
export function epochNowMs(): number {
  return performance.timeOrigin + performance.now();
}

/**
 * Delay until the next multiple of `periodMs` on the epoch clock. Timers may fire a little early
 * (libuv caches its clock per loop turn): a grid point closer than a quarter period to a tick that
 * ran less than half a period ago is the one just served, so the next one is aimed for instead.
 */
export function delayToNextGridPoint(periodMs: number, nowEpochMs: number, msSinceLastTick: number): number {
  let delay = periodMs - (nowEpochMs % periodMs);
  if (delay < periodMs / 4 && msSinceLastTick < periodMs / 2) delay += periodMs;
  return Math.max(1, Math.ceil(delay));
}

/** A running {@link gridInterval}. */
export interface GridTimer {
  /** Stops the timer; idempotent. */
  stop(): void;
}

/**
 * Calls `fn(n)` at every multiple of `periodMs` on the epoch clock, where `n` is the grid index
 * (`floor(epoch ms / periodMs)`): callers derive slower cadences from it (`n % 15 === 0`) that
 * line up across timers and processes too. Unref'd: it never keeps the process alive.
 */
export function gridInterval(periodMs: number, fn: (n: number) => void): GridTimer {
  let timer: NodeJS.Timeout | undefined;
  let lastRanAt = Number.NEGATIVE_INFINITY;
  let stopped = false;
  const arm = () => {
    if (stopped) return;
    timer = setTimeout(run, delayToNextGridPoint(periodMs, epochNowMs(), performance.now() - lastRanAt));
    timer.unref();
  };
  const run = () => {
    lastRanAt = performance.now();
    try {
      fn(Math.round(epochNowMs() / periodMs));
    } finally {
      arm();
    }
  };
  arm();
  return {
    stop() {
      stopped = true;
      clearTimeout(timer);
    },
  };
}
