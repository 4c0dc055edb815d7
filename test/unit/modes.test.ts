import { describe, expect, it } from 'vitest';
import { mergeEnv, optionsFromEnv } from '../../src/config/env.js';
import { explainConfig, formatExplanation } from '../../src/config/explain.js';
import { parseOptions } from '../../src/config/options.js';
import { type ClusterShorthand, resolveTopologies, translateShorthand } from '../../src/discovery/modes.js';
import { ConfigError } from '../../src/errors.js';

const ctx = { port: 4369, secret: 'node-secret', mdnsAvailable: false };

describe('Apprentice translation table', () => {
  const table: Array<[ClusterShorthand, string, unknown]> = [
    [{ strategy: 'kubernetes', appName: 'shop' }, 'kubernetes', { strategy: 'kubernetes', config: { mode: 'endpointslices', service: 'shop', port: 4369 } }],
    [
      { strategy: 'kubernetes', appName: 'shop', namespace: 'prod', mode: 'pods', port: 9000 },
      'kubernetes',
      { strategy: 'kubernetes', config: { mode: 'pods', selector: 'app=shop', namespace: 'prod', port: 9000 } },
    ],
    [{ strategy: 'dns', query: 'shop.internal' }, 'dns', { strategy: 'dns', config: { query: 'shop.internal', port: 4369 } }],
    [{ strategy: 'dns', query: 'shop.internal', port: 7000 }, 'dns', { strategy: 'dns', config: { query: 'shop.internal', port: 7000 } }],
    [{ strategy: 'dns-srv', service: '_f._tcp.shop' }, 'dns-srv', { strategy: 'dns-srv', config: { service: '_f._tcp.shop' } }],
    [{ strategy: 'gossip' }, 'gossip', { strategy: 'gossip', config: { secret: 'node-secret' } }],
    [{ strategy: 'gossip', secret: 'g' }, 'gossip', { strategy: 'gossip', config: { secret: 'g' } }],
    [{ strategy: 'mdns' }, 'mdns', { strategy: 'mdns', config: {} }],
    [{ strategy: 'static', hosts: ['a:1', 'b:2'] }, 'static', { strategy: 'static', config: { hosts: ['a:1', 'b:2'] } }],
    [{ strategy: 'fly', app: 'shop' }, 'fly', { strategy: 'dns', config: { query: 'shop.internal', family: 'ipv6', port: 4369 } }],
    [{ strategy: 'local' }, 'local', { strategy: 'local', config: {} }],
    [{ strategy: 'local', dir: '/tmp/x' }, 'local', { strategy: 'local', config: { dir: '/tmp/x' } }],
  ];
  for (const [input, name, spec] of table) {
    it(`${JSON.stringify(input)} → ${name}`, () => {
      expect(translateShorthand(input, ctx)).toEqual([name, spec]);
    });
  }

  it('needs a fixed port for port-based strategies', () => {
    expect(() => translateShorthand({ strategy: 'dns', query: 'x' }, { ...ctx, port: 0 })).toThrow(ConfigError);
    expect(() => translateShorthand({ strategy: 'fly', app: 'x' }, { ...ctx, port: 0 })).toThrow(/port/);
  });
});

describe('Mortal and Wizard modes', () => {
  it('Mortal: local + gossip without the mDNS package, local + mdns with it', () => {
    expect(Object.keys(resolveTopologies(true, undefined, ctx).topologies)).toEqual(['local', 'gossip']);
    expect(resolveTopologies(true, undefined, ctx).topologies.gossip).toEqual({ strategy: 'gossip', config: { secret: 'node-secret' } });
    expect(Object.keys(resolveTopologies(true, undefined, { ...ctx, mdnsAvailable: true }).topologies)).toEqual(['local', 'mdns']);
  });

  it('Wizard: passes topologies through untouched, several at once, classes allowed', () => {
    class Custom {
      readonly name = 'custom';
      start() {}
      stop() {}
    }
    const topologies = {
      dataPlane: { strategy: 'gossip', config: { port: 45890, intervalMs: 500 } },
      controlPlane: { strategy: Custom, config: { anything: [1, 2] } },
    };
    const r = resolveTopologies(undefined, topologies, ctx);
    expect(r.mode).toBe('wizard');
    expect(r.topologies.dataPlane).toBe(topologies.dataPlane);
    expect(r.topologies.controlPlane).toBe(topologies.controlPlane);
  });

  it('combines a shorthand with Wizard topologies; Wizard wins on a name clash', () => {
    const r = resolveTopologies({ strategy: 'static', hosts: ['a:1'] }, { static: { strategy: 'static', config: { hosts: ['b:2'] } } }, ctx);
    expect(r.mode).toBe('apprentice+wizard');
    expect(r.topologies.static?.config).toEqual({ hosts: ['b:2'] });
  });
});

