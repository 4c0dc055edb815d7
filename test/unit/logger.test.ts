/** The log helpers: LogOnce (once per key until forgotten, bounded) and RateLimitedLog. */
import { describe, expect, it } from 'vitest';
import { type Logger, LogOnce, RateLimitedLog } from '../../src/util/logger.js';

function recorder(): { logger: Logger; lines: Array<{ obj: object; msg?: string }> } {
  const lines: Array<{ obj: object; msg?: string }> = [];
  const logger: Logger = {
    debug() {},
    info() {},
    warn: (obj, msg) => lines.push({ obj, msg }),
    error() {},
    child: () => logger,
  };
  return { logger, lines };
}

describe('LogOnce', () => {
  it('logs a key once until it is forgotten, then once again', () => {
    const { logger, lines } = recorder();
    const once = new LogOnce(logger);
    expect(once.warn('a', { n: 1 }, 'first')).toBe(true);
    expect(once.warn('a', { n: 2 }, 'again')).toBe(false);
    expect(once.warn('b', { n: 3 }, 'other key')).toBe(true);
    once.forget('a');
    expect(once.has('a')).toBe(false);
    expect(once.warn('a', { n: 4 }, 'after forget')).toBe(true);
    expect(lines.map((l) => l.msg)).toEqual(['first', 'other key', 'after forget']);
  });

  it('stays bounded: past maxKeys distinct keys it starts over', () => {
    const once = new LogOnce(undefined, 3);
    for (const k of ['a', 'b', 'c']) expect(once.first(k)).toBe(true);
    expect(once.first('a')).toBe(false);
    expect(once.first('d')).toBe(true); // the fourth key clears the record
    expect(once.first('a')).toBe(true);
  });
});

describe('RateLimitedLog', () => {
  it('logs a key at most once per interval and says how many lines it held back', () => {
    const { logger, lines } = recorder();
    const log = new RateLimitedLog(logger, 60_000);
    for (let i = 0; i < 5; i++) log.warn('k', { i }, 'flood');
    log.warn('other', {}, 'another key');
    expect(lines).toHaveLength(2);
    expect(lines[0]?.obj).toMatchObject({ i: 0, suppressedSinceLast: 0 });
  });
});
