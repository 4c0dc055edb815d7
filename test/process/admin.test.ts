/** The admin surface of a real node: /metrics passes promtool, /cluster has the documented shape. */
import { execFileSync } from 'node:child_process';
import { request } from 'node:http';
import { afterAll, describe, expect, it } from 'vitest';
import { Foundation, type FoundationNode } from '../../dist/index.js';
import { findTool, requireTools } from '../helpers/requires.js';

const silent = { debug() {}, info() {}, warn() {}, error() {}, child: () => silent };

describe('admin surface of a live node', () => {
  const nodes: FoundationNode[] = [];
  afterAll(() => Promise.all(nodes.map((n) => n.stop())));
  /** The two /metrics texts of the first test, for the promtool check. */
  const scraped: string[] = [];

  it('serves /cluster and Prometheus metrics, including discovery counters', async () => {
    const a = await Foundation.start({ name: 'adm-a', secret: 's', http: { port: 0 }, logger: silent });
    nodes.push(a);
    const b = await Foundation.start({ name: 'adm-b', secret: 's', cluster: { strategy: 'static', hosts: [a.id.address, '127.0.0.1:1'] }, logger: silent });
    nodes.push(b);
    for (let i = 0; i < 50 && a.cluster.members().length === 0; i++) await new Promise((r) => setTimeout(r, 20));
    const cluster = (await (await fetch(`http://${a.httpAddress}/cluster`)).json()) as { self: { name: string }; members: Array<Record<string, unknown>> };
    expect(cluster.self.name).toBe('adm-a');
    expect(cluster.members).toHaveLength(1);
    expect(cluster.members[0]).toMatchObject({ name: 'adm-b', status: 'up', address: b.id.address, incarnation: b.id.incarnation });
    expect(Object.keys(cluster.members[0] as object)).toEqual(expect.arrayContaining(['rttMs', 'loopLagMs', 'since']));

    const text = await (await fetch(`http://${a.httpAddress}/metrics`)).text();
    expect(text).toMatch(/^foundation_members\{status="up"\} 1$/m);
    expect(text).toMatch(/^foundation_links_opened_total 1$/m);
    // b's metrics: its static topology failed to reach 127.0.0.1:1 at least once.
    const bText = await b.metrics.metrics();
    expect(bText).toMatch(/^foundation_discovery_connects_total\{topology="static",strategy="static",result="ok"\} 1$/m);
    expect(bText).toMatch(/^foundation_discovery_connects_total\{topology="static",strategy="static",result="error"\} [1-9]/m);
    expect(bText).toMatch(/^foundation_discovery_peers\{topology="static",strategy="static"\} 2$/m);
    scraped.push(text, bText);
  });

  it('refuses a request whose Host header names another server (DNS rebinding)', async () => {
    const a = nodes[0];
    if (!a?.httpAddress) throw new Error('the first test did not start a node with HTTP');
    const [host, port] = a.httpAddress.split(':');
    const get = (hostHeader: string) =>
      new Promise<{ status: number; body: string }>((resolve, reject) => {
        const req = request({ host, port: Number(port), path: '/cluster', headers: { host: hostHeader }, agent: false }, (res) => {
          let body = '';
          res.setEncoding('utf8');
          res.on('data', (c: string) => {
            body += c;
          });
          res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
        });
        req.on('error', reject);
        req.end();
      });
    const refused = await get(`rebind.attacker.example:${port}`);
    expect(refused.status).toBe(403);
    expect(refused.body).not.toContain('adm-b');
    expect((await get(`localhost:${port}`)).status).toBe(200);
  });

  it('serves metrics that promtool accepts', (ctx) => {
    const why = requireTools(['promtool'], 'the promtool check of /metrics');
    if (why) return ctx.skip(why);
    expect(scraped).toHaveLength(2);
    for (const text of scraped) execFileSync(findTool('promtool') as string, ['check', 'metrics'], { input: text });
  });
});
