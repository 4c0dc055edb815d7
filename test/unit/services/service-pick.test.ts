/**
 * The pick strategies of node.services: which instance each one chooses, over real records
 * (pure code: the Picker has no network and no clock; `random` takes a seeded generator).
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ConfigError } from '../../../src/errors.js';
import { checkStrategy, PICK_STRATEGIES, Picker } from '../../../src/services/service-mesh/pick.js';
import type { HealthState, ServiceRecord } from '../../../src/services/service-mesh/records.js';

function rec(id: string, node: string, health: HealthState = 'passing', rttMs: number | null = 1): ServiceRecord {
  return { name: 'users', id, node, version: null, tags: [], meta: {}, endpoint: null, health, output: null, checkedAt: null, rttMs };
}

/** A seeded generator in [0, 1) (mulberry32). */
function seeded(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const ids = (p: Picker, key: string, records: ServiceRecord[], strategy: (typeof PICK_STRATEGIES)[number], n: number) =>
  Array.from({ length: n }, () => p.pick(key, records, strategy)?.id);

describe('service pick strategies', () => {
  it('round-robin goes through the instances in order, one counter per service', () => {
    const p = new Picker('a');
    const rs = [rec('i1', 'a'), rec('i2', 'b'), rec('i3', 'c')];
    expect(ids(p, 'users', rs, 'round-robin', 7)).toEqual(['i1', 'i2', 'i3', 'i1', 'i2', 'i3', 'i1']);
    expect(ids(p, 'orders', rs, 'round-robin', 2)).toEqual(['i1', 'i2']);
    expect(ids(p, 'users', rs, 'round-robin', 1)).toEqual(['i2']);
  });

  it('every strategy prefers passing instances, takes warning ones only when none passes, and never a critical one', () => {
    const mixed = [rec('i1', 'a', 'critical', 0), rec('i2', 'b', 'warning', 1), rec('i3', 'c', 'passing', 50)];
    const onlyWarning = [rec('i1', 'a', 'critical', 0), rec('i2', 'b', 'warning', 1)];
    for (const s of PICK_STRATEGIES) {
      const p = new Picker('a', seeded(1));
      expect(new Set(ids(p, 'users', mixed, s, 10)), s).toEqual(new Set(['i3']));
      expect(new Set(ids(p, 'users', onlyWarning, s, 10)), s).toEqual(new Set(['i2']));
      expect(p.pick('users', [rec('i1', 'a', 'critical')], s), s).toBeUndefined();
      expect(p.pick('users', [], s), s).toBeUndefined();
    }
  });

  it('random is uniform enough: 3,000 picks over 3 instances, each within ±15% of a third', () => {
    const p = new Picker('a', seeded(42));
    const counts = new Map<string, number>();
    for (const id of ids(p, 'users', [rec('i1', 'a'), rec('i2', 'b'), rec('i3', 'c')], 'random', 3000))
      counts.set(id as string, (counts.get(id as string) ?? 0) + 1);
    expect([...counts.keys()].sort()).toEqual(['i1', 'i2', 'i3']);
    for (const n of counts.values()) expect(Math.abs(n - 1000)).toBeLessThan(150);
  });

  it('least-rtt takes the nearest node (this node counts 0, an unmeasured RTT last), ties in turn', () => {
    const p = new Picker('self');
    expect(p.pick('users', [rec('i1', 'b', 'passing', 5), rec('i2', 'c', 'passing', 2), rec('i3', 'd', 'passing', null)], 'least-rtt')?.id).toBe('i2');
    // This node's own instance: RTT 0 whatever the record says.
    expect(p.pick('users', [rec('i1', 'b', 'passing', 0.5), rec('i2', 'self', 'passing', 99)], 'least-rtt')?.id).toBe('i2');
    // Only unmeasured ones: still picks one.
    expect(p.pick('users', [rec('i1', 'b', 'passing', null)], 'least-rtt')?.id).toBe('i1');
    const tied = [rec('i1', 'b', 'passing', 3), rec('i2', 'c', 'passing', 3), rec('i3', 'd', 'passing', 9)];
    expect(ids(new Picker('self'), 'users', tied, 'least-rtt', 4)).toEqual(['i1', 'i2', 'i1', 'i2']);
  });

  it('local-first takes this node’s instances in turn, and the others in turn when it has none', () => {
    const p = new Picker('a');
    const rs = [rec('i1', 'b'), rec('i2', 'a'), rec('i3', 'c'), rec('i4', 'a')];
    expect(ids(p, 'users', rs, 'local-first', 4)).toEqual(['i2', 'i4', 'i2', 'i4']);
    const remote = [rec('i1', 'b'), rec('i3', 'c')];
    expect(ids(p, 'users', remote, 'local-first', 3)).toEqual(['i1', 'i3', 'i1']);
  });

  it('any strategy, any records: the pick is one of the best-health candidates; round-robin spreads k picks evenly', () => {
    const recordsArb = fc.uniqueArray(
      fc.record({
        id: fc.stringMatching(/^[a-z][a-z0-9]{0,5}$/),
        node: fc.constantFrom('a', 'b', 'c'),
        health: fc.constantFrom<HealthState>('passing', 'warning', 'critical'),
        rtt: fc.option(fc.integer({ min: 0, max: 20 }), { nil: null }),
      }),
      { selector: (r) => r.id, maxLength: 8 },
    );
    fc.assert(
      fc.property(recordsArb, fc.constantFrom(...PICK_STRATEGIES), fc.integer({ min: 1, max: 30 }), fc.integer(), (raw, strategy, k, seed) => {
        const rs = raw.map((r) => rec(r.id, r.node, r.health, r.rtt)).sort((x, y) => (x.id < y.id ? -1 : 1));
        const best = rs.some((r) => r.health === 'passing') ? 'passing' : rs.some((r) => r.health === 'warning') ? 'warning' : undefined;
        const p = new Picker('a', seeded(seed));
        const picks = Array.from({ length: k }, () => p.pick('svc', rs, strategy));
        for (const r of picks) {
          if (best === undefined) expect(r).toBeUndefined();
          else expect(r?.health).toBe(best);
        }
        if (strategy === 'round-robin' && best) {
          const n = rs.filter((r) => r.health === best).length;
          const counts = new Map<string, number>();
          for (const r of picks) counts.set(r?.id ?? '', (counts.get(r?.id ?? '') ?? 0) + 1);
          for (const c of counts.values()) expect(c === Math.floor(k / n) || c === Math.ceil(k / n)).toBe(true);
        }
      }),
      { numRuns: 500 },
    );
  });

  it('refuses an unknown strategy, naming the key and the allowed values', () => {
    expect(() => checkStrategy('fastest')).toThrow(ConfigError);
    expect(() => checkStrategy('fastest')).toThrow(/round-robin, random, least-rtt, local-first/);
  });
});
