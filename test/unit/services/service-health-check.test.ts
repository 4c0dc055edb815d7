/**
 * Health checks of node.services: option validation, what a function check and an HTTP check
 * (a real HTTP server on 127.0.0.1) report, timeouts, and the runner's interval.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError } from '../../../src/errors.js';
import { CHECK_DEFAULTS, type CheckOutcome, HealthCheckRunner, resolveCheck, runCheck } from '../../../src/services/service-mesh/health-check.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function keyOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (err) {
    if (err instanceof ConfigError) return err.key;
    throw err;
  }
  return undefined;
}

describe('health check options', () => {
  it('takes a function, a URL, or { run, intervalMs, timeoutMs }, with the documented defaults', () => {
    const fn = () => 'passing' as const;
    expect(resolveCheck(fn)).toEqual({ run: fn, intervalMs: CHECK_DEFAULTS.intervalMs, timeoutMs: CHECK_DEFAULTS.timeoutMs });
    expect(CHECK_DEFAULTS).toEqual({ intervalMs: 5000, timeoutMs: 2000 });
    expect(resolveCheck('http://127.0.0.1:1/health').run).toBeInstanceOf(URL);
    expect(resolveCheck({ run: fn, intervalMs: 100 })).toMatchObject({ intervalMs: 100, timeoutMs: 100 });
    expect(resolveCheck({ run: fn, intervalMs: 500, timeoutMs: 50 })).toMatchObject({ intervalMs: 500, timeoutMs: 50 });
  });

  it('refuses bad values with a ConfigError naming the key', () => {
    const fn = () => undefined;
    expect(keyOf(() => resolveCheck('not a url'))).toBe('check.run');
    expect(keyOf(() => resolveCheck('ftp://127.0.0.1/x'))).toBe('check.run');
    expect(keyOf(() => resolveCheck({ run: 42 as never }))).toBe('check.run');
    expect(keyOf(() => resolveCheck({ run: fn, intervalMs: 5 }))).toBe('check.intervalMs');
    expect(keyOf(() => resolveCheck({ run: fn, intervalMs: 100, timeoutMs: 200 }))).toBe('check.timeoutMs');
    expect(keyOf(() => resolveCheck({ run: fn, timeoutMs: 0 }))).toBe('check.timeoutMs');
  });
});

describe('a function check', () => {
  const run = (f: Parameters<typeof resolveCheck>[0] & object, timeoutMs = 200) => runCheck(resolveCheck({ run: f as never, intervalMs: 1000, timeoutMs }));

  it('returning nothing is passing; a state or { status, output } is that state', async () => {
    expect(await run(() => undefined)).toMatchObject({ status: 'passing', output: null });
    expect(await run(() => 'warning')).toMatchObject({ status: 'warning', output: null });
    expect(await run(async () => ({ status: 'critical', output: 'disk full' }))).toMatchObject({ status: 'critical', output: 'disk full' });
  });

  it('throwing, rejecting or returning something else is critical, with the reason as output', async () => {
    expect(
      await run(() => {
        throw new Error('db down');
      }),
    ).toMatchObject({ status: 'critical', output: 'db down' });
    expect(await run(() => Promise.reject(new Error('no pool')))).toMatchObject({ status: 'critical', output: 'no pool' });
    expect(await run(() => 'fine' as never)).toMatchObject({ status: 'critical', output: expect.stringContaining('not a health state') });
    const long = await run(() => ({ status: 'warning', output: 'x'.repeat(1000) }));
    expect(long.output?.length).toBe(256);
  });

  it('not settling within timeoutMs is critical, and the check’s signal aborts', async () => {
    let signal: AbortSignal | undefined;
    const t0 = Date.now();
    const r = await run((s: AbortSignal) => {
      signal = s;
      return new Promise(() => {});
    }, 100);
    expect(r).toMatchObject({ status: 'critical', output: 'timed out after 100 ms' });
    expect(Date.now() - t0).toBeGreaterThanOrEqual(95);
    expect(signal?.aborted).toBe(true);
  });
});

describe('an HTTP check (GET on 127.0.0.1)', () => {
  let server: Server;
  let base = '';
  beforeAll(async () => {
    server = createServer((req, res) => {
      const status = Number(req.url?.slice(1));
      if (req.url === '/slow') return void setTimeout(() => res.end('late'), 1000);
      if (status >= 300 && status < 400) res.setHeader('location', '/200');
      res.writeHead(status || 404);
      res.end('body');
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(async () => {
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
  });

  const http = (path: string, timeoutMs = 500) => runCheck(resolveCheck({ run: `${base}${path}`, intervalMs: 1000, timeoutMs }));

  it('2xx is passing, 429 warning, anything else critical (redirects are not followed)', async () => {
    expect(await http('/200')).toMatchObject({ status: 'passing', output: 'HTTP 200' });
    expect(await http('/204')).toMatchObject({ status: 'passing', output: 'HTTP 204' });
    expect(await http('/429')).toMatchObject({ status: 'warning', output: 'HTTP 429' });
    expect(await http('/503')).toMatchObject({ status: 'critical', output: 'HTTP 503' });
    expect(await http('/500')).toMatchObject({ status: 'critical', output: 'HTTP 500' });
    expect(await http('/302')).toMatchObject({ status: 'critical', output: 'HTTP 302' });
  });

  it('a refused connection or a slow answer is critical', async () => {
    const closed = createServer();
    await new Promise<void>((r) => closed.listen(0, '127.0.0.1', r));
    const port = (closed.address() as AddressInfo).port;
    await new Promise((r) => closed.close(r));
    expect((await runCheck(resolveCheck({ run: `http://127.0.0.1:${port}/`, intervalMs: 1000, timeoutMs: 500 }))).status).toBe('critical');
    expect(await http('/slow', 100)).toMatchObject({ status: 'critical', output: 'timed out after 100 ms' });
  });
});

describe('the check runner', () => {
  it('runs the first check at start, then on its interval; reports each outcome; stop ends it', async () => {
    let state: 'passing' | 'critical' = 'passing';
    let runs = 0;
    const outcomes: CheckOutcome[] = [];
    const runner = new HealthCheckRunner(
      resolveCheck({
        run: () => {
          runs++;
          return state;
        },
        intervalMs: 50,
        timeoutMs: 50,
      }),
      (o) => outcomes.push(o),
    );
    const first = await runner.start();
    expect(first.status).toBe('passing');
    expect(runs).toBe(1);
    await sleep(600);
    // 50 ms apart: at least 3 more runs in 600 ms even on a loaded machine, and never more than one per interval.
    expect(outcomes.length).toBeGreaterThanOrEqual(3);
    expect(outcomes.length).toBeLessThanOrEqual(13);
    state = 'critical';
    const flipAt = Date.now();
    while (outcomes.at(-1)?.status !== 'critical') {
      if (Date.now() - flipAt > 2000) throw new Error('the flip was never seen');
      await sleep(5);
    }
    expect(runner.last?.status).toBe('critical');
    runner.stop();
    const after = runs;
    await sleep(200);
    expect(runs).toBe(after);
  });

  it('a run that outlasts its timeout: the runner waits for each outcome, so only the timed-out function may still be finishing when the next starts', async () => {
    let inFlight = 0;
    let maxInFlight = 0;
    let runs = 0;
    const runner = new HealthCheckRunner(
      resolveCheck({
        run: async () => {
          runs++;
          inFlight++;
          maxInFlight = Math.max(maxInFlight, inFlight);
          await sleep(30);
          inFlight--;
        },
        intervalMs: 20,
        timeoutMs: 20,
      }),
      () => {},
    );
    await runner.start();
    await sleep(300);
    runner.stop();
    expect(runs).toBeGreaterThan(2);
    // A timed-out run's function may still be finishing when the next starts (it got its abort
    // signal); the runner itself waits for each run's outcome, so at most that one overlaps.
    expect(maxInFlight).toBeLessThanOrEqual(2);
  });
});
