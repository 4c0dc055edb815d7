/**
 * Health checks of service instances, run on the node that registered the instance.
 *
 * A check is a local function or an HTTP URL:
 * - a function returns a state (`'passing' | 'warning' | 'critical'`), a `{ status, output? }`,
 *   or nothing (= `passing`); throwing or rejecting is `critical` with the error's message, and
 *   so is not settling within `timeoutMs` (the function gets an `AbortSignal` that fires then);
 * - a URL gets a `GET`: a 2xx answer is `passing`, 429 (Too Many Requests) is `warning`, any
 *   other status (redirects included: they are not followed) and any network error or timeout
 *   is `critical`.
 *
 * Runs are on a fixed rate: each starts `intervalMs` after the previous one started (at once if
 * that one took longer), never two at a time.
 */
import { ConfigError } from '../../errors.js';
import { type HealthState, isHealthState } from './records.js';

/** What a check function may return. */
export interface HealthCheckResult {
  status: HealthState;
  /** A short explanation, published with the state (at most 256 characters are kept). */
  output?: string;
}

/**
 * A local health function: returns a state, a `HealthCheckResult`, or nothing (`passing`);
 * throwing (or rejecting) means `critical`. `signal` aborts when the run's `timeoutMs` is over.
 */
export type HealthCheckFn = (signal: AbortSignal) => HealthCheckReturn | Promise<HealthCheckReturn>;

/** What a check function returns: a state, a result, or nothing (`passing`). */
// biome-ignore lint/suspicious/noConfusingVoidType: a check that only has to not throw returns nothing (void), which must stay allowed.
export type HealthCheckReturn = HealthState | HealthCheckResult | undefined | void;

/** A check with its timing. */
export interface HealthCheckOptions {
  /** The check: a function, or an `http://` / `https://` URL to `GET`. */
  run: HealthCheckFn | string;
  /** Milliseconds between the starts of two runs. Default 5000; at least 10. */
  intervalMs?: number;
  /** Milliseconds one run may take before it counts as `critical`. Default 2000, and never more than `intervalMs`. */
  timeoutMs?: number;
}

/** The `check` option of `services.register`: a function, a URL, or either with its timing. */
export type HealthCheck = HealthCheckFn | string | HealthCheckOptions;

/** Defaults of `intervalMs` and `timeoutMs`. */
export const CHECK_DEFAULTS = { intervalMs: 5000, timeoutMs: 2000 } as const;
/** Shortest interval accepted. */
export const MIN_CHECK_INTERVAL_MS = 10;
/** Longest output kept. */
export const MAX_OUTPUT_LENGTH = 256;

/** A validated check. */
export interface ResolvedCheck {
  readonly run: HealthCheckFn | URL;
  readonly intervalMs: number;
  readonly timeoutMs: number;
}

/** One run's outcome. */
export interface CheckOutcome {
  readonly status: HealthState;
  readonly output: string | null;
  /** When the run started (ms since epoch). */
  readonly at: number;
}

function clip(text: string): string {
  return text.length > MAX_OUTPUT_LENGTH ? `${text.slice(0, MAX_OUTPUT_LENGTH - 1)}…` : text;
}

function parseUrl(url: string, key: string): URL {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new ConfigError(key, `expected a function or an http(s) URL, got ${JSON.stringify(url)}`);
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new ConfigError(key, `an HTTP check URL is http: or https:, got ${u.protocol}`);
  return u;
}

