/**
 * Reading registry entries as service instances: a record from a peer is untrusted decoded data,
 * so anything that is not exactly an instance record is refused (never thrown on), and names and
 * ids that could break the select pattern are refused at registration.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ConfigError } from '../../../src/errors.js';
import type { NameOwner } from '../../../src/registry/name-table.js';
import {
  checkInstanceId,
  checkServiceName,
  type InstanceMeta,
  instanceName,
  instancePattern,
  parseInstance,
  toRecord,
} from '../../../src/services/service-mesh/records.js';

const good: InstanceMeta = {
  $service: 1,
  name: 'users',
  id: 'u1',
  version: '1.2.3',
  tags: ['eu'],
  meta: { zone: 'a' },
  endpoint: null,
  health: 'passing',
  output: null,
  checkedAt: 1000,
};
const entry = (meta: unknown, name = 'service:users:u1'): NameOwner => ({ name, node: 'n1', meta, stamp: [1, 0] });

describe('service records', () => {
  it('reads a well-formed entry, and shapes it with the owner and RTT', () => {
    expect(parseInstance(entry(good))).toEqual(good);
    expect(toRecord('n1', good, 0.4)).toEqual({
      name: 'users',
      id: 'u1',
      node: 'n1',
      version: '1.2.3',
      tags: ['eu'],
      meta: { zone: 'a' },
      endpoint: null,
      health: 'passing',
      output: null,
      checkedAt: 1000,
      rttMs: 0.4,
    });
    expect(instanceName('users', 'u1')).toBe('service:users:u1');
    expect(instancePattern('users')).toBe('service:users:*');
    expect(instancePattern()).toBe('service:*');
  });

  it('refuses entries that are not exactly instance records', () => {
    const bad: unknown[] = [
      null,
      'x',
      { ...good, $service: 2 },
      { ...good, health: 'ok' },
      { ...good, tags: 'eu' },
      { ...good, tags: [1] },
      { ...good, meta: null },
      { ...good, meta: [] },
      { ...good, version: 3 },
      { ...good, checkedAt: 'now' },
      { ...good, checkedAt: Number.NaN },
      { ...good, output: 5 },
      { ...good, id: 'u2' }, // the name says u1
    ];
    for (const m of bad) expect(parseInstance(entry(m)), JSON.stringify(m)).toBeUndefined();
    expect(parseInstance(entry(good, 'service:orders:u1'))).toBeUndefined();
  });

  it('never throws on arbitrary decoded values', () => {
    fc.assert(
      fc.property(
        fc.anything(),
        fc.record({ $service: fc.constant(1), name: fc.anything(), id: fc.anything(), health: fc.anything(), tags: fc.anything() }),
        (a, b) => {
          expect(() => parseInstance(entry(a))).not.toThrow();
          expect(() => parseInstance(entry(b))).not.toThrow();
        },
      ),
      { numRuns: 1000 },
    );
  });

  it('refuses service names and ids that could break the select pattern', () => {
    for (const name of ['', 'a:b', 'a*', 'a?', ' a', '-a', 'x'.repeat(129), 42]) expect(() => checkServiceName(name), String(name)).toThrow(ConfigError);
    for (const name of ['users', 'users.v2', 'team/users', 'u_1-2']) expect(() => checkServiceName(name)).not.toThrow();
    for (const id of ['', 'a b', 'a:b', 'a*', 'x'.repeat(65)]) expect(() => checkInstanceId(id), id).toThrow(ConfigError);
    expect(() => checkInstanceId('9f3c0a1b2c3d4e5f')).not.toThrow();
  });
});
