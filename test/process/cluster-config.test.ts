/**
 * node.config across real processes: each node is its own OS process (test/helpers/layer-proc.mjs)
 * running the built library, linked over loopback by the real mesh. A cluster-wide set commits
 * everywhere; one node's validator vetoes and nothing changes anywhere; kill -9 of the
 * coordinator between the votes and the commit resolves the same way on every survivor (abort
 * when no participant got the commit, commit when one did); a node started later reads the
 * current config before it reports ready.
 */
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { isDown, isUp, type NodeEvent, type NodeProc } from '../helpers/cluster.js';
import { ask, LayerCluster } from '../helpers/layer-cluster.js';
import { requireBuild } from '../helpers/requires.js';

const PROC = fileURLToPath(new URL('../helpers/layer-proc.mjs', import.meta.url));
const CLI = fileURLToPath(new URL('../../dist/surfaces/cli.js', import.meta.url));

/** Runs the built `foundation` CLI; resolves with its exit code and output. */
function cli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI, ...args], { timeout: 30_000, env: { ...process.env, FOUNDATION_HTTP: '' } }, (err, stdout, stderr) => {
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
  });
}
const skip = requireBuild('cluster config multi-process tests');
const SECRET = 'cluster-config-process-test-secret-0123';
/** Every node serves its admin HTTP on 127.0.0.1 (the CLI tests talk to it). */
const HTTP = { http: { host: '127.0.0.1', port: 0 } };
const layer = new LayerCluster({ script: PROC, secret: SECRET, prefix: 'config-proc' });

afterEach(() => layer.killAll());

async function cluster(n: number): Promise<{ nodes: NodeProc[]; addresses: string[]; clusterName: string }> {
  const { procs, addresses, clusterName } = await layer.start(n, 'c', HTTP);
  return { nodes: procs, addresses, clusterName };
}

const setCw = (p: NodeProc, path: string, value: unknown, timeoutMs = 5000) =>
  ask(p, { cmd: 'config-set-cw', path, value, timeoutMs }, ['config-committed', 'config-aborted'], timeoutMs + 10_000);
const get = (p: NodeProc, path: string) => ask(p, { cmd: 'config-get', path }, 'config-value');
const state = (p: NodeProc) => ask(p, { cmd: 'config-state' }, 'config-state');

function expectCommitted(e: NodeEvent): void {
  expect(e.event, JSON.stringify(e)).toBe('config-committed');
}

interface ConfigState {
  version: number;
  inDoubt: unknown[];
  stats: { terminations: number; committed: number; aborted: number };
  history: Array<{ version: number; tx: string; coordinator: string }>;
}

