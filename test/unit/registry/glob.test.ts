/**
 * registry.select's globs and its sorted view of the names: for any sequence of names added and
 * removed, a select read through the prefix (`SortedNames.withPrefix` + the compiled glob)
 * returns exactly what testing every name does, in the same order.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { GlobCache, globToRegExp, literalPrefix, SortedNames } from '../../../src/registry/glob.js';

/** What select returned before the sorted view: every name tested, then sorted. */
function naive(names: Set<string>, glob: string): string[] {
  const re = globToRegExp(glob);
  return [...names].filter((n) => re.test(n)).sort();
}

function viaPrefix(sorted: SortedNames, globs: GlobCache, names: Set<string>, glob: string): string[] {
  const prefix = literalPrefix(glob);
  if (prefix.length === 0) return naive(names, glob);
  const re = globs.get(glob);
  return sorted.withPrefix(prefix).filter((n) => re.test(n));
}

describe('registry globs', () => {
  it('the literal prefix is what comes before the first wildcard', () => {
    expect(literalPrefix('service:users:*')).toBe('service:users:');
    expect(literalPrefix('room:?:*')).toBe('room:');
    expect(literalPrefix('*')).toBe('');
    expect(literalPrefix('exact')).toBe('exact');
    expect(globToRegExp('a.b*').test('a.bc')).toBe(true);
    expect(globToRegExp('a.b*').test('axbc')).toBe(false);
  });

  it('any adds and removes, any glob: the prefix read equals testing every name, in order', () => {
    const nameArb = fc.stringMatching(/^[a-c:.*?é]{0,6}$/);
    const opArb = fc.oneof(
      fc.record({ k: fc.constant('add' as const), name: nameArb }),
      fc.record({ k: fc.constant('remove' as const), name: nameArb }),
      fc.record({ k: fc.constant('select' as const), glob: fc.stringMatching(/^[a-c:.é]{0,3}[*?]?[a-c:]{0,2}\*?$/) }),
    );
    fc.assert(
      fc.property(fc.array(opArb, { maxLength: 200 }), fc.boolean(), (ops, readFirst) => {
        const names = new Set<string>();
        const sorted = new SortedNames(() => names);
        const globs = new GlobCache();
        // The view is built on the first read: from the start, or after some changes.
        if (readFirst) sorted.withPrefix('');
        for (const op of ops) {
          if (op.k === 'add') {
            names.add(op.name);
            sorted.add(op.name);
          } else if (op.k === 'remove') {
            names.delete(op.name);
            sorted.remove(op.name);
          } else {
            expect(viaPrefix(sorted, globs, names, op.glob), op.glob).toEqual(naive(names, op.glob));
          }
        }
        expect(sorted.withPrefix('')).toEqual([...names].sort());
      }),
      { numRuns: 1000 },
    );
  });

  it('past 20,000 names a change drops the view, and the next read rebuilds it', () => {
    const names = new Set(Array.from({ length: 20_001 }, (_, i) => `n:${i}`));
    const sorted = new SortedNames(() => names);
    expect(sorted.withPrefix('n:1999').length).toBe(11);
    names.add('n:19990');
    sorted.add('n:19990'); // dropped, not spliced
    names.delete('n:1999');
    expect(sorted.withPrefix('n:1999')).toEqual([...names].filter((n) => n.startsWith('n:1999')).sort());
  });
});
