import { EventEmitter } from 'node:events';
import { Agent, request } from 'node:http';
import { connect } from 'node:net';
import { Counter, Registry } from 'prom-client';
import { afterEach, describe, expect, it } from 'vitest';
import type { ClusterEvents, ClusterView, LocalHealth } from '../../src/api.js';
import type { Member, NodeIdentity } from '../../src/mesh/types.js';
import {
  type AdminNode,
  type AdminServer,
  CONNECTIONS_CHECK_INTERVAL_MS,
  HEADERS_TIMEOUT_MS,
  HOST_HINT,
  hostHeaderName,
  makeHostCheck,
  startAdminServer,
} from '../../src/surfaces/http.js';

const self: NodeIdentity = { name: 'node-a', address: '127.0.0.1:4001', incarnation: 1_723_456_789_012_345 };
const members: Member[] = [
  { name: 'node-b', address: '127.0.0.1:4002', incarnation: 2, status: 'up', rttMs: 1.25, loopLagMs: 3, hidden: false, since: 100 },
  { name: 'node-c', address: '127.0.0.1:4003', incarnation: 3, status: 'down', rttMs: null, loopLagMs: 0, hidden: false, since: 200 },
];

interface FakeState {
  ready: boolean;
  health: () => LocalHealth;
}

function fakeNode(state: FakeState): AdminNode {
  const cluster = Object.assign(new EventEmitter<ClusterEvents>(), {
    self,
    members: (opts?: { includeDown?: boolean }) => (opts?.includeDown ? members : members.filter((m) => m.status !== 'down')),
    member: (name: string) => members.find((m) => m.name === name),
    isReady: () => state.ready,
  }) satisfies ClusterView;
  const metrics = new Registry();
  const c = new Counter({ name: 'foundation_test_total', help: 'test counter', registers: [metrics] });
  c.inc(3);
  return { id: self, cluster, metrics, health: () => state.health() };
}

