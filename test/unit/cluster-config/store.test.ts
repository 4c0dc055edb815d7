/**
 * The config store (dotted paths in two layers, versions, history, snapshots, digest) and the
 * redaction rule of the admin surfaces.
 */
import { describe, expect, it } from 'vitest';
import { ConfigError } from '../../../src/errors.js';
import { isSecretPath, REDACTED, redactAt, redactValue } from '../../../src/services/cluster-config/redact.js';
import { ConfigStore, checkPath, HISTORY_KEPT } from '../../../src/services/cluster-config/store.js';

describe('config store', () => {
  it('reads a value, the part of an ancestor object, or an object assembled from the values under a path', () => {
    const s = new ConfigStore();
    s.applyCommit(
      't1',
      [
        { path: 'db.pool.size', value: 20 },
        { path: 'db.pool.idleMs', value: 3000 },
        { path: 'feature', value: { on: true, pct: 5 } },
      ],
      1,
      'n1',
      10,
    );
    expect(s.get('db.pool.size')).toBe(20);
    expect(s.get('db.pool')).toEqual({ size: 20, idleMs: 3000 });
    expect(s.get('db')).toEqual({ pool: { size: 20, idleMs: 3000 } });
    expect(s.get('feature.pct')).toBe(5);
    expect(s.get('feature.nope')).toBeUndefined();
    expect(s.get('nothing')).toBeUndefined();
  });

  it('a path holds a value or children: writing one removes the values at its ancestors and under it; undefined deletes', () => {
    const s = new ConfigStore();
    s.applyCommit(
      't1',
      [
        { path: 'a.b.c', value: 1 },
        { path: 'a.b.d', value: 2 },
      ],
      1,
      'n1',
      10,
    );
    expect(s.applyCommit('t2', [{ path: 'a.b', value: 'flat' }], 2, 'n1', 11).sort()).toEqual(['a.b', 'a.b.c', 'a.b.d']);
    expect(s.get('a')).toEqual({ b: 'flat' });
    s.applyCommit('t3', [{ path: 'a.b.x', value: 9 }], 3, 'n1', 12);
    expect(s.get('a.b')).toEqual({ x: 9 });
    s.applyCommit('t4', [{ path: 'a.b.x' }], 4, 'n1', 13);
    expect(s.get('a')).toBeUndefined();
    expect(s.version).toBe(4);
    expect(s.tx).toBe('t4');
  });

  it('overrides win over the cluster layer leaf by leaf and are not in snapshots or the digest', () => {
    const s = new ConfigStore();
    s.applyCommit(
      't1',
      [
        { path: 'db.pool.size', value: 20 },
        { path: 'db.pool.idleMs', value: 3000 },
      ],
      1,
      'n1',
      10,
    );
    const digest = s.digest();
    s.setLocal('db.pool.size', 4);
    expect(s.get('db.pool.size')).toBe(4);
    expect(s.get('db.pool')).toEqual({ size: 4, idleMs: 3000 });
    expect(s.getCluster('db.pool.size')).toBe(20);
    expect(s.entries()).toEqual([
      ['db.pool.idleMs', 3000],
      ['db.pool.size', 4],
    ]);
    expect(s.overrides()).toEqual(['db.pool.size']);
    expect(s.digest()).toBe(digest);
    expect(s.snapshot().values).toEqual([
      ['db.pool.idleMs', 3000],
      ['db.pool.size', 20],
    ]);
    s.setLocal('db.pool.size', undefined);
    expect(s.get('db.pool.size')).toBe(20);
  });

  it('a snapshot installs elsewhere with the same version, values, history and digest, and reports what changed', () => {
    const a = new ConfigStore();
    a.applyCommit('t1', [{ path: 'x', value: new Map([['k', 1n]]) }], 1, 'n1', 10);
    a.applyCommit('t2', [{ path: 'y', value: [1, 2] }], 2, 'n2', 11);
    const b = new ConfigStore();
    b.applyCommit('old', [{ path: 'z', value: 1 }], 1, 'n3', 5);
    expect(b.install(structuredClone(a.snapshot())).sort()).toEqual(['x', 'y', 'z']);
    expect(b.version).toBe(2);
    expect(b.digest()).toBe(a.digest());
    expect(b.history().map((c) => [c.version, c.coordinator])).toEqual([
      [1, 'n1'],
      [2, 'n2'],
    ]);
  });

  it('keeps the last HISTORY_KEPT commits', () => {
    const s = new ConfigStore();
    for (let v = 1; v <= HISTORY_KEPT + 5; v++) s.applyCommit(`t${v}`, [{ path: 'k', value: v }], v, 'n1', v);
    expect(s.history()).toHaveLength(HISTORY_KEPT);
    expect(s.history()[0]?.version).toBe(6);
  });

  it('refuses bad paths with a ConfigError naming the key', () => {
    for (const bad of ['', 'a..b', '.a', 'a.', 'a.__proto__', 'x'.repeat(600), 5]) {
      expect(() => checkPath(bad), String(bad)).toThrow(ConfigError);
    }
    expect(() => checkPath('a..b', 'pathPrefix')).toThrow(/"pathPrefix"/);
    expect(() => checkPath('db.pool.size')).not.toThrow();
  });
});

describe('redaction rule', () => {
  it('hides a value when a path segment or a key inside it names a secret', () => {
    for (const p of ['db.password', 'apiKey', 'auth.tokens.github', 'SECRET', 'stripe.secretKey']) expect(isSecretPath(p), p).toBe(true);
    for (const p of ['db.pool.size', 'feature.on', 'limits.rps']) expect(isSecretPath(p), p).toBe(false);
    expect(redactAt('db.password', 'hunter2')).toBe(REDACTED);
    expect(redactAt('payments', { stripe: { secretKey: 'sk', mode: 'live' }, retries: 3 })).toEqual({
      stripe: { secretKey: REDACTED, mode: 'live' },
      retries: 3,
    });
    expect(redactValue([{ token: 't' }, 1])).toEqual([{ token: REDACTED }, 1]);
    expect(
      redactValue(
        new Map([
          ['password', 'x'],
          ['user', 'u'],
        ]),
      ),
    ).toEqual(
      new Map([
        ['password', REDACTED],
        ['user', 'u'],
      ]),
    );
  });
});
