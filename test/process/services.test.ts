/**
 * node.services across real processes: three nodes, each its own OS process
 * (test/helpers/layer-proc.mjs running the built dist/), linked over loopback by the real mesh.
 * Discovery with health flips (a toggled function check and an HTTP check served by this test
 * on 127.0.0.1), instances of a kill -9'd node, services.call retrying onto a healthy instance
 * when the one it picked is killed or frozen, application errors not retried, /services and
 * `foundation services`.
 */
import { spawn } from 'node:child_process';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { NodeProc } from '../helpers/cluster.js';
import { ask, LayerCluster } from '../helpers/layer-cluster.js';
import { requireBuild } from '../helpers/requires.js';

const PROC = fileURLToPath(new URL('../helpers/layer-proc.mjs', import.meta.url));
const CLI = resolve(fileURLToPath(new URL('../..', import.meta.url)), 'dist/surfaces/cli.js');
const skip = requireBuild('services multi-process tests');
const SECRET = 'services-process-test-secret-0123456789';
/** The check interval of the health-flip test; a flip must be seen elsewhere within it (plus the margin). */
const INTERVAL_MS = 1000;
/** What a loaded 2-core machine may add to one interval: scheduling, one mesh hop, the test's polling. */
const MARGIN_MS = 1500;
const layer = new LayerCluster({ script: PROC, secret: SECRET, prefix: 'services-proc' });

afterEach(() => layer.killAll());

/** Nodes s1..sn of a fresh cluster (with an admin server on 127.0.0.1 when `http`), every one seeing every other up. */
const cluster = async (n: number, http = false, extra: Record<string, unknown> = {}): Promise<NodeProc[]> =>
  (await layer.start(n, 's', { ...extra, ...(http ? { http: { host: '127.0.0.1', port: 0 } } : {}) })).procs;

interface Rec {
  name: string;
  id: string;
  node: string;
  version: string | null;
  tags: string[];
  meta: Record<string, unknown>;
  endpoint: string | null;
  health: string;
  output: string | null;
  checkedAt: number | null;
  rttMs: number | null;
}

const discover = async (p: NodeProc, query: Record<string, unknown>) => (await ask(p, { cmd: 'svc-discover', query }, 'svc-discover')).records as Rec[];
const ids = (rs: Rec[]) => rs.map((r) => r.id).sort();
const register = (p: NodeProc, opts: Record<string, unknown>) => ask(p, { cmd: 'svc-register', ...opts }, 'svc-registered');
const call = (p: NodeProc, name: string, method: string, args: unknown, opts: Record<string, unknown> = {}) =>
  ask(p, { cmd: 'svc-call', name, method, args, opts }, 'svc-call', 30_000);
const stats = async (p: NodeProc) =>
  (await ask(p, { cmd: 'svc-stats' }, 'svc-stats')).stats as {
    retries: number;
    calls: { ok: number; error: number; noMethod: number; unavailable: number };
    served: number;
    local: number;
  };

/** Polls `p` until `cond` holds of its discover results; resolves with the time (ms since epoch, on `p`) it first did. */
async function until(p: NodeProc, query: Record<string, unknown>, cond: (rs: Rec[]) => boolean, what: string, timeoutMs = 10_000): Promise<number> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const e = await ask(p, { cmd: 'svc-discover', query }, 'svc-discover');
    if (cond(e.records as Rec[])) return e.at;
    if (Date.now() > end) throw new Error(`${p.label}: timed out waiting for ${what}; last: ${JSON.stringify(e.records)}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** The HTTP check target (127.0.0.1 only): answers the status set in `httpStatus`. */
let httpStatus = 200;
let server: Server;
let checkUrl = '';
beforeAll(async () => {
  server = createServer((_req, res) => {
    res.writeHead(httpStatus);
    res.end();
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  checkUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}/health`;
});
afterAll(async () => {
  server.closeAllConnections();
  await new Promise((r) => server.close(r));
});