/** Waits until `p` holds nothing in doubt and has ended `ended` transactions (committed + aborted). */
async function settled(p: NodeProc, ended: number, timeoutMs = 15_000): Promise<ConfigState> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const s = (await state(p)) as unknown as ConfigState;
    if (s.inDoubt.length === 0 && s.stats.committed + s.stats.aborted >= ended) return s;
    if (Date.now() > end) throw new Error(`${p.label} still in doubt: ${JSON.stringify(s)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe.skipIf(skip !== undefined)('node.config across processes', () => {
  it('a cluster-wide set commits on every node, with every vote yes; a veto on one node changes nothing anywhere and the caller sees its reason', async () => {
    const { nodes } = await cluster(3);
    const [c1, c2, c3] = nodes as [NodeProc, NodeProc, NodeProc];
    const ok = await setCw(c1, 'app.limit', 5);
    expectCommitted(ok);
    expect(ok.version).toBe(1);
    expect((ok.votes as Array<{ node: string; vote: string }>).map((v) => `${v.node}:${v.vote}`).sort()).toEqual(['c1:yes', 'c2:yes', 'c3:yes']);
    expect(ok.acked).toEqual(['c2', 'c3']);
    for (const p of nodes) {
      const v = await get(p, 'app.limit');
      expect(v, p.label).toMatchObject({ value: 5, version: 1 });
      const s = (await state(p)) as unknown as ConfigState;
      expect(s.history, p.label).toMatchObject([{ version: 1, coordinator: 'c1', tx: ok.tx }]);
    }

    await ask(c3, { cmd: 'config-validator', prefix: 'app', reason: 'limit above 10 is refused here', max: 10 }, 'config-validator');
    const refused = await setCw(c2, 'app.limit', 50);
    expect(refused.event).toBe('config-aborted');
    expect(refused.code).toBe('FOUNDATION_CONFIG_ABORTED');
    const votes = refused.votes as Array<{ node: string; vote: string; code?: string; reason?: string }>;
    expect(votes.find((v) => v.node === 'c3')).toEqual({ node: 'c3', vote: 'no', code: 'veto', reason: 'node c3: limit above 10 is refused here' });
    expect(String(refused.message)).toContain('limit above 10 is refused here');
    for (const p of nodes) expect(await get(p, 'app.limit'), p.label).toMatchObject({ value: 5, version: 1 });
    // And a value the validator accepts still commits everywhere.
    expectCommitted(await setCw(c2, 'app.limit', 8));
    for (const p of [c1, c2, c3]) expect(await get(p, 'app'), p.label).toMatchObject({ value: { limit: 8 }, version: 2 });
  }, 90_000);

  it('kill -9 of the coordinator after every vote and before any commit left it: both survivors abort, nothing changes', async () => {
    const { nodes } = await cluster(3);
    const [c1, c2, c3] = nodes as [NodeProc, NodeProc, NodeProc];
    expectCommitted(await setCw(c1, 'feature.on', false));
    await ask(c1, { cmd: 'config-hold', allow: [] }, 'config-holding');
    const held = [
      c1.waitForNext((e) => e.event === 'config-held' && e.to === 'c2', 10_000),
      c1.waitForNext((e) => e.event === 'config-held' && e.to === 'c3', 10_000),
    ];
    c1.send({ cmd: 'config-set-cw', path: 'feature.on', value: true, timeoutMs: 5000 });
    await Promise.all(held);
    const downs = [c2.waitForNext(isDown('c1'), 10_000), c3.waitForNext(isDown('c1'), 10_000)];
    c1.kill('SIGKILL');
    await Promise.all(downs);
    const [s2, s3] = await Promise.all([settled(c2, 2), settled(c3, 2)]);
    // The coordinator may have retried once (a 'locked' or 'syncing' vote) before the kill: at least one abort each.
    expect(s2.stats.aborted).toBeGreaterThanOrEqual(1);
    expect(s3.stats.aborted).toBeGreaterThanOrEqual(1);
    expect(s2.version).toBe(1);
    expect(s3.version).toBe(1);
    for (const p of [c2, c3]) expect(await get(p, 'feature.on'), p.label).toMatchObject({ value: false, version: 1 });
  }, 90_000);

  it('kill -9 of the coordinator after its commit reached one participant only: the other survivor commits too', async () => {
    const { nodes } = await cluster(3);
    const [c1, c2, c3] = nodes as [NodeProc, NodeProc, NodeProc];
    await ask(c1, { cmd: 'config-hold', allow: ['c2'] }, 'config-holding');
    const held = c1.waitForNext((e) => (e.event === 'config-held' && e.to === 'c3') || e.event === 'config-aborted', 10_000);
    c1.send({ cmd: 'config-set-cw', path: 'feature.on', value: true, timeoutMs: 5000 });
    expect((await held).event, JSON.stringify(c1.events.slice(-3))).toBe('config-held');
    // c2 applied it (its acknowledgment lets c1 apply too); c3 holds it prepared.
    for (let i = 0; i < 100; i++) {
      if ((await get(c2, 'feature.on')).value === true) break;
      await new Promise((r) => setTimeout(r, 20));
    }
    const downs = [c2.waitForNext(isDown('c1'), 10_000), c3.waitForNext(isDown('c1'), 10_000)];
    c1.kill('SIGKILL');
    await Promise.all(downs);
    const s3 = await settled(c3, 1);
    const s2 = (await state(c2)) as unknown as ConfigState;
    expect(s3.version).toBe(1);
    expect(s2.version).toBe(1);
    for (const p of [c2, c3]) expect(await get(p, 'feature.on'), p.label).toMatchObject({ value: true, version: 1 });
  }, 90_000);

  it('a node started later has the current config when it first reports ready', async () => {
    const { nodes, addresses, clusterName } = await cluster(3);
    const [c1] = nodes as [NodeProc];
    expectCommitted(await setCw(c1, 'db.pool.size', 20));
    expectCommitted(await setCw(c1, 'db.pool.idleMs', 3000));
    const { proc: c4 } = await layer.startNode('c4', clusterName, addresses, HTTP);
    const ready = await ask(c4, { cmd: 'config-when-ready', path: 'db.pool' }, 'config-ready', 20_000);
    expect(ready).toMatchObject({ value: { size: 20, idleMs: 3000 }, version: 2 });
    // And it takes part in the next change.
    for (const p of nodes) await p.waitFor(isUp('c4'), 15_000, 'c4 up');
    const next = await setCw(c1, 'db.pool.size', 25);
    expectCommitted(next);
    expect((next.votes as Array<{ node: string }>).map((v) => v.node).sort()).toEqual(['c1', 'c2', 'c3', 'c4']);
    expect(await get(c4, 'db.pool.size')).toMatchObject({ value: 25, version: 3 });
  }, 90_000);

  it('foundation config set prints each node vote (a veto included, exit code 1); config get reads a value and lists the rest with secrets redacted', async () => {
    const { nodes } = await cluster(3);
    const [c1, c2] = nodes as [NodeProc, NodeProc];
    const http = String((await ask(c1, { cmd: 'config-http' }, 'config-http')).http);
    const set = await cli(['config', 'set', 'app.mode', '"fast"', '--http', http]);
    expect(set.code, set.stderr).toBe(0);
    expect(set.stdout).toContain('committed app.mode = "fast": version 1');
    for (const n of ['c1', 'c2', 'c3']) expect(set.stdout).toMatch(new RegExp(`^${n}\\s+yes`, 'm'));
    expect((await cli(['config', 'set', 'db.password', 'hunter2', '--http', http])).code).toBe(0);
    await ask(c2, { cmd: 'config-validator', prefix: 'app', reason: 'app.mode is pinned on c2' }, 'config-validator');
    const vetoed = await cli(['config', 'set', 'app.mode', '"slow"', '--http', http]);
    expect(vetoed.code).toBe(1);
    expect(vetoed.stderr).toContain('FOUNDATION_CONFIG_ABORTED');
    expect(vetoed.stdout).toMatch(/^c2\s+no\s+veto\s+node c2: app.mode is pinned on c2$/m);
    const one = await cli(['config', 'get', 'app.mode', '--http', http]);
    expect(one.stdout.trim()).toBe('app.mode = "fast"  (version 2)');
    const all = await cli(['config', 'get', '--http', http]);
    expect(all.stdout).toContain('cluster config version 2, 2 value(s)');
    expect(all.stdout).toContain('db.password = "[redacted]"');
    expect(all.stdout).not.toContain('hunter2');
    // The start-options command next to them still works.
    expect((await cli(['config', 'explain', '--port', '0'])).code).toBe(0);
  }, 90_000);

  it('the blocked case: the coordinator and the one participant that committed both killed; the others report it in doubt (stats, the CLI over /config) until an operator resolves it', async () => {
    const { nodes } = await cluster(4);
    const [c1, c2, c3, c4] = nodes as [NodeProc, NodeProc, NodeProc, NodeProc];
    await ask(c1, { cmd: 'config-hold', allow: ['c2'] }, 'config-holding');
    const held = [c3, c4].map((p) => c1.waitForNext((e) => e.event === 'config-held' && e.to === p.label, 10_000));
    c1.send({ cmd: 'config-set-cw', path: 'feature.on', value: true, timeoutMs: 5000 });
    await Promise.all(held);
    for (let i = 0; i < 100 && (await get(c2, 'feature.on')).value !== true; i++) await new Promise((r) => setTimeout(r, 20));
    expect((await get(c2, 'feature.on')).value).toBe(true);
    const downs = [c3, c4].flatMap((p) => [p.waitForNext(isDown('c1'), 10_000), p.waitForNext(isDown('c2'), 10_000)]);
    c1.kill('SIGKILL');
    c2.kill('SIGKILL');
    await Promise.all(downs);
    // Both survivors asked each other (prepared, fenced) and wait for c2, which may have committed: blocked.
    let doubt: Array<{ tx: string; coordinator: string; waitingFor: string[] }> = [];
    for (let i = 0; i < 50; i++) {
      doubt = ((await state(c3)) as unknown as { inDoubt: typeof doubt }).inDoubt;
      if (doubt.length === 1 && doubt[0]?.waitingFor.length === 1) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(doubt).toMatchObject([{ coordinator: 'c1', waitingFor: ['c2'] }]);
    await new Promise((r) => setTimeout(r, 1500)); // several recovery rounds later: still blocked
    const s4 = (await state(c4)) as unknown as ConfigState & { stats: { inDoubt: number } };
    expect(s4.inDoubt).toHaveLength(1);
    expect(s4.stats.inDoubt).toBe(1);
    const http = String((await ask(c3, { cmd: 'config-http' }, 'config-http')).http);
    const shown = await cli(['config', 'get', '--http', http]);
    expect(shown.stdout).toContain(`in doubt: ${doubt[0]?.tx} (coordinator c1, paths feature.on), waiting for c2`);
    // Meanwhile changes abort (the two dead members are within their 60 s grace; the lock held is the simulation's to show).
    const meanwhile = await setCw(c3, 'other', 1, 1500);
    expect(meanwhile.event).toBe('config-aborted');
    // The operator knows c2 had applied it: commit on both.
    for (const p of [c3, c4]) expect(await ask(p, { cmd: 'config-force', tx: doubt[0]?.tx, outcome: 'commit' }, 'config-forced')).toMatchObject({ done: true });
    for (const p of [c3, c4]) expect(await get(p, 'feature.on'), p.label).toMatchObject({ value: true, version: 1 });
  }, 90_000);
});
