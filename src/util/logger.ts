import { pino } from 'pino';

/** The logger shape Foundation needs: pino's, so a pino instance (or a compatible one) can be passed in. */
export interface Logger {
  debug(obj: object, msg?: string): void;
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
  child(bindings: Record<string, unknown>): Logger;
}

/** The default logger: pino to stderr at `info` (or FOUNDATION_LOG_LEVEL). */
export function defaultLogger(bindings: Record<string, unknown>): Logger {
  return pino({ level: process.env.FOUNDATION_LOG_LEVEL ?? 'info', base: bindings }, pino.destination(2));
}

/**
 * Logs a line at most once per `intervalMs` for each key, counting what it held back,
 * so a flood of hostile packets cannot flood the log.
 */
export class RateLimitedLog {
  private readonly last = new Map<string, { at: number; suppressed: number }>();
  constructor(
    private readonly log: Logger,
    private readonly intervalMs = 10_000,
  ) {}

  warn(key: string, obj: object, msg: string): void {
    const now = Date.now();
    const entry = this.last.get(key);
    if (entry && now - entry.at < this.intervalMs) {
      entry.suppressed++;
      return;
    }
    this.log.warn({ ...obj, suppressedSinceLast: entry?.suppressed ?? 0 }, msg);
    this.last.set(key, { at: now, suppressed: 0 });
    if (this.last.size > 1000) this.last.clear();
  }
}

/**
 * Remembers which keys were already reported, so a condition that persists (a failing lookup,
 * a broken socket, a misconfigured listing) is reported once rather than on every retry.
 * `forget` a key when its condition clears, so a recurrence is reported again. Bounded: past
 * `maxKeys` distinct keys it starts over (a key then may be reported once more).
 */
export class LogOnce {
  private readonly seen = new Set<string>();
  constructor(
    private readonly log?: Logger,
    private readonly maxKeys = 1000,
  ) {}

  /** True the first time `key` is seen (since it was last forgotten); false after. */
  first(key: string): boolean {
    if (this.seen.has(key)) return false;
    if (this.seen.size >= this.maxKeys) this.seen.clear();
    this.seen.add(key);
    return true;
  }

  /** Whether `key` was reported and not forgotten since. */
  has(key: string): boolean {
    return this.seen.has(key);
  }

  /** Logs `msg` at `warn` the first time `key` is seen. Returns whether it logged. */
  warn(key: string, obj: object, msg: string): boolean {
    if (!this.first(key)) return false;
    this.log?.warn(obj, msg);
    return true;
  }

  /** Lets `key` be reported again (its condition cleared). */
  forget(key: string): void {
    this.seen.delete(key);
  }

  /** Lets every key be reported again. */
  clear(): void {
    this.seen.clear();
  }
}
