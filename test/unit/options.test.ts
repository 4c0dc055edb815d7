/**
 * The start-option resolver (`resolveOptions`): defaults, environment, every cross-field check
 * and the keys its errors name; the shapes `http` accepts; and a property test over generated
 * inputs that `foundation config explain` accepts exactly what `Foundation.start` accepts.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { parseHostPort } from '../../src/config/address.js';
import { DEFAULTS } from '../../src/config/defaults.js';
import { ENV_VARIABLES } from '../../src/config/env.js';
import { explainConfig } from '../../src/config/explain.js';
import { type FoundationOptions, optionsSchema } from '../../src/config/options.js';
import { resolveOptions } from '../../src/config/resolve.js';
import { CLUSTER_SHORTHANDS, SHORTHAND_NAMES } from '../../src/discovery/modes.js';
import { ConfigError, ErrorCodes, SecretRequiredError } from '../../src/errors.js';
import type { Logger } from '../../src/util/logger.js';
import { cookieArb, cookieFor, envArb, optionsArb, outcome, SECRET } from '../helpers/option-arbitraries.js';

const silent: Logger = { debug() {}, info() {}, warn() {}, error() {}, child: () => silent };

const scratch = mkdtempSync(join(tmpdir(), 'foundation-options-test-'));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

/** The ConfigError `fn` rejects with (fails the test when it resolves or throws something else). */
async function configError(fn: () => Promise<unknown>): Promise<ConfigError> {
  try {
    await fn();
  } catch (err) {
    if (err instanceof ConfigError) return err;
    throw err;
  }
  throw new Error('expected a ConfigError, but it resolved');
}

describe('resolveOptions: defaults', () => {
  it('applies every default from DEFAULTS, and nothing else', async () => {
    const r = await resolveOptions({ secret: SECRET }, {});
    expect(r).toMatchObject({
      host: DEFAULTS.host,
      port: DEFAULTS.port,
      clusterName: DEFAULTS.clusterName,
      hidden: false,
      http: false,
      maxFrameBytes: DEFAULTS.maxFrameBytes,
      maxMessageBytes: DEFAULTS.maxMessageBytes,
      handshakeTimeoutMs: DEFAULTS.handshakeTimeoutMs,
      connectTimeoutMs: DEFAULTS.connectTimeoutMs,
      reconnect: { ...DEFAULTS.reconnect },
      degradedLoopLagMs: DEFAULTS.degradedLoopLagMs,
      heartbeatPort: undefined,
      advertiseHost: undefined,
      mode: 'none',
      topologies: {},
      strategies: [],
    });
    expect(r.lanes).toEqual({ fragmentBytes: DEFAULTS.fragmentBytes, mode: 'priority', lanes: {}, windowBytes: DEFAULTS.windowBytes });
    const fd = DEFAULTS.failureDetector;
    expect(r.heartbeat).toEqual({
      intervalMs: fd.heartbeatIntervalMs,
      phiThreshold: fd.phiThreshold,
      suspectPhi: fd.suspectPhi,
      detector: { acceptablePauseMs: fd.acceptablePauseMs, minStdDevMs: fd.minStdDevMs },
      maxMainStallMs: fd.maxMainStallMs,
      self: r.name,
    });
    expect(r.name).toMatch(new RegExp(`-${process.pid}$`));
    expect(r.secret.source).toBe('option');
    expect(r.secret.warning).toBeUndefined();
  });

  it('the documented figures: 1 MiB frames, 64 KiB fragments, 512 KiB window, 250 ms heartbeats', () => {
    expect(DEFAULTS).toMatchObject({ maxFrameBytes: 1 << 20, fragmentBytes: 1 << 16, windowBytes: 512 << 10, maxMessageBytes: 64 << 20 });
    expect(DEFAULTS.failureDetector).toEqual({
      heartbeatIntervalMs: 250,
      phiThreshold: 8,
      suspectPhi: 3,
      acceptablePauseMs: 1000,
      minStdDevMs: 100,
      maxMainStallMs: 10_000,
    });
  });

  it('warns about a secret shorter than 32 bytes (the documented minimum)', async () => {
    expect((await resolveOptions({ secret: 'x'.repeat(31) }, {})).secret.warning).toMatch(/only 31 bytes: use at least 32 random bytes/);
    expect((await resolveOptions({ secret: 'x'.repeat(32) }, {})).secret.warning).toBeUndefined();
  });
});

