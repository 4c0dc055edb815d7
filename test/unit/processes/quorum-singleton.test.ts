/**
 * The quorum singleton driver on real meshes: three Foundation nodes in this process, on
 * loopback, each with its own `QuorumLeases` on a test topic (beside whatever the node runs
 * itself), with real timers and a short lease. One node holds; a graceful stop hands over within
 * a round trip or two; a stopped node's lease runs out and another takes over with a greater
 * token; malformed messages are dropped and counted; bad options name their key.
 */
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import type { FoundationNode } from '../../../src/api.js';
import { ErrorCodes } from '../../../src/errors.js';
import type * as FoundationModule from '../../../src/foundation.js';
import { type QuorumLeaseHandle, QuorumLeases, resolveQuorumConfig } from '../../../src/processes/quorum-singleton.js';
import type { Logger } from '../../../src/util/logger.js';

// The nodes come from the built library (the heartbeat worker runs from dist/); the driver under test from the source.
const DIST_FOUNDATION = fileURLToPath(new URL('../../../dist/foundation.js', import.meta.url));
const BUILT = existsSync(DIST_FOUNDATION);

const silent: Logger = { debug() {}, info() {}, warn() {}, error() {}, child: () => silent };
const LEASE = 400;
const TOPIC = '$qs.test';

