import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { PubSubError } from '../../../src/errors.js';
import { assertPublishTopic, parsePattern, patternMatches } from '../../../src/pubsub/subject.js';
import { SubjectIndex } from '../../../src/pubsub/subject-index.js';

// A small alphabet makes collisions (and so real matches) frequent.
const token = fc.constantFrom('a', 'b', 'c', 'rooms', '42');
const topicArb = fc.array(token, { minLength: 1, maxLength: 5 }).map((t) => t.join('.'));
const patternArb = fc
  .tuple(fc.array(fc.oneof(token, fc.constant('*')), { minLength: 1, maxLength: 5 }), fc.boolean())
  .map(([t, rest]) => (rest ? [...t.slice(0, -1), '>'] : t).join('.'));

describe('subject rules', () => {
  it('agrees with hand-written NATS cases', () => {
    const m = (p: string, t: string) => patternMatches(parsePattern(p).tokens, t.split('.'));
    expect(m('a.b', 'a.b')).toBe(true);
    expect(m('a.*', 'a.b')).toBe(true);
    expect(m('a.*', 'a.b.c')).toBe(false);
    expect(m('a.>', 'a.b.c')).toBe(true);
    expect(m('a.>', 'a')).toBe(false); // `>` needs at least one token
    expect(m('>', 'a')).toBe(true);
    expect(m('*.b.>', 'x.b.y.z')).toBe(true);
    expect(m('*', 'room:lobby')).toBe(true);
  });

  it('refuses bad topics and patterns with TOPIC_INVALID', () => {
    for (const bad of ['', 'a..b', '.a', 'a.', 'a.*', 'a.>', 'x'.repeat(256)]) {
      expect(() => assertPublishTopic(bad), bad).toThrow(PubSubError);
    }
    for (const bad of ['', 'a..b', 'a.>.b', 'a*', 'a.b>', 'é'.repeat(128)]) {
      expect(() => parsePattern(bad), bad).toThrowError(expect.objectContaining({ code: 'FOUNDATION_TOPIC_INVALID' }));
    }
    expect(() => assertPublishTopic(42 as unknown as string)).toThrow(/must be a string/);
  });
});

describe('SubjectIndex', () => {
  it('matches exactly what the reference model matches, under random adds and removes', () => {
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.boolean(), patternArb, fc.integer({ min: 0, max: 4 })), { maxLength: 60 }),
        fc.array(topicArb, { minLength: 1, maxLength: 10 }),
        (ops, topics) => {
          const index = new SubjectIndex<number>();
          // Model: multiset of (pattern, value) pairs.
          const model: Array<[string, number]> = [];
          for (const [add, pattern, value] of ops) {
            const p = parsePattern(pattern);
            if (add) {
              index.add(p, value);
              model.push([pattern, value]);
            } else {
              const at = model.findIndex(([mp, mv]) => mp === pattern && mv === value);
              expect(index.remove(p, value)).toBe(at >= 0);
              if (at >= 0) model.splice(at, 1);
            }
          }
          expect(index.size).toBe(model.length);
          for (const topic of topics) {
            const want = new Set(model.filter(([p]) => patternMatches(p.split('.'), topic.split('.'))).map(([, v]) => v));
            const got = index.matchAll(topic);
            expect(new Set(got)).toEqual(want);
            expect(got.length).toBe(want.size); // each value once
            expect(index.hasMatch(topic)).toBe(want.size > 0);
          }
        },
      ),
      { numRuns: 500 },
    );
  });

  it('prunes the trie: adding then removing many distinct patterns leaves it empty', () => {
    const index = new SubjectIndex<string>();
    for (let i = 0; i < 1000; i++) index.add(parsePattern(`t.${i}.*.>`), 's');
    for (let i = 0; i < 1000; i++) expect(index.remove(parsePattern(`t.${i}.*.>`), 's')).toBe(true);
    expect(index.size).toBe(0);
    expect(index.hasWildcards).toBe(false);
    // The root has no children left.
    expect((index as unknown as { root: { children: Map<string, unknown> } }).root.children.size).toBe(0);
  });
});