describe('resolveOptions: environment', () => {
  it('fills what the options leave out; explicit options win key by key', async () => {
    const env = { FOUNDATION_PORT: '4369', FOUNDATION_NAME: 'from-env', FOUNDATION_CLUSTER_NAME: 'env-cluster', FOUNDATION_SECRET: SECRET };
    const r = await resolveOptions({ name: 'explicit' }, env);
    expect(r).toMatchObject({ name: 'explicit', port: 4369, clusterName: 'env-cluster' });
    expect(r.secret.secret.toString()).toBe(SECRET);
  });

  it('FOUNDATION_COOKIE_FILE sets cookieFile (and explain does not create it)', async () => {
    const file = join(scratch, 'env-cookie');
    const explained = await resolveOptions({}, { FOUNDATION_COOKIE_FILE: file }, 'explain');
    expect(explained.secret).toMatchObject({ source: 'cookie-file' });
    expect(explained.secret.warning).toMatch(/would create/);
    expect(existsSync(file)).toBe(false);
    const started = await resolveOptions({}, { FOUNDATION_COOKIE_FILE: file }, 'start');
    expect(started.secret.source).toBe('cookie-file');
    expect(started.secret.secret.length).toBeGreaterThanOrEqual(32);
    expect(existsSync(file)).toBe(true);
  });

  it('errors from the environment name the variable', async () => {
    expect((await configError(() => resolveOptions({}, { FOUNDATION_HTTP: 'nope' }))).key).toBe('FOUNDATION_HTTP');
    expect((await configError(() => resolveOptions({}, { FOUNDATION_PORT: '70000' }))).key).toBe('FOUNDATION_PORT');
    expect((await configError(() => resolveOptions({}, { FOUNDATION_CLUSTER: 'fly' }))).key).toBe('FOUNDATION_FLY_APP');
  });

  it('FOUNDATION_CLUSTER=mortal is Mortal mode, like true', async () => {
    for (const value of ['mortal', 'MORTAL', 'true']) {
      const r = await resolveOptions({ secret: SECRET, clusterName: `env-mortal-${process.pid}` }, { FOUNDATION_CLUSTER: value }, 'explain');
      expect(r.mode).toBe('mortal');
    }
  });
});