async function until(pred: () => boolean, ms: number, what: string): Promise<void> {
  const deadline = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

interface Voter {
  node: FoundationNode;
  mesh: NonNullable<ReturnType<typeof FoundationModule.meshOf>>;
  leases: QuorumLeases;
  handle: QuorumLeaseHandle;
  events: Array<{ at: number; type: string; token: number; reason?: string }>;
}

describe.skipIf(!BUILT)(`quorum singleton driver on three in-process meshes${BUILT ? '' : ' (skipped: run npm run build)'}`, () => {
  let nodes: FoundationNode[] = [];
  let dir: string | undefined;
  afterEach(async () => {
    await Promise.allSettled(nodes.map((n) => n.stop()));
    nodes = [];
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  async function cluster(): Promise<Voter[]> {
    const { Foundation, meshOf } = (await import(DIST_FOUNDATION)) as typeof FoundationModule;
    dir = mkdtempSync(join(tmpdir(), 'foundation-quorum-'));
    const names = ['q1', 'q2', 'q3'];
    nodes = await Promise.all(
      names.map((name) =>
        Foundation.start({
          name,
          host: '127.0.0.1',
          port: 0,
          secret: 'quorum-test-secret',
          logger: silent,
          topologies: { local: { strategy: 'local', config: { dir: dir as string, scanIntervalMs: 100 } } },
        }),
      ),
    );
    await until(() => nodes.every((n) => n.cluster.members().filter((m) => m.status === 'up').length === 2), 10_000, 'a full mesh');
    return nodes.map((node) => {
      const mesh = meshOf(node);
      if (!mesh) throw new Error('no mesh');
      const leases = new QuorumLeases(mesh, silent, { leaseMs: LEASE, topic: TOPIC });
      const handle = leases.claim('nightly-report', { clusterSize: 3 });
      const events: Voter['events'] = [];
      handle.on('acquired', ({ token }) => events.push({ at: Date.now(), type: 'acquired', token }));
      handle.on('lost', ({ token, reason }) => events.push({ at: Date.now(), type: 'lost', token, reason }));
      return { node, mesh, leases, handle, events };
    });
  }

  const holders = (vs: Voter[]) => vs.filter((v) => v.handle.isHolder());

  it('one holds and every node knows it; when its node dies the others take over once its grants ran out, with a greater token', async () => {
    const vs = await cluster();
    // Start quarantine (one lease) plus a claim round trip; a loaded machine gets a wide margin.
    await until(() => holders(vs).length === 1, 10 * LEASE, 'a holder');
    const first = holders(vs)[0] as Voter;
    const token1 = first.handle.token() as number;
    expect(Number.isSafeInteger(token1)).toBe(true);
    // Renewals keep it; nobody else holds meanwhile.
    await new Promise((r) => setTimeout(r, 3 * LEASE));
    expect(holders(vs)).toEqual([first]);
    for (const v of vs) expect(v.handle.holder()).toEqual({ node: first.node.id.name, token: token1 });
    expect(first.handle.stats().renewals).toBeGreaterThan(3);
    expect(vs.filter((v) => v !== first).every((v) => v.handle.stats().claims === 0)).toBe(true);

    // The holder's node stops without releasing (its mesh goes; its lease handle is never stopped).
    first.handle.removeAllListeners();
    const diedAt = Date.now();
    await first.node.stop();
    const rest = vs.filter((v) => v !== first);
    await until(() => holders(rest).length === 1, 10 * LEASE, 'a successor');
    const failover = Date.now() - diedAt;
    const second = holders(rest)[0] as Voter;
    expect(second.handle.token() as number).toBeGreaterThan(token1);
    // The grants the dead holder renewed last had to run out: at least a lease minus one renewal period.
    expect(failover).toBeGreaterThanOrEqual(LEASE - LEASE / 3 - 20);
    console.log(`quorum singleton: failover after the holder's node stopped: ${failover} ms (lease ${LEASE} ms)`);
    await first.leases.stop();
  });

  it('a graceful stop hands over within a few round trips; one voter of three left holds nothing', async () => {
    const vs = await cluster();
    await until(() => holders(vs).length === 1, 10 * LEASE, 'a holder');
    const first = holders(vs)[0] as Voter;
    const token1 = first.handle.token() as number;
    const stoppedAt = Date.now();
    await first.handle.stop();
    expect(first.events.at(-1)).toMatchObject({ type: 'lost', reason: 'stopped', token: token1 });
    expect(first.handle.isHolder()).toBe(false);
    const rest = vs.filter((v) => v !== first);
    await until(() => holders(rest).length === 1, 10 * LEASE, 'a successor');
    const handover = Date.now() - stoppedAt;
    const second = holders(rest)[0] as Voter;
    expect(second.handle.token() as number).toBeGreaterThan(token1);
    console.log(`quorum singleton: graceful handover in ${handover} ms (lease ${LEASE} ms)`);
    // Its node goes too: the last voter alone is no majority of 3.
    const last = rest.find((v) => v !== second) as Voter;
    second.handle.removeAllListeners();
    await second.node.stop();
    await second.leases.stop();
    await new Promise((r) => setTimeout(r, 3 * LEASE));
    expect(holders([last])).toEqual([]);
    expect(last.handle.stats().voters).toBe(1);
    expect(last.handle.holder()).toBeUndefined();
  });

  it('drops and counts malformed messages; bad options name their key', async () => {
    const vs = await cluster();
    const [a, b] = vs as [Voter, Voter];
    const mesh = a.mesh;
    for (const junk of [null, 7, { n: 'nightly-report' }, { n: 'nightly-report', m: { t: 'claim', r: -1 } }, { n: 5, m: { t: 'nv' } }]) {
      mesh.send(b.node.id.name, TOPIC, junk);
    }
    await until(() => b.leases.stats().messagesDropped === 5, 5000, 'five drops');
    expect(() => a.leases.claim('nightly-report', { clusterSize: 3 })).toThrow(/already declares/);
    expect(() => a.leases.claim('x', { clusterSize: 0 })).toThrow(expect.objectContaining({ code: ErrorCodes.CONFIG_INVALID, key: 'clusterSize' }));
    expect(() => a.leases.claim('x', { clusterSize: 3, leaseMs: 1000, renewEveryMs: 600 })).toThrow(expect.objectContaining({ key: 'renewEveryMs' }));
    expect(() => a.leases.claim('x', { clusterSize: 3, maxClockDrift: 0.5 })).toThrow(expect.objectContaining({ key: 'maxClockDrift' }));
    expect(() => a.leases.claim('', { clusterSize: 3 })).toThrow(expect.objectContaining({ key: 'name' }));

    // Two nodes declare a singleton sized for one: both refuse to claim it, and say why.
    const errors: Error[] = [];
    const small = [a, b].map((v) => {
      const h = v.leases.claim('solo', { clusterSize: 1 });
      h.on('misconfigured', (err) => errors.push(err));
      return h;
    });
    await until(() => errors.length >= 2, 5000, 'two misconfiguration reports');
    expect(errors.every((e) => (e as { code?: string }).code === ErrorCodes.QUORUM_MISCONFIGURED && /2 nodes declare/.test(e.message))).toBe(true);
    await new Promise((r) => setTimeout(r, 3 * LEASE));
    expect(small.map((h) => h.stats().claims)).toEqual([0, 0]);
    expect(small.some((h) => h.isHolder())).toBe(false);
  });
});

describe('quorum config', () => {
  it('defaults: renew every third of the lease, stagger one renewal, 1% drift', () => {
    expect(resolveQuorumConfig({ clusterSize: 3 })).toEqual({
      clusterSize: 3,
      leaseMs: 2000,
      renewEveryMs: 2000 / 3,
      maxClockDrift: 0.01,
      claimStaggerMs: 2000 / 3,
    });
  });
});
