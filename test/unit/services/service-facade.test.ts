/**
 * node.services on one real node (the built dist/, in this process): bad options name their key,
 * a call to this node's own instance goes through the loopback like any other, a deregistered
 * instance is gone, explain shows the registry entries beneath (and the ones discover ignores),
 * handlers registered with services.handle, and the counters.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FoundationNode } from '../../../src/api.js';
import { silentLogger } from '../../helpers/pubsub-hub.js';
import { requireBuild } from '../../helpers/requires.js';

const skip = requireBuild('services facade on one node');
const DIST = '../../../dist/index.js';
let node: FoundationNode;

beforeAll(async () => {
  if (skip !== undefined) return;
  const { Foundation } = (await import(DIST)) as typeof import('../../../src/index.js');
  node = await Foundation.start({
    name: 'solo',
    clusterName: `services-facade-${process.pid}`,
    secret: 'services-facade-secret-0123456789',
    host: '127.0.0.1',
    logger: silentLogger,
  });
});
afterAll(async () => {
  await node?.stop();
});

async function keyOf(fn: () => unknown): Promise<string | undefined> {
  try {
    await fn();
  } catch (err) {
    return (err as { key?: string }).key ?? (err as Error).message;
  }
  return undefined;
}

describe.skipIf(skip !== undefined)('node.services on one node', () => {
  it('refuses bad options with a ConfigError naming the key', async () => {
    const s = node.services;
    expect(await keyOf(() => s.register('bad name'))).toBe('name');
    expect(await keyOf(() => s.register('users:x'))).toBe('name');
    expect(await keyOf(() => s.register('users', { id: 'a b' }))).toBe('id');
    expect(await keyOf(() => s.register('users', { version: '1.2' }))).toBe('version');
    expect(await keyOf(() => s.register('users', { tags: [''] }))).toBe('tags');
    expect(await keyOf(() => s.register('users', { meta: [] as never }))).toBe('meta');
    expect(await keyOf(() => s.register('users', { check: { run: () => undefined, intervalMs: 1 } }))).toBe('check.intervalMs');
    expect(await keyOf(() => s.register('users', { handlers: { get: 42 as never } }))).toBe('handlers.get');
    expect(await keyOf(() => s.discover({ name: 'users', version: 'not a range' }))).toBe('version');
    expect(await keyOf(() => s.pick('users', { strategy: 'fastest' as never }))).toBe('strategy');
    expect(await keyOf(() => s.call('users', 'get', null, { retries: -1 }))).toBe('retries');
    expect(await keyOf(() => s.call('users', 'get', null, { timeoutMs: 0 }))).toBe('timeoutMs');
    expect(await keyOf(() => s.call('users', '', null))).toBe('method');
  });

  it('calls this node’s own instance, per-instance handlers first, then services.handle ones; a deregistered instance is gone', async () => {
    const s = node.services;
    const off = s.handle('local', 'hello', (args, ctx) => ({ hello: args, from: ctx.from, instance: ctx.instance }));
    expect(() => s.handle('local', 'hello', () => 1)).toThrow(expect.objectContaining({ code: 'FOUNDATION_HANDLER_EXISTS' }));
    const reg = await s.register('local', { id: 'l1', handlers: { hello: () => 'own handler' } });
    const other = await s.register('local', { id: 'l2' });
    expect(reg.registryName).toBe('service:local:l1');
    expect(reg.health()).toEqual({ status: 'passing', output: null, checkedAt: null });
    expect(await s.call('local', 'hello', 'x')).toBe('own handler'); // round-robin starts at l1
    expect(await s.call('local', 'hello', 'y')).toEqual({ hello: 'y', from: 'solo', instance: 'l2' });
    expect(s.discover({ name: 'local' }).map((r) => [r.id, r.node, r.rttMs])).toEqual([
      ['l1', 'solo', 0],
      ['l2', 'solo', 0],
    ]);
    await expect(s.register('local', { id: 'l1' })).rejects.toMatchObject({ code: 'FOUNDATION_NAME_REGISTERED' });
    expect(reg.deregister()).toBe(true);
    expect(reg.deregister()).toBe(false);
    other.deregister();
    expect(s.discover({ name: 'local' })).toEqual([]);
    await expect(s.call('local', 'hello', null)).rejects.toMatchObject({ name: 'ServiceError', code: 'FOUNDATION_SERVICE_UNAVAILABLE', attempts: [] });
    off();
  });

  it('a check that fails at registration publishes critical from the start; the instance is not called', async () => {
    const s = node.services;
    const reg = await s.register('flaky', {
      id: 'f1',
      check: () => {
        throw new Error('not ready');
      },
      handlers: { ping: () => 'pong' },
    });
    expect(reg.health()).toMatchObject({ status: 'critical', output: 'not ready' });
    expect(s.discover({ name: 'flaky', healthy: false })).toMatchObject([{ id: 'f1', health: 'critical', output: 'not ready' }]);
    expect(s.pick('flaky')).toBeUndefined();
    await expect(s.call('flaky', 'ping', null)).rejects.toMatchObject({ code: 'FOUNDATION_SERVICE_UNAVAILABLE' });
    reg.deregister();
  });

  it('explain names the registry select and shows its entries; entries that are not records are listed as ignored', async () => {
    const s = node.services;
    const reg = await s.register('catalog', { id: 'c1', version: '3.1.0' });
    node.registry.register('service:catalog:manual', { by: 'hand' });
    const e = s.explain('catalog');
    expect(e.mechanism).toBe("registry.select('service:catalog:*')");
    expect(e.summary).toContain('A registry select whose results are shaped into records carrying health');
    expect(e.entries.map((o) => o.name)).toEqual(['service:catalog:c1', 'service:catalog:manual']);
    expect(e.ignored).toEqual(['service:catalog:manual']);
    expect(s.discover({ name: 'catalog' }).map((r) => r.id)).toEqual(['c1']);
    expect(s.list().some((r) => r.id === 'c1')).toBe(true);
    const st = s.stats();
    expect(st.local).toBeGreaterThanOrEqual(1);
    expect(st.instances.passing).toBeGreaterThanOrEqual(1);
    expect(await node.metrics.metrics()).toMatch(/foundation_services_instances\{health="passing"\} \d+/);
    reg.deregister();
    node.registry.unregister('service:catalog:manual');
  });
});
