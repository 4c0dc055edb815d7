/**
 * The `dns` and `dns-srv` strategies through the shared compliance suite, against a real
 * dnsmasq on 127.0.0.1 (test/helpers/dnsmasq.ts). Broken lookups are a SIGSTOPped dnsmasq
 * (timeouts); SERVFAIL is covered below and in dns.test.ts.
 */
import { describe, expect, it } from 'vitest';
import { DnsStrategy } from '../../src/discovery/dns.js';
import { DnsSrvStrategy } from '../../src/discovery/dns-srv.js';
import type { Strategy } from '../../src/discovery/strategy.js';
import { describeStrategyCompliance, RecordingContext, until } from '../compliance/strategy-compliance.js';
import { Dnsmasq, type SrvRecord, skipWithoutDnsmasq } from '../helpers/dnsmasq.js';

const self = { name: 'self', address: '127.0.0.10:4000', incarnation: 1 };
const fast = { pollIntervalMs: 100, timeoutMs: 100, tries: 1 };
const SERVICE = '_foundation._tcp.app.test';

function dnsSetup() {
  return async () => {
    const d = await Dnsmasq.start({ hosts: { 'peers.test': ['127.0.0.10', '127.0.0.11', 'fd00::12'] } });
    let next = 20;
    return {
      dnsmasq: d,
      self,
      expectedPeers: ['127.0.0.11:4000', '[fd00::12]:4000'],
      create: () => new DnsStrategy({ query: 'peers.test', port: 4000, servers: [d.server], ...fast }),
      breakLookups: async () => d.pause(),
      restoreLookups: () => d.resume(),
      addPeer: async () => {
        const ip = `127.0.0.${next++}`;
        await d.addHost('peers.test', ip);
        return `${ip}:4000`;
      },
      removePeer: (address: string) => d.removeHost('peers.test', address.replace(/:4000$/, '')),
      teardown: () => d.stop(),
    };
  };
}

function srvSetup() {
  return async () => {
    const srv: SrvRecord[] = [
      { name: SERVICE, target: 'pod0.app.test', port: 4000 },
      { name: SERVICE, target: 'pod1.app.test', port: 4000 },
      { name: SERVICE, target: 'pod2.app.test', port: 4001 },
    ];
    const d = await Dnsmasq.start({
      hosts: { 'pod0.app.test': ['127.0.0.10'], 'pod1.app.test': ['127.0.0.21'], 'pod2.app.test': ['127.0.0.22', 'fd00::22'] },
      srv,
    });
    let next = 30;
    return {
      dnsmasq: d,
      self,
      expectedPeers: ['127.0.0.21:4000', '127.0.0.22:4001', '[fd00::22]:4001'],
      create: () => new DnsSrvStrategy({ service: SERVICE, servers: [d.server], ...fast }),
      breakLookups: async () => d.pause(),
      restoreLookups: () => d.resume(),
      addPeer: async () => {
        const n = next++;
        await d.addHost(`pod${n}.app.test`, `127.0.0.${n}`);
        await d.setSrv([...d.current().srv, { name: SERVICE, target: `pod${n}.app.test`, port: 4000 }]);
        return `127.0.0.${n}:4000`;
      },
      removePeer: async (address: string) => {
        const n = Number(/^127\.0\.0\.(\d+):/.exec(address)?.[1]);
        await d.setSrv(d.current().srv.filter((s) => s.target !== `pod${n}.app.test`));
        await d.removeHost(`pod${n}.app.test`);
      },
      teardown: () => d.stop(),
    };
  };
}

const skip = skipWithoutDnsmasq();

describe.skipIf(skip)('dns strategies against dnsmasq', () => {
  describeStrategyCompliance({
    name: 'dns',
    setup: dnsSetup(),
    invalidConfigs: [
      { config: {}, key: 'query', create: (c) => new DnsStrategy(c) },
      { config: { query: 'peers.test' }, key: 'port', create: (c) => new DnsStrategy(c) },
      { config: { query: 'peers.test', port: 0 }, key: 'port', create: (c) => new DnsStrategy(c) },
      { config: { query: 'peers.test', port: 4000, family: 'v4' }, key: 'family', create: (c) => new DnsStrategy(c) },
      { config: { query: 'peers.test', port: 4000, servers: ['dns.example'] }, key: 'servers[0]', create: (c) => new DnsStrategy(c) },
    ],
  });

  describeStrategyCompliance({
    name: 'dns-srv',
    setup: srvSetup(),
    invalidConfigs: [
      { config: {}, key: 'service', create: (c) => new DnsSrvStrategy(c) },
      { config: { service: 'bad name!' }, key: 'service', create: (c) => new DnsSrvStrategy(c) },
      { config: { service: SERVICE, resolveTargets: 'yes' }, key: 'resolveTargets', create: (c) => new DnsSrvStrategy(c) },
      { config: { service: SERVICE, pollIntervalMs: 5 }, key: 'pollIntervalMs', create: (c) => new DnsSrvStrategy(c) },
    ],
  });

  // The suite breaks lookups with timeouts; SERVFAIL must be "unknown" just the same.
  for (const [name, setup] of [
    ['dns', dnsSetup()],
    ['dns-srv', srvSetup()],
  ] as const) {
    it(`${name}: SERVFAIL keeps the peers and reports the failure`, async () => {
      const env = await setup();
      const s: Strategy = env.create();
      const ctx = new RecordingContext(env.self);
      const expected = [...env.expectedPeers].sort();
      try {
        await s.start(ctx);
        await until(() => JSON.stringify(ctx.latest()) === JSON.stringify(expected), 5000, 'initial peers');
        const before = ctx.peerSets.length;
        await env.dnsmasq.servfail();
        await until(() => ctx.failures.length >= 3, 5000, 'three failed lookups');
        expect(ctx.peerSets.length).toBe(before);
        // (Restarting dnsmasq into SERVFAIL mode may add a brief ECONNREFUSED first.)
        expect(ctx.failures.some((f) => f.message.includes('ESERVFAIL'))).toBe(true);
        await env.dnsmasq.restore();
        await until(() => ctx.peerSets.length > before, 5000, 'peers after SERVFAIL ends');
        expect(ctx.latest()).toEqual(expected);
      } finally {
        ctx.abort.abort();
        await s.stop();
        await env.teardown();
      }
    });
  }
});