describe('resolveOptions: cross-field checks name the key', () => {
  const cases: Array<[string, FoundationOptions, string, RegExp]> = [
    ['frame vs fragment', { maxFrameBytes: 70_000, fragmentBytes: 69_000 }, 'maxFrameBytes', /must exceed fragmentBytes \(69000\) by at least 1024/],
    ['suspectPhi < phiThreshold', { failureDetector: { phiThreshold: 4, suspectPhi: 5 } }, 'failureDetector.suspectPhi', /< phiThreshold/],
    ['heartbeat interval range', { failureDetector: { heartbeatIntervalMs: 5 } }, 'failureDetector.heartbeatIntervalMs', /10\.\.60000/],
    ['main stall', { failureDetector: { maxMainStallMs: 50 } }, 'failureDetector.maxMainStallMs', /> 100/],
    ['lane hardLimit >= highWaterMark', { lanes: { telemetry: { highWaterMark: 4 << 20 } } }, 'lanes.telemetry.hardLimit', /must be >= highWaterMark/],
    ['maxMessageBytes fits a header', { maxMessageBytes: 3 }, 'maxMessageBytes', /must be an integer >= 6/],
    ['reconnect backoff order', { reconnect: { baseMs: 500, maxMs: 100 } }, 'reconnect.maxMs', /must be >= reconnect\.baseMs \(500\)/],
    ['tls material', { tls: { key: 'not a key', cert: 'not a cert' } }, 'tls', /not usable PEM/],
    ['shorthand needs a fixed port', { cluster: { strategy: 'dns', query: 'x.internal' } }, 'cluster.port', /needs the peers' mesh port/],
    ['strategy constructor', { topologies: { t: { strategy: 'static', config: { hosts: ['nope'] } } } }, 'topologies.t.config.hosts[0]', /host:port/],
    ['unknown strategy', { topologies: { t: { strategy: 'consul' } } }, 'topologies.t.strategy', /unknown strategy "consul"/],
  ];
  for (const [what, options, key, message] of cases) {
    it(`${what}: ${key}`, async () => {
      for (const purpose of ['start', 'explain'] as const) {
        const err = await configError(() => resolveOptions({ secret: SECRET, ...options }, {}, purpose));
        expect(err.key).toBe(key);
        expect(err.message).toMatch(message);
        expect(err.code).toBe(ErrorCodes.CONFIG_INVALID);
      }
    });
  }

  it('NODE_ENV=production without a secret: SecretRequiredError, from start and explain alike', async () => {
    await expect(resolveOptions({}, { NODE_ENV: 'production' })).rejects.toBeInstanceOf(SecretRequiredError);
    await expect(explainConfig({}, { NODE_ENV: 'production' })).rejects.toBeInstanceOf(SecretRequiredError);
    await expect(explainConfig({ insecure: true }, { NODE_ENV: 'production' })).resolves.toMatchObject({ node: { secret: 'insecure' } });
  });

  it('an empty cookie file is refused by start and explain alike', async () => {
    const file = join(scratch, 'empty-cookie');
    writeFileSync(file, '');
    for (const purpose of ['start', 'explain'] as const) {
      expect((await configError(() => resolveOptions({ cookieFile: file }, {}, purpose))).key).toBe('cookieFile');
    }
  });
});

describe('http: one parser for the option, FOUNDATION_HTTP and the CLI', () => {
  const accepted: Array<[FoundationOptions['http'], { host: string; port: number; allowedHosts?: string[] } | false]> = [
    [9100, { host: '127.0.0.1', port: 9100 }],
    ['9100', { host: '127.0.0.1', port: 9100 }],
    ['0.0.0.0:9100', { host: '0.0.0.0', port: 9100 }],
    ['[::1]:9100', { host: '::1', port: 9100 }],
    [{ port: 9100 }, { host: '127.0.0.1', port: 9100 }],
    [
      { host: '::', port: 0 },
      { host: '::', port: 0 },
    ],
    [
      { port: 9100, allowedHosts: ['node-1.internal', '*.pods.internal'] },
      { host: '127.0.0.1', port: 9100, allowedHosts: ['node-1.internal', '*.pods.internal'] },
    ],
    [false, false],
    [undefined, false],
  ];
  for (const [http, want] of accepted) {
    it(`accepts ${JSON.stringify(http)}`, async () => {
      expect((await resolveOptions({ secret: SECRET, http }, {})).http).toEqual(want);
    });
  }

  it('FOUNDATION_HTTP and the option mean the same thing', async () => {
    for (const text of ['9100', '0.0.0.0:9100', '[::1]:9100']) {
      const fromEnv = await resolveOptions({ secret: SECRET }, { FOUNDATION_HTTP: text });
      const fromOption = await resolveOptions({ secret: SECRET, http: text }, {});
      expect(fromEnv.http).toEqual(fromOption.http);
    }
  });

  it('refuses other shapes, saying which shapes are accepted', async () => {
    const shape = /expected false, a port number, "<port> or <host:port> \(port 0-65535; \[v6\]:port for IPv6\)" as a string, or \{ host\?, port \}/;
    for (const bad of [true, null, [9100]]) {
      const err = await configError(() => resolveOptions({ http: bad as unknown as number }, {}));
      expect(err.key).toBe('http');
      expect(err.message).toMatch(shape);
    }
    const text = await configError(() => resolveOptions({ http: 'localhost' }, {}));
    expect(text.key).toBe('http');
    expect(text.message).toMatch(/expected <port> or <host:port>/);
    expect((await configError(() => resolveOptions({ http: 70_000 }, {}))).message).toMatch(/http.*65535/);
    expect((await configError(() => resolveOptions({ http: { port: 1, hots: 'x' } as never }, {}))).message).toMatch(
      /"http\.hots": unknown key; did you mean "host"/,
    );
  });

  it('parseHostPort: bare ports, IPv6, and the admin URL only where allowed', () => {
    expect(parseHostPort('9100', { allowBarePort: true })).toEqual({ host: undefined, port: 9100 });
    expect(parseHostPort('9100')).toBeUndefined();
    expect(parseHostPort('h:1')).toEqual({ host: 'h', port: 1 });
    expect(parseHostPort('[fe80::1]:1')).toEqual({ host: 'fe80::1', port: 1 });
    expect(parseHostPort('::1:1')).toBeUndefined();
    expect(parseHostPort('h:65536')).toBeUndefined();
    expect(parseHostPort('h:0', { minPort: 1 })).toBeUndefined();
    expect(parseHostPort('http://127.0.0.1:43669')).toBeUndefined();
    expect(parseHostPort('http://127.0.0.1:43669', { allowHttpUrl: true })).toEqual({ host: '127.0.0.1', port: 43669 });
    expect(parseHostPort('HTTP://[::1]:80/', { allowHttpUrl: true })).toEqual({ host: '::1', port: 80 });
    expect(parseHostPort('http://127.0.0.1:43669/metrics', { allowHttpUrl: true })).toBeUndefined();
    expect(parseHostPort('https://127.0.0.1:43669', { allowHttpUrl: true })).toBeUndefined();
    expect(parseHostPort('http://9100', { allowHttpUrl: true, allowBarePort: true })).toBeUndefined();
  });
});

describe('explain accepts exactly what start accepts (property)', () => {
  it('over generated options and environments, explain and the start path agree, error for error', async () => {
    let run = 0;
    let accepted = 0;
    await fc.assert(
      fc.asyncProperty(optionsArb, envArb, cookieArb, async (options, env, cookie) => {
        const file = cookieFor(scratch, cookie, run++);
        const input = { ...options, cookieFile: file, logger: silent, clusterName: options.clusterName ?? `prop-${process.pid}` };
        const explained = await outcome(() => explainConfig(input, env));
        const started = await outcome(() => resolveOptions(input, env, 'start'));
        if (explained === 'ok') accepted++;
        expect(explained).toBe(started);
      }),
      { numRuns: 400, seed: 7 },
    );
    // The generator must reach both outcomes, or the property proves little.
    expect(accepted).toBeGreaterThan(10);
    expect(accepted).toBeLessThan(390);
  });
});

describe('one declaration', () => {
  it('every Apprentice shorthand comes from the table: its variables are read, parsed by its schema, and translated', async () => {
    const env: Record<string, Record<string, string>> = {
      kubernetes: { FOUNDATION_K8S_APP_NAME: 'shop', FOUNDATION_K8S_NAMESPACE: 'prod', FOUNDATION_K8S_MODE: 'pods' },
      dns: { FOUNDATION_DNS_QUERY: 'shop.internal' },
      'dns-srv': { FOUNDATION_DNS_SERVICE: '_f._tcp.shop' },
      gossip: { FOUNDATION_GOSSIP_SECRET: 'g' },
      mdns: {},
      static: { FOUNDATION_STATIC: '127.0.0.1:1' },
      fly: { FOUNDATION_FLY_APP: 'shop' },
      local: { FOUNDATION_LOCAL_DIR: join(scratch, 'local') },
    };
    expect(Object.keys(env)).toEqual(SHORTHAND_NAMES);
    for (const name of SHORTHAND_NAMES) {
      for (const variable of Object.keys(CLUSTER_SHORTHANDS[name].variables)) expect(ENV_VARIABLES).toHaveProperty(variable);
      const r = await resolveOptions({ secret: SECRET, port: 4369 }, { FOUNDATION_CLUSTER: name, ...env[name] }, 'explain');
      expect(r.mode).toBe('apprentice');
      expect(Object.keys(r.topologies)).toEqual([name]);
    }
  });

  it('docs/guides/configuration.md lists every start option and every environment variable', () => {
    const doc = readFileSync(new URL('../../docs/guides/configuration.md', import.meta.url), 'utf8');
    for (const key of Object.keys(optionsSchema.shape)) expect(doc, `option ${key}`).toContain(`| \`${key}\` |`);
    for (const variable of Object.keys(ENV_VARIABLES)) expect(doc, `variable ${variable}`).toContain(`| \`${variable}\` |`);
  });
});