interface Res {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

function call(address: string, path: string, method = 'GET', agent?: Agent, headers: Record<string, string> = {}): Promise<Res> {
  const [host, port] = address.split(':');
  return new Promise((resolve, reject) => {
    const req = request({ host, port: Number(port), path, method, agent: agent ?? false, headers }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        body += chunk;
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

const okHealth = (): LocalHealth => ({ status: 'ok', loopLag: { p50Ms: 1, p99Ms: 2, maxMs: 3 } });

describe('admin HTTP server', () => {
  let server: AdminServer | undefined;
  const logged: { obj: object; msg?: string }[] = [];
  const warned: { obj: object; msg?: string }[] = [];
  const logger = {
    error: (obj: object, msg?: string) => logged.push({ obj, msg }),
    warn: (obj: object, msg?: string) => warned.push({ obj, msg }),
    debug: () => {},
  };

  afterEach(async () => {
    await server?.close();
    server = undefined;
    logged.length = 0;
    warned.length = 0;
  });

  async function start(state: FakeState, allowedHosts?: string[]) {
    server = await startAdminServer(fakeNode(state), { host: '127.0.0.1', port: 0, logger, ...(allowedHosts ? { allowedHosts } : {}) });
    return server.address;
  }

  it('listens on an ephemeral port and reports the actual address', async () => {
    const address = await start({ ready: true, health: okHealth });
    expect(address).toMatch(/^127\.0\.0\.1:\d+$/);
    expect(address).not.toBe('127.0.0.1:0');
  });

  it('GET /health: 200 ok, and still 200 when degraded', async () => {
    const state: FakeState = { ready: true, health: okHealth };
    const address = await start(state);
    const ok = await call(address, '/health');
    expect(ok.status).toBe(200);
    expect(ok.headers['content-type']).toMatch(/^application\/json/);
    expect(JSON.parse(ok.body)).toEqual({ status: 'ok', name: 'node-a', loopLag: { p50Ms: 1, p99Ms: 2, maxMs: 3 } });

    state.health = () => ({ status: 'degraded', loopLag: { p50Ms: 50, p99Ms: 900, maxMs: 1200 } });
    const degraded = await call(address, '/health?verbose=1');
    expect(degraded.status).toBe(200);
    expect(JSON.parse(degraded.body)).toMatchObject({ status: 'degraded', loopLag: { p99Ms: 900 } });
  });

  it('GET /ready: 200 when ready, 503 when not', async () => {
    const state: FakeState = { ready: false, health: okHealth };
    const address = await start(state);
    const notReady = await call(address, '/ready');
    expect(notReady.status).toBe(503);
    expect(JSON.parse(notReady.body)).toEqual({ ready: false });
    state.ready = true;
    const ready = await call(address, '/ready');
    expect(ready.status).toBe(200);
    expect(JSON.parse(ready.body)).toEqual({ ready: true });
  });

  it('GET /metrics: Prometheus text with the registry content type', async () => {
    const address = await start({ ready: true, health: okHealth });
    const res = await call(address, '/metrics');
    expect(res.status).toBe(200);
    expect(res.headers['content-type']).toBe(new Registry().contentType);
    expect(res.body).toContain('# TYPE foundation_test_total counter');
    expect(res.body).toMatch(/^foundation_test_total 3$/m);
  });

  it('GET /cluster: self and members, down ones included', async () => {
    const address = await start({ ready: true, health: okHealth });
    const res = await call(address, '/cluster');
    expect(res.status).toBe(200);
    expect(JSON.parse(res.body)).toEqual({
      self: { name: 'node-a', address: '127.0.0.1:4001', incarnation: 1_723_456_789_012_345 },
      members: [
        { name: 'node-b', address: '127.0.0.1:4002', incarnation: 2, status: 'up', rttMs: 1.25, loopLagMs: 3, since: 100 },
        { name: 'node-c', address: '127.0.0.1:4003', incarnation: 3, status: 'down', rttMs: null, loopLagMs: 0, since: 200 },
      ],
    });
  });

  it('unknown path: 404 JSON', async () => {
    const address = await start({ ready: true, health: okHealth });
    for (const path of ['/', '/nope', '/health/extra', '/__proto__', '/constructor']) {
      const res = await call(address, path);
      expect(res.status, path).toBe(404);
      expect(JSON.parse(res.body)).toMatchObject({ error: 'not found' });
    }
  });

  it('non-GET on a route: 405 with Allow', async () => {
    const address = await start({ ready: true, health: okHealth });
    for (const method of ['POST', 'PUT', 'DELETE']) {
      const res = await call(address, '/health', method);
      expect(res.status, method).toBe(405);
      expect(res.headers.allow).toBe('GET, HEAD');
      expect(JSON.parse(res.body)).toMatchObject({ error: 'method not allowed' });
    }
  });

  it('HEAD: headers only', async () => {
    const address = await start({ ready: false, health: okHealth });
    const res = await call(address, '/ready', 'HEAD');
    expect(res.status).toBe(503);
    expect(res.body).toBe('');
  });

  it('a failing handler answers 500 JSON, logs, and the server keeps serving', async () => {
    const state: FakeState = {
      ready: true,
      health: () => {
        throw new Error('boom');
      },
    };
    const address = await start(state);
    const res = await call(address, '/health');
    expect(res.status).toBe(500);
    expect(JSON.parse(res.body)).toMatchObject({ error: 'internal error', message: 'boom' });
    expect(logged).toHaveLength(1);
    expect(logged[0]?.msg).toMatch(/handler failed/);
    expect((await call(address, '/ready')).status).toBe(200);
  });

  it('serves several requests on one keep-alive connection, and close() ends idle connections', async () => {
    const address = await start({ ready: true, health: okHealth });
    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    const sockets = new Set<unknown>();
    agent.on('free', (socket) => sockets.add(socket));
    try {
      for (let i = 0; i < 3; i++) expect((await call(address, '/ready', 'GET', agent)).status).toBe(200);
      expect(sockets.size).toBe(1);
      const started = Date.now();
      await server?.close();
      // Without closing idle sockets, close() would wait for the 5 s keep-alive timeout.
      expect(Date.now() - started).toBeLessThan(1000);
      await expect(call(address, '/ready')).rejects.toThrow(/ECONNREFUSED/);
      // Idempotent.
      await server?.close();
    } finally {
      agent.destroy();
    }
  });

  it('rejects with the listen error code when the port is taken', async () => {
    const address = await start({ ready: true, health: okHealth });
    const port = Number(address.split(':')[1]);
    await expect(startAdminServer(fakeNode({ ready: true, health: okHealth }), { host: '127.0.0.1', port })).rejects.toMatchObject({ code: 'EADDRINUSE' });
  });

  it('answers only requests whose Host names this server (DNS rebinding): IP literals, localhost, the bound host, allowedHosts', async () => {
    const address = await start({ ready: true, health: okHealth }, ['metrics.internal', '*.pods.local']);
    const port = address.split(':')[1];
    for (const host of [`127.0.0.1:${port}`, `localhost:${port}`, 'LOCALHOST.', '[::1]:9100', '10.1.2.3:80', `metrics.internal:${port}`, 'a.pods.local']) {
      expect((await call(address, '/cluster', 'GET', undefined, { host })).status, host).toBe(200);
    }
    const refused = [
      'rebind.attacker.example',
      `rebind.attacker.example:${port}`,
      'x.metrics.internal',
      'pods.local',
      'localhost.attacker.example',
      'a@127.0.0.1',
      '127.0.0.1.nip.io',
    ];
    for (const host of refused) {
      const res = await call(address, '/cluster', 'GET', undefined, { host });
      expect(res.status, host).toBe(403);
      expect(JSON.parse(res.body)).toEqual({ error: 'host not allowed', host, hint: HOST_HINT });
      // The exact body: neither the cluster nor the configured names reach what may be a rebinding page.
      expect(res.body).not.toContain('node-b');
    }
    // A remote party chooses the Host header: one log line per 10 s, the rest counted.
    expect(warned).toHaveLength(1);
    expect(warned[0]?.obj).toMatchObject({ host: refused[0], suppressedSinceLast: 0 });
    expect(warned[0]?.msg).toMatch(/Host header/);
  });

  it('Host check: parsing and matching', () => {
    expect(hostHeaderName('Example.COM.:8080')).toBe('example.com');
    expect(hostHeaderName('[::1]:80')).toBe('::1');
    for (const bad of ['', 'a b', 'user@host', 'host/path', 'host?x', 'host#f', '[::1', 'x'.repeat(301)]) expect(hostHeaderName(bad), bad).toBeUndefined();
    const onAll = makeHostCheck('0.0.0.0');
    expect(onAll(undefined)).toBe(true);
    expect(onAll('192.168.1.9:9100')).toBe(true);
    expect(onAll('[fe80::1]')).toBe(true);
    expect(onAll('my-host:9100')).toBe(false);
    const named = makeHostCheck('My-Host', ['*.svc.cluster.local']);
    expect(named('my-host:9100')).toBe(true);
    expect(named('foundation.default.svc.cluster.local:9100')).toBe(true);
    expect(named('svc.cluster.local')).toBe(false);
    expect(named('evil-svc.cluster.local')).toBe(false);
  });

  it(`closes a connection whose headers do not arrive within ${HEADERS_TIMEOUT_MS / 1000} s (a real slow client on 127.0.0.1)`, async () => {
    const address = await start({ ready: true, health: okHealth });
    const [host, port] = address.split(':');
    /** Opens a connection, lets `behave` write to it, resolves with the ms until the server closed it and what it sent. */
    const slowClient = (behave: (write: (s: string) => void) => () => void) =>
      new Promise<{ ms: number; got: string }>((resolve, reject) => {
        const started = Date.now();
        const socket = connect({ host, port: Number(port) });
        let got = '';
        let stop = () => {};
        socket.setEncoding('utf8');
        socket.on('data', (d: string) => {
          got += d;
        });
        socket.on('connect', () => {
          stop = behave((s) => socket.write(s));
        });
        socket.on('error', () => {});
        socket.on('close', () => {
          stop();
          resolve({ ms: Date.now() - started, got });
        });
        setTimeout(() => {
          stop();
          socket.destroy();
          reject(new Error('the server kept a slow-header connection open for 20 s'));
        }, 20_000).unref();
      });
    const [trickling, silent] = await Promise.all([
      // Slowloris: a request line, then one header byte every 500 ms, never the blank line.
      slowClient((write) => {
        write('GET /cluster HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ');
        const t = setInterval(() => write('a'), 500);
        return () => clearInterval(t);
      }),
      // Connects and sends nothing.
      slowClient(() => () => {}),
    ]);
    for (const [what, r] of [
      ['trickling', trickling],
      ['silent', silent],
    ] as const) {
      expect(r.ms, what).toBeGreaterThanOrEqual(HEADERS_TIMEOUT_MS - 50);
      // The sweep runs every CONNECTIONS_CHECK_INTERVAL_MS; the rest is slack for a loaded machine.
      expect(r.ms, what).toBeLessThan(HEADERS_TIMEOUT_MS + CONNECTIONS_CHECK_INTERVAL_MS + 1_500);
    }
    expect(trickling.got).toMatch(/^HTTP\/1\.1 408 /);
    expect(trickling.got).not.toContain('node-b');
  }, 30_000);
});
