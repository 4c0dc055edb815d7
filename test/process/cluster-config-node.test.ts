/**
 * node.config on two real nodes in this process (the built dist/, linked over loopback): local reads,
 * overrides and watches, validators, argument checks, anti-entropy repairing a node that missed a
 * commit (counted, logged), and /config on the admin server (GET redacted, POST cluster-wide with
 * the guard on its content type, 409 with the votes on a veto, 405 with Allow).
 */
import { request } from 'node:http';
import { afterEach, describe, expect, it } from 'vitest';
import type { FoundationNode } from '../../src/api.js';
import type { Logger } from '../../src/util/logger.js';
import { requireBuild } from '../helpers/requires.js';

const skip = requireBuild('node.config on real nodes');
const DIST = '../../dist/index.js';
type Lib = typeof import('../../src/index.js');
const lib = async (): Promise<Lib> => (await import(DIST)) as Lib;

const SECRET = 'cluster-config-unit-secret-0123456789';
let nodes: FoundationNode[] = [];
let run = 0;

afterEach(async () => {
  await Promise.all(nodes.map((n) => n.stop()));
  nodes = [];
});

function recordingLogger(lines: Array<{ msg: string; obj: object }>): Logger {
  const l: Logger = { debug() {}, info() {}, warn: (obj, msg) => lines.push({ obj, msg: msg ?? '' }), error() {}, child: () => l };
  return l;
}

async function pair(logA: Logger = recordingLogger([]), logB: Logger = recordingLogger([])): Promise<[FoundationNode, FoundationNode]> {
  const clusterName = `config-unit-${process.pid}-${++run}`;
  const { Foundation } = await lib();
  const a = await Foundation.start({ name: 'a', clusterName, secret: SECRET, host: '127.0.0.1', logger: logA, http: { host: '127.0.0.1', port: 0 } });
  nodes.push(a);
  const b = await Foundation.start({
    name: 'b',
    clusterName,
    secret: SECRET,
    host: '127.0.0.1',
    logger: logB,
    cluster: { strategy: 'static', hosts: [a.id.address] },
  });
  nodes.push(b);
  const end = Date.now() + 10_000;
  while (!(a.cluster.members().length === 1 && b.cluster.members().length === 1 && a.cluster.isReady() && b.cluster.isReady())) {
    if (Date.now() > end) throw new Error('no pair');
    await new Promise((r) => setTimeout(r, 20));
  }
  return [a, b];
}

interface HttpReply {
  status: number;
  headers: Record<string, unknown>;
  // biome-ignore lint/suspicious/noExplicitAny: JSON bodies of several shapes, checked by the assertions
  json: any;
}

