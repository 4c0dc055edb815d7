/**
 * Keeps trying the addresses someone wants connected, with jittered exponential backoff, until
 * they are connected, and starts again when their link drops. Several owners (topologies) may
 * want the same address; it is dropped only when none does.
 */

export interface BackoffOptions {
  /** First retry delay in ms. Default 100. */
  baseMs: number;
  /** Largest retry delay in ms. Default 1000, so a healed partition rejoins within about a second. */
  maxMs: number;
}

export const DEFAULT_BACKOFF: BackoffOptions = { baseMs: 100, maxMs: 1000 };

/** Delay before retry number `attempt` (0-based): exponential, capped, with ±50% jitter so a restarted cluster does not retry in lockstep. */
export function backoffDelay(attempt: number, opts: BackoffOptions, random: () => number = Math.random): number {
  const exp = Math.min(opts.maxMs, opts.baseMs * 2 ** Math.min(attempt, 20));
  return Math.round(exp * (0.5 + random() * 0.5));
}

/** One finished connect attempt. */
export interface DialAttempt {
  address: string;
  owners: string[];
  durationMs: number;
  ok: boolean;
  error?: Error;
}

interface Wanted {
  owners: Set<string>;
  attempt: number;
  timer?: NodeJS.Timeout;
  connected: boolean;
  inFlight: boolean;
}

export class Dialer {
  private readonly wanted = new Map<string, Wanted>();
  private stopped = false;

  constructor(
    private readonly dial: (address: string) => Promise<{ ok: boolean; error?: Error }>,
    private readonly opts: BackoffOptions = DEFAULT_BACKOFF,
    /** Told about every attempt, for telemetry. */
    private readonly onAttempt?: (a: DialAttempt) => void,
  ) {}

  /**
   * Keeps `address` connected for `owner`. A newly wanted address is dialed at once, or after
   * `firstDelayMs` when given (a link that comes up meanwhile, e.g. the peer dialing us, makes the
   * dial unnecessary: `connected` cancels it). `connected`: a link to it exists already.
   */
  want(address: string, owner: string, firstDelayMs = 0, connected = false): void {
    let w = this.wanted.get(address);
    if (!w) {
      w = { owners: new Set(), attempt: 0, connected, inFlight: false };
      this.wanted.set(address, w);
    }
    w.owners.add(owner);
    if (w.connected || w.inFlight || w.timer) return;
    if (firstDelayMs > 0) this.delay(address, w, firstDelayMs);
    else this.attempt(address, w);
  }

  release(address: string, owner: string): void {
    const w = this.wanted.get(address);
    if (!w) return;
    w.owners.delete(owner);
    if (w.owners.size === 0) {
      clearTimeout(w.timer);
      this.wanted.delete(address);
    }
  }

  isWanted(address: string): boolean {
    return this.wanted.has(address);
  }

  owners(address: string): string[] {
    return [...(this.wanted.get(address)?.owners ?? [])];
  }

  /** The mesh reports a link to `address` came up. */
  connected(address: string): void {
    const w = this.wanted.get(address);
    if (!w) return;
    w.connected = true;
    w.attempt = 0;
    clearTimeout(w.timer);
    w.timer = undefined;
  }

  /** The mesh reports the link to `address` went away: start retrying. */
  disconnected(address: string): void {
    const w = this.wanted.get(address);
    if (!w || this.stopped) return;
    w.connected = false;
    if (!w.inFlight && !w.timer) this.schedule(address, w);
  }

  private schedule(address: string, w: Wanted): void {
    this.delay(address, w, backoffDelay(w.attempt++, this.opts));
  }

  private delay(address: string, w: Wanted, ms: number): void {
    w.timer = setTimeout(() => {
      w.timer = undefined;
      this.attempt(address, w);
    }, ms);
    w.timer.unref();
  }

  private attempt(address: string, w: Wanted): void {
    if (this.stopped || this.wanted.get(address) !== w) return;
    w.inFlight = true;
    const started = performance.now();
    const report = (ok: boolean, error?: Error) => {
      this.onAttempt?.({ address, owners: [...w.owners], durationMs: performance.now() - started, ok, error });
      this.settle(address, w, ok);
    };
    this.dial(address).then(
      (r) => report(r.ok, r.error),
      (err: Error) => report(false, err),
    );
  }

  private settle(address: string, w: Wanted, ok: boolean): void {
    w.inFlight = false;
    if (this.stopped || this.wanted.get(address) !== w) return;
    if (ok) this.connected(address);
    else if (!w.connected) this.schedule(address, w);
  }

  stop(): void {
    this.stopped = true;
    for (const w of this.wanted.values()) clearTimeout(w.timer);
    this.wanted.clear();
  }
}
