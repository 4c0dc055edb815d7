/**
 * Choosing one instance of a service among the healthy ones.
 *
 * Every strategy first narrows the candidates to the `passing` ones when there are any, so a
 * `warning` instance is used only when no instance passes. Then:
 * - `round-robin`: the next one in instance-id order, one counter per service on this node;
 * - `random`: uniformly at random;
 * - `least-rtt`: the one on the node with the smallest heartbeat RTT (this node counts 0, an
 *   unmeasured RTT counts last); ties go round-robin;
 * - `local-first`: instances on this node, round-robin; when there is none, round-robin over the rest.
 */
import { ConfigError } from '../../errors.js';
import type { ServiceRecord } from './records.js';

/** How `pick` and `call` choose an instance. */
export type PickStrategy = 'round-robin' | 'random' | 'least-rtt' | 'local-first';

/** The strategies. */
export const PICK_STRATEGIES: readonly PickStrategy[] = ['round-robin', 'random', 'least-rtt', 'local-first'];

export function checkStrategy(strategy: unknown, key = 'strategy'): asserts strategy is PickStrategy {
  if (!PICK_STRATEGIES.includes(strategy as PickStrategy))
    throw new ConfigError(key, `expected one of ${PICK_STRATEGIES.join(', ')}, got ${JSON.stringify(strategy)}`);
}

/** Most services whose round-robin position is remembered; past it the oldest is forgotten. */
const MAX_COUNTERS = 10_000;

export class Picker {
  private readonly counters = new Map<string, number>();

  constructor(
    /** This node's name (for `local-first` and `least-rtt`). */
    private readonly self: string,
    /** A number in [0, 1): injectable so tests are deterministic. */
    private readonly random: () => number = Math.random,
  ) {}

  /**
   * Picks one of `records` (healthy instances of one service, in id order) with `strategy`;
   * undefined when there is none. `key` names the round-robin counter (the service name).
   */
  pick(key: string, records: readonly ServiceRecord[], strategy: PickStrategy): ServiceRecord | undefined {
    let candidates = records.filter((r) => r.health === 'passing');
    if (candidates.length === 0) candidates = records.filter((r) => r.health === 'warning');
    if (candidates.length === 0) return undefined;
    switch (strategy) {
      case 'random':
        return candidates[Math.min(candidates.length - 1, Math.floor(this.random() * candidates.length))];
      case 'least-rtt': {
        const rtt = (r: ServiceRecord) => (r.node === this.self ? 0 : (r.rttMs ?? Number.POSITIVE_INFINITY));
        const best = Math.min(...candidates.map(rtt));
        return this.next(
          `${key}\0rtt`,
          candidates.filter((r) => rtt(r) === best),
        );
      }
      case 'local-first': {
        const local = candidates.filter((r) => r.node === this.self);
        return local.length > 0 ? this.next(`${key}\0local`, local) : this.next(key, candidates);
      }
      default:
        return this.next(key, candidates);
    }
  }

  private next(key: string, candidates: readonly ServiceRecord[]): ServiceRecord | undefined {
    const n = this.counters.get(key) ?? 0;
    if (!this.counters.has(key) && this.counters.size >= MAX_COUNTERS) {
      const oldest = this.counters.keys().next().value;
      if (oldest !== undefined) this.counters.delete(oldest);
    }
    this.counters.set(key, n + 1 >= Number.MAX_SAFE_INTEGER ? 0 : n + 1);
    return candidates[n % candidates.length];
  }
}