describe.skipIf(skip !== undefined)('services across processes', () => {
  it('discovers instances on every node as shaped records; a check that goes critical leaves the healthy results within one interval, and comes back', async () => {
    const [a, b, c] = (await cluster(3)) as NodeProc[];
    const check = { intervalMs: INTERVAL_MS, timeoutMs: 500 };
    await register(a as NodeProc, {
      name: 'users',
      id: 'u1',
      version: '1.4.2',
      tags: ['eu', 'primary'],
      meta: { zone: 'a' },
      endpoint: 'http://127.0.0.1:1/u1',
      ...check,
    });
    await register(b as NodeProc, { name: 'users', id: 'u2', version: '2.0.0', tags: ['eu'], ...check });
    await register(c as NodeProc, { name: 'users', id: 'u3', checkUrl, ...check });
    await register(b as NodeProc, { name: 'billing', id: 'b1', noCheck: true });
    for (const p of [a, b, c] as NodeProc[]) await until(p, { name: 'users', healthy: true }, (rs) => rs.length === 3, `3 healthy users on ${p.label}`);

    // Shaped records from local state, with the RTT to each owner (0 for this node).
    const rs = await discover(c as NodeProc, { name: 'users' });
    expect(rs.map((r) => [r.id, r.node, r.health])).toEqual([
      ['u1', 's1', 'passing'],
      ['u2', 's2', 'passing'],
      ['u3', 's3', 'passing'],
    ]);
    expect(rs[0]).toMatchObject({
      name: 'users',
      version: '1.4.2',
      tags: ['eu', 'primary'],
      meta: { zone: 'a' },
      endpoint: 'http://127.0.0.1:1/u1',
      output: null,
    });
    expect(rs[2]).toMatchObject({ version: null, output: 'HTTP 200', rttMs: 0 });
    expect(typeof rs[0]?.checkedAt).toBe('number');
    for (const r of rs.slice(0, 2)) expect(r.rttMs === null || (r.rttMs >= 0 && r.rttMs < 1000)).toBe(true);
    expect(ids(await discover(c as NodeProc, { name: 'users', version: '^1.2' }))).toEqual(['u1']);
    expect(ids(await discover(c as NodeProc, { name: 'users', version: '>=1 <3' }))).toEqual(['u1', 'u2']);
    expect(ids(await discover(c as NodeProc, { name: 'users', tags: ['eu'] }))).toEqual(['u1', 'u2']);
    expect(ids(await discover(c as NodeProc, { name: 'users', tags: ['eu', 'primary'] }))).toEqual(['u1']);
    expect(await discover(a as NodeProc, { name: 'billing' })).toMatchObject([{ id: 'b1', node: 's2', health: 'passing', checkedAt: null }]);
    const explain = (await ask(c as NodeProc, { cmd: 'svc-stats' }, 'svc-stats')).explain as { mechanism: string; entries: Array<{ name: string }> };
    expect(explain.mechanism).toBe("registry.select('service:users:*')");
    expect(explain.entries.map((e) => e.name)).toEqual(['service:users:u1', 'service:users:u2', 'service:users:u3']);

    // A function check goes critical on s1: s3 drops u1 from its healthy results within one interval.
    const flippedAt = (await ask(a as NodeProc, { cmd: 'svc-health', id: 'u1', state: 'critical' }, 'svc-health-set')).at;
    const goneAt = await until(c as NodeProc, { name: 'users', healthy: true }, (r) => ids(r).join() === 'u2,u3', 'u1 out of the healthy results');
    expect(goneAt - flippedAt).toBeLessThanOrEqual(INTERVAL_MS + MARGIN_MS);
    expect(await discover(c as NodeProc, { name: 'users', healthy: false })).toMatchObject([{ id: 'u1', health: 'critical' }]);
    // Back to passing: back in the healthy results within one interval.
    const backFlipAt = (await ask(a as NodeProc, { cmd: 'svc-health', id: 'u1', state: 'passing' }, 'svc-health-set')).at;
    const backAt = await until(c as NodeProc, { name: 'users', healthy: true }, (r) => ids(r).join() === 'u1,u2,u3', 'u1 back');
    expect(backAt - backFlipAt).toBeLessThanOrEqual(INTERVAL_MS + MARGIN_MS);

    // The HTTP check: 503 is critical (seen on s1 within one interval), 429 is warning (still healthy), 200 passing.
    httpStatus = 503;
    const httpFlipAt = Date.now();
    const httpGoneAt = await until(a as NodeProc, { name: 'users', healthy: true }, (r) => !ids(r).includes('u3'), 'u3 critical on s1');
    expect(httpGoneAt - httpFlipAt).toBeLessThanOrEqual(INTERVAL_MS + MARGIN_MS);
    expect((await discover(a as NodeProc, { name: 'users', healthy: false })).find((r) => r.id === 'u3')).toMatchObject({
      health: 'critical',
      output: 'HTTP 503',
    });
    httpStatus = 429;
    await until(a as NodeProc, { name: 'users', healthy: true }, (r) => r.find((x) => x.id === 'u3')?.health === 'warning', 'u3 warning on s1');
    httpStatus = 200;
    await until(b as NodeProc, { name: 'users', healthy: true }, (r) => r.find((x) => x.id === 'u3')?.health === 'passing', 'u3 passing on s2');

    // A warning instance is healthy, but calls prefer passing ones while there are any.
    await ask(b as NodeProc, { cmd: 'svc-health', id: 'u2', state: 'warning' }, 'svc-health-set');
    await until(a as NodeProc, { name: 'users', healthy: true }, (r) => r.find((x) => x.id === 'u2')?.health === 'warning', 'u2 warning on s1');
    for (let i = 0; i < 4; i++) expect(((await call(a as NodeProc, 'users', 'whoami', null)).value as { id: string }).id).not.toBe('u2');
  });

  it("a kill -9'd node's instances disappear from every other node within detection time", async () => {
    const [a, b, c] = (await cluster(3)) as NodeProc[];
    await register(a as NodeProc, { name: 'cache', id: 'c1', noCheck: true });
    await register(b as NodeProc, { name: 'cache', id: 'c2', noCheck: true });
    await register(b as NodeProc, { name: 'cache', id: 'c3', noCheck: true });
    for (const p of [a, c] as NodeProc[]) await until(p, { name: 'cache' }, (rs) => rs.length === 3, `3 caches on ${p.label}`);
    const killedAt = Date.now();
    b?.kill('SIGKILL');
    for (const p of [a, c] as NodeProc[]) {
      const at = await until(p, { name: 'cache' }, (rs) => ids(rs).join() === 'c1', `s2's caches gone on ${p.label}`);
      // Connection-closed detection takes milliseconds; the bound is the heartbeat detector's (about 3 s).
      expect(at - killedAt).toBeLessThan(5000);
    }
  });

  it('services.call retries onto a healthy instance when the one it picked is killed (kill -9 mid-call) or frozen (timeout); handler errors are not retried', async () => {
    // A frozen node must stay a member while its calls time out (about 1.5 s of calls below): the
    // detector tolerates a 10 s pause here, so the timed-out attempts are what the test sees, not a down.
    const [a, b, c] = (await cluster(3, false, { failureDetector: { acceptablePauseMs: 10_000 } })) as NodeProc[];
    // Round-robin in id order: s3's first call to "calc" goes to k1 (on s1), whose handler kills its own process.
    await register(a as NodeProc, { name: 'calc', id: 'k1', noCheck: true, dieOnWork: true });
    await register(b as NodeProc, { name: 'calc', id: 'k2', noCheck: true });
    await until(c as NodeProc, { name: 'calc', healthy: true }, (rs) => rs.length === 2, 'both calc instances on s3');
    const killed = await call(c as NodeProc, 'calc', 'work', null, { timeoutMs: 3000, retries: 2 });
    expect(killed).toMatchObject({ ok: true, value: { node: 's2', id: 'k2' } });
    for (let i = 0; i < 100 && !a?.exited; i++) await new Promise((r) => setTimeout(r, 20));
    expect(a?.exited, 's1 killed itself in the handler').toBe(true);
    expect((await stats(c as NodeProc)).retries).toBe(1);

    // The application's error comes back named, with the remote message, and is not retried.
    await register(c as NodeProc, { name: 'fx', id: 'f1', noCheck: true });
    await register(b as NodeProc, { name: 'fx', id: 'f2', noCheck: true });
    await until(c as NodeProc, { name: 'fx', healthy: true }, (rs) => rs.length === 2, 'both fx instances on s3');
    const before = await stats(c as NodeProc);
    const failed = await call(c as NodeProc, 'fx', 'fail', { why: 'bad input' });
    expect(failed).toMatchObject({
      ok: false,
      name: 'ServiceError',
      code: 'FOUNDATION_SERVICE_CALL_FAILED',
      attempts: [],
      remote: { message: 'boom: bad input', code: 'APP_BOOM', instance: 'f1', node: 's3' },
    });
    expect(failed.message).toContain('boom: bad input');
    const after = await stats(c as NodeProc);
    expect(after.retries).toBe(before.retries);
    expect(after.calls.error).toBe(before.calls.error + 1);
    expect(await call(c as NodeProc, 'fx', 'nope', null)).toMatchObject({ ok: false, code: 'FOUNDATION_SERVICE_NO_METHOD' });

    // A frozen node (SIGSTOP, still a member): the attempt times out and the call goes to the other instance.
    await register(c as NodeProc, { name: 'slowpoke', id: 'p1', noCheck: true });
    await register(b as NodeProc, { name: 'slowpoke', id: 'p2', noCheck: true });
    await until(c as NodeProc, { name: 'slowpoke', healthy: true }, (rs) => rs.length === 2, 'both slowpoke instances on s3');
    b?.kill('SIGSTOP');
    // No instance that answers, and no retries: unavailable, with the attempt that failed.
    const none = await call(c as NodeProc, 'calc', 'work', null, { timeoutMs: 500, retries: 0 });
    expect(none).toMatchObject({
      ok: false,
      code: 'FOUNDATION_SERVICE_UNAVAILABLE',
      attempts: [{ node: 's2', instance: 'k2', code: 'FOUNDATION_REQUEST_TIMEOUT' }],
    });
    // s3's round-robin for "slowpoke" starts at p1 (its own): the second call goes to p2 on the frozen s2, times out, and is retried on p1.
    const retriesBefore = (await stats(c as NodeProc)).retries;
    const first = await call(c as NodeProc, 'slowpoke', 'whoami', null, { timeoutMs: 500, retries: 1 });
    const second = await call(c as NodeProc, 'slowpoke', 'whoami', null, { timeoutMs: 500, retries: 1 });
    expect([first, second]).toMatchObject([
      { ok: true, value: { node: 's3' } },
      { ok: true, value: { node: 's3' } },
    ]);
    expect((await stats(c as NodeProc)).retries).toBe(retriesBefore + 1);
    b?.kill('SIGCONT');
  });

  it('one instance id registered on both sides (nodes that had not met): the earlier keeps it everywhere, the other node withdraws its instance', async () => {
    const clusterName = layer.freshClusterName();
    const { proc: a, address: addrA } = await layer.startNode('s1', clusterName, []);
    const { proc: b, address: addrB } = await layer.startNode('s2', clusterName, []);
    await register(a, { name: 'sched', id: 'dup', noCheck: true });
    await new Promise((r) => setTimeout(r, 20));
    await register(b, { name: 'sched', id: 'dup', noCheck: true });
    // s3 knows both: the transitive join links s1 and s2, and the registry resolves the conflict.
    const { proc: c } = await layer.startNode('s3', clusterName, [addrA, addrB]);
    for (const p of [a, b, c]) await until(p, { name: 'sched' }, (rs) => rs.length === 1 && rs[0]?.node === 's1', `dup on s1 as seen by ${p.label}`);
    await until(b, { name: 'sched' }, (rs) => rs[0]?.node === 's1', 'settled');
    expect((await stats(b)).local).toBe(0);
    expect(await call(c, 'sched', 'whoami', null)).toMatchObject({ ok: true, value: { node: 's1', id: 'dup' } });
  });

  it('GET /services and `foundation services --http` list the instances with their health', async () => {
    const [a, b] = (await cluster(2, true)) as NodeProc[];
    await register(a as NodeProc, { name: 'users', id: 'u1', version: '1.0.0', tags: ['eu'], noCheck: true });
    await register(b as NodeProc, { name: 'users', id: 'u2', intervalMs: 200, timeoutMs: 100 });
    await ask(b as NodeProc, { cmd: 'svc-health', id: 'u2', state: 'critical' }, 'svc-health-set');
    await until(a as NodeProc, { name: 'users', healthy: false }, (rs) => rs.length === 1, 'u2 critical on s1');
    const http = (await ask(a as NodeProc, { cmd: 'svc-http' }, 'svc-http')).address as string;
    const res = await fetch(`http://${http}/services`);
    expect(res.status).toBe(200);
    const body = (await res.json()) as { node: string; instances: Rec[] };
    expect(body.node).toBe('s1');
    expect(body.instances.map((r) => [r.name, r.id, r.node, r.health])).toEqual([
      ['users', 'u1', 's1', 'passing'],
      ['users', 'u2', 's2', 'critical'],
    ]);
    const cli = await new Promise<{ code: number | null; stdout: string; stderr: string }>((done) => {
      const child = spawn(process.execPath, [CLI, 'services', '--http', http, '--name', 'users'], { stdio: ['ignore', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (d) => {
        stdout += d;
      });
      child.stderr.on('data', (d) => {
        stderr += d;
      });
      child.on('exit', (code) => done({ code, stdout, stderr }));
    });
    expect(cli.stderr).toBe('');
    expect(cli.code).toBe(0);
    expect(cli.stdout).toContain('node s1 sees 2 instance(s) of 1 service(s) named users: 1 passing, 0 warning, 1 critical');
    expect(cli.stdout).toMatch(/users\s+u1\s+s1\s+1\.0\.0\s+passing/);
    expect(cli.stdout).toMatch(/users\s+u2\s+s2\s+-\s+critical/);
  });
});
