/**
 * `foundation config explain` and `Foundation.start` agree on real starts: over generated options
 * and environments (run on 127.0.0.1 with free ports, no multicast), start refuses exactly what
 * explain refuses, with the same error, and starts what explain accepts. Runs `dist/`.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { explainConfig } from '../../dist/config/explain.js';
import { Foundation, type FoundationNode, type FoundationOptions } from '../../dist/index.js';
import { cookieArb, cookieFor, envArb, optionsArb, outcome } from '../helpers/option-arbitraries.js';

const silent = { debug() {}, info() {}, warn() {}, error() {}, child: () => silent };
const scratch = mkdtempSync(join(tmpdir(), 'foundation-config-test-'));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

/** Only what may run here for real: loopback, free ports, no multicast discovery, no TLS files, no Redis. */
const safeCase = fc.record({
  options: optionsArb.map((o): FoundationOptions => {
    const { port: _port, host: _host, tls: _tls, pubsub, ...rest } = o;
    // Mortal mode would run mdns/gossip: keep shorthands (static to 127.0.0.1:1, or refused ones) and false.
    let cluster = rest.cluster && typeof rest.cluster === 'object' ? rest.cluster : false;
    // A dns shorthand that would start would query the system resolver: keep only its refused form.
    if (cluster && cluster.strategy === 'dns') cluster = { strategy: 'dns', query: cluster.query };
    let http = rest.http;
    // Valid addresses become a free port on loopback; refused shapes stay as generated.
    if (typeof http === 'number' && http >= 0 && http <= 65535) http = 0;
    if (typeof http === 'string' && http !== 'nope') http = '127.0.0.1:0';
    if (http && typeof http === 'object' && !('x' in http) && http.host !== '') http = { port: 0 };
    // A redis adapter that would start connects to a Redis server: keep only the refused forms.
    const keepPubsub = pubsub !== undefined && (pubsub.adapter !== 'redis' || pubsub.redis?.url === 'http://x');
    return { ...rest, ...(keepPubsub ? { pubsub } : {}), cluster, http, host: '127.0.0.1', port: 0 };
  }),
  // FOUNDATION_HTTP and FOUNDATION_PORT would bind fixed ports.
  env: envArb.map(({ FOUNDATION_HTTP: _http, FOUNDATION_PORT: _port, ...rest }) => rest),
  cookie: cookieArb,
});

describe('config explain vs a real start', () => {
  it('start refuses exactly what explain refuses, with the same error (property, 80 cases started for real)', { timeout: 180_000 }, async () => {
    const saved = { ...process.env };
    let run = 0;
    let started = 0;
    let refused = 0;
    try {
      await fc.assert(
        fc.asyncProperty(safeCase, async ({ options, env, cookie }) => {
          const input: FoundationOptions = { ...options, cookieFile: cookieFor(scratch, cookie, run++), logger: silent, clusterName: `cfg-${process.pid}` };
          // Foundation.start reads process.env: give it exactly this case's environment.
          for (const k of Object.keys(process.env)) if (k.startsWith('FOUNDATION_') || k === 'NODE_ENV') delete process.env[k];
          Object.assign(process.env, env);
          const explained = await outcome(() => explainConfig(input, process.env));
          let node: FoundationNode | undefined;
          const real = await outcome(async () => {
            node = await Foundation.start(input);
          });
          await node?.stop();
          if (real === 'ok') started++;
          else refused++;
          expect(real).toBe(explained);
        }),
        { numRuns: 80, seed: 11 },
      );
    } finally {
      for (const k of Object.keys(process.env)) if (!(k in saved)) delete process.env[k];
      Object.assign(process.env, saved);
    }
    process.stderr.write(`[config explain vs start] ${started} started, ${refused} refused, all as explain said\n`);
    // Both outcomes must occur, or the comparison proves little.
    expect(started).toBeGreaterThan(2);
    expect(refused).toBeGreaterThan(2);
  });
});
