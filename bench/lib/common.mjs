// Shared helpers of the bench worker processes: the IPC command loop, clocks and statistics.
import { performance } from 'node:perf_hooks';

/** Monotonic milliseconds (sub-microsecond resolution), local to this process. */
export const now = () => performance.now();

/**
 * Wall-clock milliseconds with sub-millisecond resolution, comparable across processes on the
 * same machine (timeOrigin is the wall clock at process start, performance.now() is monotonic).
 */
export const wallNow = () => performance.timeOrigin + performance.now();

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Sends an unsolicited event to the orchestrator. */
export function emit(event, fields = {}) {
  if (process.connected) process.send({ event, at: wallNow(), ...fields });
}

/**
 * Runs the command loop: the orchestrator sends `{ id, cmd, ...args }`, the worker answers
 * `{ id, ok, result | error }`. `exit` is always available. The worker exits when the
 * orchestrator goes away (IPC channel closed), so no process outlives the bench.
 */
export function serve(commands) {
  const all = {
    exit: () => {
      setImmediate(() => process.exit(0));
      return true;
    },
    rss: () => process.memoryUsage().rss,
    ...commands,
  };
  process.on('message', async (m) => {
    if (!m || typeof m.cmd !== 'string') return;
    const fn = all[m.cmd];
    try {
      if (!fn) throw new Error(`unknown command ${m.cmd}`);
      const result = await fn(m);
      if (process.connected) process.send({ id: m.id, ok: true, result });
    } catch (err) {
      if (process.connected) process.send({ id: m.id, ok: false, error: err?.stack ?? String(err) });
    }
  });
  process.on('disconnect', () => process.exit(0));
}

/** Percentiles (nearest rank) of samples given in milliseconds, reported in microseconds. */
export function summarizeUs(samplesMs, count = samplesMs.length) {
  const s = Float64Array.from(samplesMs.subarray ? samplesMs.subarray(0, count) : samplesMs.slice(0, count)).sort();
  const n = s.length;
  if (n === 0) return { n: 0 };
  const at = (q) => s[Math.min(n - 1, Math.max(0, Math.ceil(q * n) - 1))] * 1000;
  let sum = 0;
  for (let i = 0; i < n; i++) sum += s[i];
  return {
    n,
    p50Us: round1(at(0.5)),
    p90Us: round1(at(0.9)),
    p99Us: round1(at(0.99)),
    p999Us: round1(at(0.999)),
    maxUs: round1(s[n - 1] * 1000),
    minUs: round1(s[0] * 1000),
    meanUs: round1((sum / n) * 1000),
  };
}

export const round1 = (x) => Math.round(x * 10) / 10;

/** A payload of `size` bytes (not all zero, so nothing can special-case it). */
export function payload(size) {
  const b = Buffer.allocUnsafe(size);
  for (let i = 0; i < size; i++) b[i] = (i * 31 + 7) & 0xff;
  return b;
}

/**
 * Times `n` round trips of `once` (an async function doing one request and awaiting its reply)
 * after `warmup` untimed ones. Returns the samples in ms when `raw` (for the coordinator to merge
 * rounds), else their summary.
 */
export async function timeRoundTrips(once, { warmup, n, raw = false }) {
  for (let i = 0; i < warmup; i++) await once();
  const samples = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    const t = now();
    await once();
    samples[i] = now() - t;
  }
  return raw ? Array.from(samples) : summarizeUs(samples);
}

/** Messages between two acknowledgements of an `ackWindow` subscriber. */
export const ACK_EVERY = 4096;

/**
 * The publisher's side of the flow control the bench adds to brokers that have none end to end
 * (NATS, Redis pub/sub, Moleculer events): a subscriber that falls behind would otherwise be cut
 * off or grow the broker's buffers without bound. The subscriber reports its running count every
 * ACK_EVERY messages; feed those to `ack(count)`, and `await wait(sent, end)` after each batch:
 * it returns once at most `window` messages are unacknowledged (or at `end`), counting the waits.
 */
export function ackWindow(window) {
  let acked = 0;
  let wake;
  let waits = 0;
  return {
    get waits() {
      return waits;
    },
    ack(count) {
      acked = count;
      const w = wake;
      wake = undefined;
      w?.();
    },
    async wait(sent, end) {
      while (sent - acked > window && now() < end) {
        waits++;
        // The timeout only matters if messages were lost (the subscriber would never ack them).
        const timer = setTimeout(() => wake?.(), 1000);
        await new Promise((r) => {
          wake = r;
        });
        clearTimeout(timer);
      }
    },
  };
}
