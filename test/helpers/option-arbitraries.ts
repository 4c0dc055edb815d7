/**
 * Generated start options and `FOUNDATION_*` environments, valid and not, for the property tests
 * that `foundation config explain` accepts exactly what `Foundation.start` accepts
 * (test/unit/options.test.ts against the resolver, test/process/config.test.ts against real starts).
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';
import type { FoundationOptions } from '../../src/config/options.js';

/** A secret long enough not to be warned about. */
export const SECRET = 'a-secret-of-at-least-32-bytes-for-tests';

/**
 * What happened: 'ok', or the error's class, code, key and message. Duck-typed, so it compares
 * errors of `src/` and of `dist/` alike; anything that is not a FoundationError is rethrown.
 */
export async function outcome(fn: () => Promise<unknown>): Promise<string> {
  try {
    await fn();
    return 'ok';
  } catch (err) {
    const e = err as { name?: string; code?: unknown; key?: unknown; message?: string };
    if (typeof e.code === 'string' && e.code.startsWith('FOUNDATION_')) return `${e.name} ${e.code} ${String(e.key ?? '')}: ${e.message}`;
    throw err;
  }
}

/** Mostly absent: each key is set about one time in seven, so that enough whole configurations are valid. */
export const maybe = <T>(arb: fc.Arbitrary<T>): fc.Arbitrary<T | undefined> =>
  fc.oneof({ weight: 6, arbitrary: fc.constant(undefined) }, { weight: 1, arbitrary: arb });

/** Options across the valid and invalid values of most keys, as a user could write them. */
export const optionsArb: fc.Arbitrary<FoundationOptions> = fc
  .record(
    {
      name: maybe(fc.constantFrom('node-a', '-leading-dash', 'x'.repeat(200), '')),
      port: maybe(fc.constantFrom(0, 4369, 70_000, -1, 1.5)),
      host: maybe(fc.constantFrom('127.0.0.1', '')),
      clusterName: maybe(fc.constantFrom('c1', '', 'y'.repeat(129))),
      secret: maybe(fc.constantFrom(SECRET, 'short', '')),
      insecure: maybe(fc.boolean()),
      hidden: maybe(fc.boolean()),
      http: maybe(
        fc.constantFrom<unknown>(false, true, 0, 9100, 70_000, '9100', '0.0.0.0:9100', 'nope', { port: 0 }, { host: '', port: 1 }, { port: 1, x: 1 }),
      ),
      maxFrameBytes: maybe(fc.constantFrom(70_000, 1 << 20, 69_999, 2 << 20)),
      fragmentBytes: maybe(fc.constantFrom(1024, 65_536, 1 << 20, 512)),
      maxMessageBytes: maybe(fc.constantFrom(3, 6, 1 << 20, 0)),
      windowBytes: maybe(fc.constantFrom(65_536, 1000)),
      failureDetector: maybe(
        fc.record(
          {
            heartbeatIntervalMs: maybe(fc.constantFrom(5, 250, 70_000)),
            phiThreshold: maybe(fc.constantFrom(2, 8, 2000)),
            suspectPhi: maybe(fc.constantFrom(1, 3, 9)),
            maxMainStallMs: maybe(fc.constantFrom(50, 10_000)),
          },
          { requiredKeys: [] },
        ),
      ),
      lanes: maybe(
        fc.constantFrom<unknown>(
          { mode: 'fifo' },
          { mode: 'lifo' },
          { telemetry: { highWaterMark: 4 << 20 } },
          { bulk: { highWaterMark: 1, hardLimit: 2 } },
          { bulk: { overflow: 'drop-newest' } },
        ),
      ),
      reconnect: maybe(fc.constantFrom<unknown>({ baseMs: 100, maxMs: 1000 }, { baseMs: 500, maxMs: 100 }, { baseMs: 100 })),
      cluster: maybe(
        fc.constantFrom<unknown>(
          false,
          { strategy: 'static', hosts: ['127.0.0.1:1'] },
          { strategy: 'static', hosts: ['nope'] },
          { strategy: 'dns', query: 'x.internal' },
          { strategy: 'dns', query: 'x.internal', port: 4369 },
          { strategy: 'kubernets', appName: 'a' },
          { strategy: 'local', scanIntervalMs: 1 },
          { strategy: 'fly', app: 'a' },
        ),
      ),
      topologies: maybe(
        fc.constantFrom<unknown>(
          { t: { strategy: 'static', config: { hosts: ['127.0.0.1:1'] } } },
          { t: { strategy: 'static', config: { hosts: ['nope'] } } },
          { t: { strategy: 'consul' } },
          { t: { strategy: 'static', confg: {} } },
        ),
      ),
      tls: maybe(fc.constantFrom<unknown>({ key: 'garbage', cert: 'garbage' }, { key: 'k' })),
      pubsub: maybe(
        fc.constantFrom<unknown>(
          { adapter: 'mesh' },
          { adapter: 'redis', redis: { url: 'redis://127.0.0.1:1' } },
          { redis: { url: 'redis://127.0.0.1:1' } },
          { adapter: 'redis', redis: { url: 'http://x' } },
          { adapter: 'kafka' },
        ),
      ),
      bogus: maybe(fc.constant(1)),
    },
    { requiredKeys: [] },
  )
  .map((o) => Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as FoundationOptions);

/** FOUNDATION_* environments, valid and not. */
export const envArb: fc.Arbitrary<Record<string, string>> = fc
  .record(
    {
      FOUNDATION_PORT: maybe(fc.constantFrom('4369', 'x', '70000')),
      FOUNDATION_HTTP: maybe(fc.constantFrom('9100', '0.0.0.0:9100', 'nope')),
      FOUNDATION_CLUSTER: maybe(fc.constantFrom('true', 'mortal', 'false', 'dns', 'static', 'kubernets', 'local')),
      FOUNDATION_STATIC: maybe(fc.constantFrom('127.0.0.1:1', 'bad')),
      FOUNDATION_DNS_QUERY: maybe(fc.constant('q.internal')),
      FOUNDATION_SECRET: maybe(fc.constant(SECRET)),
      FOUNDATION_INSECURE: maybe(fc.constantFrom('yes', 'maybe')),
      FOUNDATION_SECRT: maybe(fc.constant('typo')),
      NODE_ENV: maybe(fc.constant('production')),
    },
    { requiredKeys: [] },
  )
  .map((e) => Object.fromEntries(Object.entries(e).filter(([, v]) => v !== undefined)) as Record<string, string>);

/** Where the development cookie is, when a case has no secret: an existing one, an empty file, or none yet. */
export const cookieArb = fc.constantFrom('valid', 'empty', 'missing');

/** A cookie file path in `dir` for case `run`: written with a secret, written empty, or not written. */
export function cookieFor(dir: string, kind: string, run: number): string {
  const file = join(dir, `cookie-${kind}-${run}`);
  if (kind === 'valid') writeFileSync(file, `${SECRET}\n`, { mode: 0o600 });
  if (kind === 'empty') writeFileSync(file, '');
  return file;
}
