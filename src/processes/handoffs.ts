/**
 * Which node last ran each name, and which singletons a live host just gave up.
 *
 * Why the second: a graceful stop unregisters a singleton, then asks its successor (the owner) to
 * adopt it with its state. The owner's placement runs on the unregistration; under load it could
 * start the singleton fresh in the moment between the two messages, and the handed-off state was
 * lost (a CI run saw it). A singleton that a host still up unregistered is therefore left to its
 * handoff for `HANDOFF_GRACE_MS`; a host that goes down hands nothing off, so what it held is
 * placed at once.
 */
import type { Registry } from '../registry/registry.js';

/**
 * How long an available singleton that a live host just unregistered is left to its handoff
 * before the owner starts it fresh: 1000 ms. The adopt request follows the unregistration on the
 * same lane, so it normally arrives within a millisecond; the grace covers a loaded host, and is
 * the delay a worker that gave up on a live host waits before it restarts elsewhere.
 */
export const HANDOFF_GRACE_MS = 1000;

export class Handoffs {
  /** The last node seen running each name (failover accounting). */
  private readonly hosts = new Map<string, string>();
  /** Names a live host unregistered, and when: a handoff may be under way. */
  private readonly releasedAt = new Map<string, number>();

  constructor(
    private readonly self: string,
    /** Clock (ms); tests drive it. */
    private readonly now: () => number = Date.now,
  ) {}

  /** The last node seen running `name`. */
  lastHost(name: string): string | undefined {
    return this.hosts.get(name);
  }

  /** `name` was registered on `node` (started, or adopted by its successor): no handoff pending. */
  registered(name: string, node: string): void {
    this.hosts.set(name, node);
    this.releasedAt.delete(name);
  }

  /**
   * `name` was unregistered. Returns true when its last host is another node that is still up:
   * a handoff may be under way, and `handingOff(name)` holds for `HANDOFF_GRACE_MS`.
   */
  unregistered(name: string, isUp: (node: string) => boolean): boolean {
    const host = this.hosts.get(name);
    if (host === undefined || host === this.self || !isUp(host)) return false;
    this.releasedAt.set(name, this.now());
    return true;
  }

  /** `node` went down: it hands nothing off. */
  hostDown(node: string): void {
    for (const name of [...this.releasedAt.keys()]) if (this.hosts.get(name) === node) this.releasedAt.delete(name);
  }

  /** Whether `name` is being handed off (a live host gave it up less than `HANDOFF_GRACE_MS` ago). */
  handingOff(name: string): boolean {
    const at = this.releasedAt.get(name);
    if (at === undefined) return false;
    if (this.now() - at < HANDOFF_GRACE_MS) return true;
    this.releasedAt.delete(name);
    return false;
  }
}

/**
 * Resolves once `registry` no longer shows `holder` owning `name`, or after `HANDOFF_GRACE_MS`:
 * what a successor waits for before it adopts a worker `holder` hands off. The host unregisters
 * before it asks, on the same lane, but the successor may apply that later: after a lost delta
 * its registry waits for the host's full map. Refused as "already registered", the handoff would
 * fail and the worker start fresh, without its state (what a CI run under load showed; this is
 * its likely cause).
 */
export function releasedBy(registry: Registry, name: string, holder: string): Promise<void> {
  if (registry.lookup(name)?.node !== holder) return Promise.resolve();
  return new Promise<void>((resolve) => {
    const done = () => {
      clearTimeout(timer);
      stop();
      resolve();
    };
    const timer = setTimeout(done, HANDOFF_GRACE_MS);
    const stop = registry.watch(() => {
      if (registry.lookup(name)?.node !== holder) done();
    });
  });
}
