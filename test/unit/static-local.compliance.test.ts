import { mkdtempSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { LocalStrategy } from '../../src/discovery/local.js';
import { StaticStrategy } from '../../src/discovery/static.js';
import { describeStrategyCompliance } from '../compliance/strategy-compliance.js';

const self = { name: 'self', address: '127.0.0.1:4000', incarnation: 1 };

describeStrategyCompliance({
  name: 'static',
  async setup() {
    const hosts = ['127.0.0.1:4000', '127.0.0.1:4001', '127.0.0.1:4002'];
    return { self, expectedPeers: hosts.slice(1), create: () => new StaticStrategy({ hosts }), teardown: async () => {} };
  },
  invalidConfigs: [
    { config: {}, key: 'hosts', create: (c) => new StaticStrategy(c) },
    { config: { hosts: ['nope'] }, key: 'hosts[0]', create: (c) => new StaticStrategy(c) },
    { config: { hosts: ['a:1', 'b:99999'] }, key: 'hosts[1]', create: (c) => new StaticStrategy(c) },
    { config: { hosts: ['a:1'], host: ['b:1'] }, key: 'host', create: (c) => new StaticStrategy(c) },
    { config: { seeds: ['a:1'] }, key: 'seeds', create: (c) => new StaticStrategy(c) },
  ],
});

describeStrategyCompliance({
  name: 'local',
  async setup() {
    const dir = mkdtempSync(join(tmpdir(), 'foundation-local-'));
    // Registrations of other live nodes: this test process's own pid keeps them "alive".
    const reg = (name: string, port: number) =>
      writeFileSync(join(dir, `${name}.json`), JSON.stringify({ name, address: `127.0.0.1:${port}`, incarnation: 1, pid: process.pid }));
    reg('p1', 4101);
    reg('p2', 4102);
    // A crashed node's leftover: its pid does not exist, so it must be ignored and cleaned.
    writeFileSync(join(dir, 'dead.json'), JSON.stringify({ name: 'dead', address: '127.0.0.1:4199', incarnation: 1, pid: 2 ** 22 + 7 }));
    writeFileSync(join(dir, 'garbage.json'), '{not json');
    let next = 4110;
    return {
      self,
      expectedPeers: ['127.0.0.1:4101', '127.0.0.1:4102'],
      create: () => new LocalStrategy({ dir, scanIntervalMs: 100 }),
      addPeer: async () => {
        const port = next++;
        reg(`n${port}`, port);
        return `127.0.0.1:${port}`;
      },
      removePeer: async (address: string) => unlinkSync(join(dir, `n${address.split(':')[1]}.json`)),
      teardown: async () => rmSync(dir, { recursive: true, force: true }),
    };
  },
  invalidConfigs: [
    { config: { dir: '' }, key: 'dir', create: (c) => new LocalStrategy(c) },
    { config: { scanIntervalMs: 1 }, key: 'scanIntervalMs', create: (c) => new LocalStrategy(c) },
    { config: { directory: '/tmp/x' }, key: 'directory', create: (c) => new LocalStrategy(c) },
    { config: null, key: 'config', create: (c) => new LocalStrategy(c) },
  ],
});

describe('static and local: unknown keys', () => {
  const message = (f: () => unknown): string => {
    try {
      f();
    } catch (e) {
      return (e as Error).message;
    }
    return '';
  };
  it('name the key, the closest allowed one and all the allowed ones', () => {
    expect(message(() => new StaticStrategy({ hosts: ['a:1'], host: ['b:1'] } as never))).toMatch(
      /"host": unknown key; did you mean "hosts"\? Allowed keys: hosts$/,
    );
    expect(message(() => new LocalStrategy({ scanInterval: 100 } as never))).toMatch(
      /"scanInterval": unknown key; did you mean "scanIntervalMs"\? Allowed keys: dir, scanIntervalMs$/,
    );
  });
});