describe('validation', () => {
  it('names the key, the allowed values and a suggestion', () => {
    expect(() => parseOptions({ cluster: { strategy: 'kubernets', appName: 'x' } })).toThrow(
      /cluster\.strategy.*unknown strategy "kubernets"; did you mean "kubernetes"\?.*Allowed values: "kubernetes", "dns", "dns-srv", "gossip", "mdns", "static", "fly", "local"/,
    );
    expect(() => parseOptions({ clustr: true })).toThrow(/"clustr": unknown key; did you mean "cluster"\?/);
    expect(() => parseOptions({ cluster: { strategy: 'dns' } })).toThrow(/cluster\.query/);
    expect(() => parseOptions({ cluster: { strategy: 'static', hosts: ['nope'] } })).toThrow(/cluster\.hosts\[0\].*host:port/);
    expect(() => parseOptions({ cluster: { strategy: 'kubernetes', appName: 'a', mode: 'nodes' } })).toThrow(
      /cluster\.mode.*Allowed values: "endpointslices", "pods"/,
    );
    expect(() => parseOptions({ topologies: { a: { strategy: 'static', confg: {} } } })).toThrow(/topologies\.a\.confg.*did you mean "config"/);
    // An unknown key of a shorthand lists the keys of the strategy it names.
    expect(() => parseOptions({ cluster: { strategy: 'local', scanIntervalMs: 100 } })).toThrow(
      /"cluster\.scanIntervalMs": unknown key\. Allowed keys: strategy, dir$/,
    );
    expect(() => parseOptions({ cluster: { strategy: 'kubernetes', appName: 'a', namspace: 'x' } })).toThrow(
      /"cluster\.namspace": unknown key; did you mean "namespace"\? Allowed keys: strategy, appName, namespace, mode, port$/,
    );
  });
});