function http(address: string, method: string, path: string, body?: string, contentType = 'application/json'): Promise<HttpReply> {
  const [host, port] = address.split(':');
  return new Promise((resolve, reject) => {
    const req = request({ host, port: Number(port), path, method, agent: false, headers: body === undefined ? {} : { 'content-type': contentType } }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => {
        text += c;
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, json: text ? JSON.parse(text) : undefined }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

describe.skipIf(skip !== undefined)('node.config on two nodes in one process', () => {
  it('local overrides, watches and validators; cluster-wide sets reach the other node with the version and history', async () => {
    const [a, b] = await pair();
    const seen: unknown[] = [];
    b.config.watch('db', (v, e) => seen.push([v, e.source, e.version]));
    const r = await a.config.setClusterWide('db.pool.size', 20);
    expect(r).toMatchObject({ version: 1, acked: ['b'], attempts: 1 });
    expect(b.config.get('db.pool.size')).toBe(20);
    expect(b.config.history()).toMatchObject([{ version: 1, coordinator: 'a', tx: r.tx, writes: [{ path: 'db.pool.size', value: 20 }] }]);
    b.config.set('db.pool.size', 2);
    expect(b.config.get('db.pool.size')).toBe(2);
    expect(a.config.get('db.pool.size')).toBe(20);
    expect(seen).toEqual([
      [{ pool: { size: 20 } }, 'commit', 1],
      [{ pool: { size: 2 } }, 'local', 1],
    ]);
    // A validator that resolves accepts; one that rejects vetoes; removed, it no longer runs.
    const off = b.config.validate('db', async (_p, v) => {
      if (typeof v === 'number' && v > 64) throw new Error('at most 64');
    });
    await a.config.setClusterWide('db.pool.size', 64);
    const { ClusterConfigError } = await lib();
    const err = await a.config.setClusterWide('db.pool.size', 65).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ClusterConfigError);
    expect((err as InstanceType<typeof ClusterConfigError>).votes).toContainEqual({ node: 'b', vote: 'no', code: 'veto', reason: 'node b: at most 64' });
    expect(b.config.version()).toBe(2);
    off();
    await a.config.setClusterWide('db.pool.size', 65);
    expect(b.config.stats()).toMatchObject({ version: 3, committed: 3, aborted: 1, vetoes: 1, synced: true });
    // Values come back as copies.
    const got = a.config.get<{ size: number }>('db.pool') as { size: number };
    got.size = 1;
    expect(a.config.get('db.pool.size')).toBe(65);
  });

  it('concurrent cluster-wide sets from both nodes on the same path are serialized: both commit, one version each, the same value everywhere', async () => {
    const [a, b] = await pair();
    const results = await Promise.all([
      ...Array.from({ length: 5 }, (_, i) => a.config.setClusterWide('shared.v', `a${i}`, { timeoutMs: 15_000 })),
      ...Array.from({ length: 5 }, (_, i) => b.config.setClusterWide('shared.v', `b${i}`, { timeoutMs: 15_000 })),
    ]);
    expect(results.map((r) => r.version).sort((x, y) => x - y)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    expect(results.some((r) => r.attempts > 1)).toBe(true);
    const last = results.find((r) => r.version === 10);
    expect(a.config.version()).toBe(10);
    expect(b.config.version()).toBe(10);
    expect(a.config.get('shared.v')).toBe(b.config.get('shared.v'));
    expect(a.config.history().map((c) => c.tx)).toEqual(b.config.history().map((c) => c.tx));
    expect(a.config.history().at(-1)?.tx).toBe(last?.tx);
  });

  it('refuses bad arguments with ConfigError naming the key', async () => {
    const [a] = await pair();
    const { ConfigError } = await lib();
    expect(() => a.config.get('a..b')).toThrow(ConfigError);
    expect(() => a.config.set('x', () => 1)).toThrow(/not serializable/i);
    await expect(a.config.setClusterWide('x', 1, { timeoutMs: 0 })).rejects.toThrow(/"timeoutMs"/);
    expect(() => a.config.validate('x', 5 as never)).toThrow(/"validator"/);
    expect(() => a.config.forceResolve('nope', 'maybe' as never)).toThrow(/"outcome"/);
    expect(a.config.forceResolve('nope', 'abort')).toBe(false);
  });

  it('anti-entropy: a node that missed a commit is found behind by the digest, counted, logged and repaired', async () => {
    const logB: Array<{ msg: string; obj: object }> = [];
    const [a, b] = await pair(recordingLogger([]), recordingLogger(logB));
    await a.config.setClusterWide('k', 1);
    // A commit b never saw (as if it had been down past the grace): straight into a's store.
    (a.config as unknown as { store: { applyCommit(...args: unknown[]): void } }).store.applyCommit('a:0:99', [{ path: 'k', value: 2 }], 2, 'a', Date.now());
    const end = Date.now() + 8000;
    while (b.config.get('k') !== 2) {
      if (Date.now() > end) throw new Error(`not repaired: ${JSON.stringify(b.config.stats())}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    expect(b.config.version()).toBe(2);
    expect(b.config.stats()).toMatchObject({ divergences: { behind: 1, conflict: 0 }, repairs: 1 });
    expect(logB.some((l) => l.msg.includes('cluster config behind a peer'))).toBe(true);
    expect(await b.metrics.metrics()).toContain('foundation_config_divergence_total{kind="behind"} 1');
  });

  it('/config: GET redacted, one path, POST cluster-wide (JSON only), 409 with the votes on a veto, 405 with Allow', async () => {
    const [a, b] = await pair();
    const addr = a.httpAddress as string;
    const ok = await http(addr, 'POST', '/config', JSON.stringify({ path: 'db.password', value: 'hunter2' }));
    expect(ok.status).toBe(200);
    expect(ok.json).toMatchObject({ committed: true, version: 1 });
    expect(b.config.get('db.password')).toBe('hunter2');
    await http(addr, 'POST', '/config', JSON.stringify({ path: 'db.pool', value: { size: 5, authToken: 't' } }));
    const all = await http(addr, 'GET', '/config');
    expect(all.status).toBe(200);
    expect(all.json).toMatchObject({
      node: 'a',
      version: 2,
      synced: true,
      inDoubt: [],
      values: { 'db.password': '[redacted]', 'db.pool': { size: 5, authToken: '[redacted]' } },
    });
    expect(JSON.stringify(all.json)).not.toContain('hunter2');
    expect(all.json.history[0].writes[0].value).toBe('[redacted]');
    expect((await http(addr, 'GET', '/config?path=db.pool.size')).json).toMatchObject({ path: 'db.pool.size', value: 5, version: 2 });
    expect((await http(addr, 'GET', '/config?path=a..b')).status).toBe(400);
    // A form post (no JSON content type) is refused before anything runs.
    expect((await http(addr, 'POST', '/config', 'path=x&value=1', 'application/x-www-form-urlencoded')).status).toBe(415);
    expect(a.config.version()).toBe(2);
    expect((await http(addr, 'POST', '/config', '{nope')).status).toBe(400);
    b.config.validate('db', () => {
      throw new Error('frozen');
    });
    const vetoed = await http(addr, 'POST', '/config', JSON.stringify({ path: 'db.pool.size', value: 6 }));
    expect(vetoed.status).toBe(409);
    expect(vetoed.json).toMatchObject({ committed: false, code: 'FOUNDATION_CONFIG_ABORTED' });
    expect(vetoed.json.votes).toContainEqual({ node: 'b', vote: 'no', code: 'veto', reason: 'node b: frozen' });
    const put = await http(addr, 'PUT', '/config', '{}');
    expect(put.status).toBe(405);
    expect(put.headers.allow).toBe('GET, HEAD, POST');
    expect((await http(addr, 'POST', '/cluster', '{}')).status).toBe(405);
  });
});