/** Validates the `check` option (ConfigError naming the key). */
export function resolveCheck(check: HealthCheck, key = 'check'): ResolvedCheck {
  const opts: HealthCheckOptions = typeof check === 'function' || typeof check === 'string' ? { run: check } : check;
  if (typeof opts !== 'object' || opts === null) throw new ConfigError(key, 'expected a function, an http(s) URL, or { run, intervalMs?, timeoutMs? }');
  const run = typeof opts.run === 'function' ? opts.run : typeof opts.run === 'string' ? parseUrl(opts.run, `${key}.run`) : undefined;
  if (run === undefined) throw new ConfigError(`${key}.run`, 'expected a function or an http(s) URL');
  const intervalMs = opts.intervalMs ?? CHECK_DEFAULTS.intervalMs;
  if (typeof intervalMs !== 'number' || !Number.isFinite(intervalMs) || intervalMs < MIN_CHECK_INTERVAL_MS)
    throw new ConfigError(`${key}.intervalMs`, `expected a number of milliseconds >= ${MIN_CHECK_INTERVAL_MS}, got ${String(intervalMs)}`);
  const timeoutMs = opts.timeoutMs ?? Math.min(CHECK_DEFAULTS.timeoutMs, intervalMs);
  if (typeof timeoutMs !== 'number' || !Number.isFinite(timeoutMs) || timeoutMs <= 0 || timeoutMs > intervalMs)
    throw new ConfigError(`${key}.timeoutMs`, `expected a number of milliseconds > 0 and <= intervalMs (${intervalMs}), got ${String(timeoutMs)}`);
  return { run, intervalMs, timeoutMs };
}

function fromReturn(value: unknown): { status: HealthState; output: string | null } {
  if (value === undefined) return { status: 'passing', output: null };
  if (isHealthState(value)) return { status: value, output: null };
  if (typeof value === 'object' && value !== null && isHealthState((value as HealthCheckResult).status)) {
    const output = (value as HealthCheckResult).output;
    return { status: (value as HealthCheckResult).status, output: typeof output === 'string' ? clip(output) : null };
  }
  return { status: 'critical', output: clip(`check returned ${JSON.stringify(value) ?? String(value)}, not a health state`) };
}

async function runHttp(url: URL, signal: AbortSignal): Promise<{ status: HealthState; output: string | null }> {
  const res = await fetch(url, { method: 'GET', redirect: 'manual', signal });
  // The body is not read: release the connection.
  await res.body?.cancel().catch(() => {});
  const output = `HTTP ${res.status}`;
  if (res.status >= 200 && res.status < 300) return { status: 'passing', output };
  if (res.status === 429) return { status: 'warning', output };
  return { status: 'critical', output };
}

/** Runs a check once, within its timeout. Never rejects. */
export async function runCheck(check: ResolvedCheck): Promise<CheckOutcome> {
  const at = Date.now();
  const ac = new AbortController();
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<{ status: HealthState; output: string | null }>((resolve) => {
    timer = setTimeout(() => {
      ac.abort(new Error(`check timed out after ${check.timeoutMs} ms`));
      resolve({ status: 'critical', output: `timed out after ${check.timeoutMs} ms` });
    }, check.timeoutMs);
  });
  const attempt = (async () => {
    if (check.run instanceof URL) return runHttp(check.run, ac.signal);
    return fromReturn(await check.run(ac.signal));
  })().catch((err: unknown) => ({ status: 'critical' as const, output: clip(err instanceof Error ? err.message : String(err)) }));
  try {
    const r = await Promise.race([attempt, timedOut]);
    return { ...r, at };
  } finally {
    clearTimeout(timer);
  }
}

/** Runs one check on its interval and reports every outcome. */
export class HealthCheckRunner {
  private timer?: NodeJS.Timeout;
  private stopped = false;
  private lastStart = 0;
  /** The latest outcome, once a run has finished. */
  last?: CheckOutcome;

  constructor(
    readonly check: ResolvedCheck,
    private readonly onOutcome: (outcome: CheckOutcome) => void,
  ) {}

  /** Runs the first check now and resolves with its outcome; later runs follow on the interval. */
  async start(): Promise<CheckOutcome> {
    const first = await this.runOnce();
    this.schedule();
    return first;
  }

  private async runOnce(): Promise<CheckOutcome> {
    this.lastStart = Date.now();
    const outcome = await runCheck(this.check);
    this.last = outcome;
    return outcome;
  }

  private schedule(): void {
    if (this.stopped) return;
    const wait = Math.max(0, this.lastStart + this.check.intervalMs - Date.now());
    this.timer = setTimeout(async () => {
      const outcome = await this.runOnce();
      if (this.stopped) return;
      this.onOutcome(outcome);
      this.schedule();
    }, wait);
    this.timer.unref();
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
  }
}