describe('environment (twelve-factor)', () => {
  it('maps every mode from FOUNDATION_* variables', () => {
    expect(optionsFromEnv({ FOUNDATION_CLUSTER: 'true' }).cluster).toBe(true);
    expect(
      optionsFromEnv({ FOUNDATION_CLUSTER: 'kubernetes', FOUNDATION_K8S_APP_NAME: 'shop', FOUNDATION_K8S_NAMESPACE: 'prod', FOUNDATION_K8S_MODE: 'pods' })
        .cluster,
    ).toEqual({
      strategy: 'kubernetes',
      appName: 'shop',
      namespace: 'prod',
      mode: 'pods',
    });
    expect(optionsFromEnv({ FOUNDATION_CLUSTER: 'dns', FOUNDATION_DNS_QUERY: 'q', FOUNDATION_CLUSTER_PORT: '7000' }).cluster).toEqual({
      strategy: 'dns',
      query: 'q',
      port: 7000,
    });
    expect(optionsFromEnv({ FOUNDATION_CLUSTER: 'dns-srv', FOUNDATION_DNS_SERVICE: 's' }).cluster).toEqual({ strategy: 'dns-srv', service: 's' });
    expect(optionsFromEnv({ FOUNDATION_CLUSTER: 'gossip', FOUNDATION_GOSSIP_SECRET: 'g' }).cluster).toEqual({ strategy: 'gossip', secret: 'g' });
    expect(optionsFromEnv({ FOUNDATION_STATIC: 'a:1, b:2' }).cluster).toEqual({ strategy: 'static', hosts: ['a:1', 'b:2'] });
    expect(optionsFromEnv({ FOUNDATION_CLUSTER: 'fly', FLY_APP_NAME: 'shop' }).cluster).toEqual({ strategy: 'fly', app: 'shop' });
    expect(optionsFromEnv({ FOUNDATION_TOPOLOGIES: '{"x":{"strategy":"static","config":{"hosts":["a:1"]}}}' }).topologies).toEqual({
      x: { strategy: 'static', config: { hosts: ['a:1'] } },
    });
    expect(optionsFromEnv({ FOUNDATION_PORT: '4369', FOUNDATION_HTTP: '0.0.0.0:8080', FOUNDATION_INSECURE: 'yes' })).toMatchObject({
      port: 4369,
      http: { host: '0.0.0.0', port: 8080 },
      insecure: true,
    });
  });

  it('names the variable and the allowed values on bad input', () => {
    expect(() => optionsFromEnv({ FOUNDATION_CLUSTER: 'kubernets' })).toThrow(
      /FOUNDATION_CLUSTER.*did you mean "kubernetes"\?.*Allowed values: true, mortal, false, kubernetes/,
    );
    expect(() => optionsFromEnv({ FOUNDATION_CLUSTER: 'dns' })).toThrow(/FOUNDATION_DNS_QUERY.*required/);
    expect(() => optionsFromEnv({ FOUNDATION_PORT: 'abc' })).toThrow(/FOUNDATION_PORT/);
    expect(() => optionsFromEnv({ FOUNDATION_INSECURE: 'maybe' })).toThrow(/FOUNDATION_INSECURE.*Allowed values/);
    expect(() => optionsFromEnv({ FOUNDATION_SECRT: 'x' })).toThrow(/FOUNDATION_SECRT.*did you mean FOUNDATION_SECRET/);
    expect(() => optionsFromEnv({ FOUNDATION_TOPOLOGIES: '{' })).toThrow(/FOUNDATION_TOPOLOGIES.*JSON/);
    // Unrelated application variables are left alone.
    expect(optionsFromEnv({ FOUNDATION_APP_THEME: 'dark' })).toEqual({});
  });

  it('lets explicit options win over the environment', () => {
    const merged = mergeEnv(
      { port: 1, cluster: { strategy: 'local' } },
      optionsFromEnv({ FOUNDATION_PORT: '2', FOUNDATION_CLUSTER: 'true', FOUNDATION_NAME: 'n' }),
    );
    expect(merged).toMatchObject({ port: 1, cluster: { strategy: 'local' }, name: 'n' });
  });
});

describe('config explain', () => {
  const env = {};
  it('mortal', async () => {
    const e = await explainConfig({ cluster: true, port: 4369, secret: 'super-secret' }, env);
    expect(JSON.stringify(e)).not.toContain('super-secret');
    expect(e.mode).toBe('mortal');
    expect(e.topologies.local).toEqual({ strategy: 'local', config: {} });
    expect(formatExplanation(e)).toMatchSnapshot();
  });
  it('apprentice (kubernetes from the environment)', async () => {
    const e = await explainConfig({}, { FOUNDATION_CLUSTER: 'kubernetes', FOUNDATION_K8S_APP_NAME: 'shop', FOUNDATION_PORT: '4369' });
    expect(e).toMatchSnapshot();
  });
  it('apprentice (fly)', async () => {
    expect(await explainConfig({ cluster: { strategy: 'fly', app: 'shop' }, port: 4369 }, env)).toMatchSnapshot();
  });
  it('wizard, secrets redacted', async () => {
    const e = await explainConfig(
      {
        topologies: {
          dataPlane: { strategy: 'gossip', config: { port: 45890, secret: 'gossip-secret' } },
          controlPlane: { strategy: 'static', config: { hosts: ['10.0.0.1:4369'] } },
        },
      },
      env,
    );
    expect(JSON.stringify(e)).not.toContain('gossip-secret');
    expect(formatExplanation(e)).toMatchSnapshot();
  });
});
