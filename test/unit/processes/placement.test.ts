import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ownerOf, rankFor } from '../../../src/processes/placement.js';

describe('rendezvous placement', () => {
  it('spreads 1,000 keys over 3 nodes within ±20% of even', () => {
    const counts = new Map<string, number>();
    for (let i = 0; i < 1000; i++) {
      const o = ownerOf(`job:${i}`, ['n1', 'n2', 'n3']) as string;
      counts.set(o, (counts.get(o) ?? 0) + 1);
    }
    for (const n of ['n1', 'n2', 'n3']) expect(Math.abs((counts.get(n) ?? 0) - 1000 / 3)).toBeLessThanOrEqual(1000 / 3 / 5);
  });

  it('is the same whatever the order of the members, and moves only what the change must move', () => {
    fc.assert(
      fc.property(
        fc.uniqueArray(fc.constantFrom('a', 'b', 'c', 'd', 'e', 'f', 'g'), { minLength: 2, maxLength: 7 }),
        fc.array(fc.string({ maxLength: 12 }), { minLength: 1, maxLength: 50 }),
        (members, keys) => {
          const [leaving] = members;
          const rest = members.slice(1);
          for (const k of keys) {
            const owner = ownerOf(k, members);
            expect(ownerOf(k, [...members].reverse())).toBe(owner);
            expect(rankFor(k, members)[0]).toBe(owner);
            // A member leaves: only its keys move, each to the next in its rank.
            const after = ownerOf(k, rest);
            if (owner !== leaving) expect(after).toBe(owner);
            else expect(after).toBe(rankFor(k, members)[1]);
          }
        },
      ),
    );
    expect(ownerOf('x', [])).toBeUndefined();
  });
});
