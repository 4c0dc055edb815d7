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
