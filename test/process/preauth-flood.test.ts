/**
 * What 1,000 unauthenticated connections can make a node hold (issue 7, item 9). A real 2-node
 * cluster on 127.0.0.1; the test floods one node's mesh port and reads that node's RSS from
 * /proc. Run after `npm run build` (the `test` script does it).
 *
 * Bounds asserted (and stated in docs/guides/security.md):
 * - RSS grows by less than FLOOD_GROWTH_BOUND_MB while the flood runs;
 * - after the connections close and a full GC, RSS is within RETURN_BOUND_MB of where it started,
 *   also after a second flood (nothing accumulates beyond that bound), and the JS heap is back
 *   within HEAP_USED_RETURN_BOUND_MB;
 * - the two members stay up (no down event) and requests between them work during the flood;
 * - the flooded node writes at most LOG_LINES_BOUND lines to stderr during the flood.
 */
import { readFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { isUp, type NodeProc, TestCluster } from '../helpers/cluster.js';

const SECRET = 'preauth-flood-secret';
const base = { secret: SECRET, host: '127.0.0.1' };
const CONNECTIONS = 1000;
/** The default maxFrameBytes: the largest frame a connection could declare before the pre-auth limit. */
const MAX_FRAME_BYTES = 1024 * 1024;
/** The pre-auth frame limit (HANDSHAKE_MAX_FRAME_BYTES): the largest frame still allowed to trickle in. */
const PREAUTH_FRAME_BYTES = 8 * 1024;
const FLOOD_GROWTH_BOUND_MB = 64;
const RETURN_BOUND_MB = 32;
const HEAP_USED_RETURN_BOUND_MB = 4;
const LOG_LINES_BOUND = 10;

function rssMb(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!m) throw new Error(`no VmRSS for pid ${pid}`);
  return Number(m[1]) / 1024;
}

/** RSS after a full GC in the node (it runs with --expose-gc), and the node's heap figures then (MB). */
async function settledRssMb(proc: NodeProc): Promise<{ rss: number; heap: string; heapUsed: number }> {
  let usage: NodeJS.MemoryUsage | undefined;
  for (let i = 0; i < 4; i++) {
    const p = proc.waitForNext((e) => e.event === 'memory', 5000, 'memory');
    proc.send({ cmd: 'memory' });
    const e = await p;
    expect(e.gc).toBe(true);
    usage = e.memory as NodeJS.MemoryUsage;
    await new Promise((r) => setTimeout(r, 500));
  }
  const mb = (n: number | undefined) => ((n ?? 0) / 2 ** 20).toFixed(1);
  return {
    rss: rssMb(proc.child.pid as number),
    heap: `heap ${mb(usage?.heapUsed)}/${mb(usage?.heapTotal)}, external ${mb(usage?.external)}`,
    heapUsed: (usage?.heapUsed ?? 0) / 2 ** 20,
  };
}

interface FloodResult {
  connected: number;
  /** Largest number of this wave's connections open at once (client side). */
  mostOpen: number;
}

/**
 * Opens `n` connections to `port`; each sends a frame header declaring `declared` bytes (type
 * HELLO), then trickles `trickle` bytes every `everyMs` until the node closes it. Resolves once
 * every connection is closed.
 */
async function flood(port: number, n: number, declared: number, trickle: number, everyMs: number): Promise<FloodResult> {
  let connected = 0;
  let open = 0;
  let mostOpen = 0;
  let closed = 0;
  const sockets: Socket[] = [];
  const allClosed = new Promise<void>((resolve) => {
    for (let i = 0; i < n; i++) {
      const s = connect({ port, host: '127.0.0.1' });
      sockets.push(s);
      let timer: NodeJS.Timeout | undefined;
      s.on('error', () => {});
      s.on('connect', () => {
        connected++;
        open++;
        mostOpen = Math.max(mostOpen, open);
        const header = Buffer.alloc(5);
        header.writeUInt32BE(declared, 0);
        header[4] = 1;
        s.write(header);
        timer = setInterval(() => s.write(Buffer.alloc(trickle, 0x61)), everyMs);
      });
      s.on('close', () => {
        if (timer) {
          clearInterval(timer);
          open--;
        }
        if (++closed === n) resolve();
      });
    }
  });
  const guard = setTimeout(() => {
    for (const s of sockets) s.destroy();
  }, 60_000);
  await allClosed;
  clearTimeout(guard);
  return { connected, mostOpen };
}

async function requestWorks(from: NodeProc, to: string): Promise<void> {
  const p = from.waitForNext((e) => e.event === 'reply' || e.event === 'reply-error', 5000, 'reply');
  from.send({ cmd: 'request', to, topic: 'echo', payload: 'during the flood' });
  expect(await p).toMatchObject({ event: 'reply', value: 'during the flood' });
}

describe('pre-authentication flood (multi-process)', () => {
  const cluster = new TestCluster();
  afterEach(() => cluster.stopAll());

  it(`${CONNECTIONS} unauthenticated connections declaring maximal frames, then ${CONNECTIONS} at the pre-auth limit, twice: bounded RSS, given back, members stay up, few log lines`, async () => {
    const env = { NODE_OPTIONS: '--expose-gc' };
    const a = await cluster.start('a', { ...base, name: 'a' }, env);
    const b = await cluster.start('b', { ...base, name: 'b', cluster: { strategy: 'static', hosts: [a.id.address] } }, env);
    await Promise.all([a.proc.waitFor(isUp('b')), b.proc.waitFor(isUp('a'))]);
    await requestWorks(b.proc, 'a');
    const port = Number(a.id.address.split(':').pop());
    const pid = a.proc.child.pid as number;

    const start = await settledRssMb(a.proc);
    let peak = start.rss;
    const sampler = setInterval(() => {
      peak = Math.max(peak, rssMb(pid));
    }, 50);
    const stderrAtStart = a.proc.stderr.length;

    // Requests between the members keep working while the flood runs.
    let requests = 0;
    let requestError: unknown;
    let flooding = true;
    const requester = (async () => {
      while (flooding) {
        try {
          await requestWorks(b.proc, 'a');
          await requestWorks(a.proc, 'b');
          requests += 2;
        } catch (err) {
          requestError = err;
          return;
        }
        await new Promise((r) => setTimeout(r, 200));
      }
    })();

    const rounds: Array<{ maximal: FloodResult; atLimit: FloodResult; peak: number; settled: { rss: number; heap: string; heapUsed: number } }> = [];
    const floodStarted = Date.now();
    try {
      // Two identical rounds: the second shows that what the first left in RSS is reused, not leaked.
      for (let round = 0; round < 2; round++) {
        // 1. What the adversarial test did: a maximal frame declared, then its body trickled in,
        //    4 KiB every 100 ms (before the pre-auth limit, each held ~200 KiB by the 5 s timeout).
        const maximal = await flood(port, CONNECTIONS, MAX_FRAME_BYTES, 4096, 100);
        // 2. The worst a stranger can still do: a frame the pre-auth limit allows, trickled so that
        //    it never completes before the handshake timeout (5 s).
        const atLimit = await flood(port, CONNECTIONS, PREAUTH_FRAME_BYTES, 128, 250);
        rounds.push({ maximal, atLimit, peak, settled: await settledRssMb(a.proc) });
      }
    } finally {
      flooding = false;
      await requester;
      clearInterval(sampler);
    }
    const floodMs = Date.now() - floodStarted;
    const floodLog = a.proc.stderr.slice(stderrAtStart).split('\n').filter(Boolean);
    const stats = await (async () => {
      const p = a.proc.waitForNext((e) => e.event === 'stats', 3000, 'stats');
      a.proc.send({ cmd: 'stats' });
      return (await p).stats as { handshakeFailures: Record<string, number> };
    })();
    const failures = stats.handshakeFailures;
    const [, second] = rounds as [(typeof rounds)[0], (typeof rounds)[0]];
    console.log(
      `pre-auth flood: RSS ${start.rss.toFixed(1)} MB before (${start.heap}); ` +
        rounds
          .map(
            (r, i) =>
              `round ${i + 1}: peak ${r.peak.toFixed(1)} MB (+${(r.peak - start.rss).toFixed(1)}), ${r.settled.rss.toFixed(1)} MB after close + GC (${r.settled.heap}), ` +
              `most open at once ${r.maximal.mostOpen} / ${r.atLimit.mostOpen}`,
          )
          .join('; ') +
        `; ${floodMs} ms; failures ${JSON.stringify(failures)}; ${floodLog.length} stderr lines; ${requests} requests during the flood`,
    );

    expect(requestError).toBeUndefined();
    expect(requests).toBeGreaterThan(0);
    for (const r of rounds) {
      expect(r.maximal.connected).toBe(CONNECTIONS);
      expect(r.atLimit.connected).toBe(CONNECTIONS);
    }
    expect(peak - start.rss).toBeLessThan(FLOOD_GROWTH_BOUND_MB);
    // Nothing stays held: the JS heap in use is back where it was, and RSS after close + GC is
    // near the start. (V8 and malloc keep some pages they grew into under the churn; a second
    // flood reuses them instead of growing further.)
    expect(second.settled.heapUsed - start.heapUsed).toBeLessThan(HEAP_USED_RETURN_BOUND_MB);
    expect(second.settled.rss - start.rss).toBeLessThan(RETURN_BOUND_MB);
    // (No bound on the second round's own increment: glibc's arenas return pages unevenly under
    // load, 4-17 MB seen; the cumulative bound above after two floods is what must hold.)
    // Every connection is counted once: refused at the cap, or failed (bad frame, timeout).
    const counted = (failures['over-capacity'] ?? 0) + (failures.protocol ?? 0) + (failures.timeout ?? 0);
    expect(counted).toBe(4 * CONNECTIONS);
    // The waves tried far more concurrent handshakes than the cap admits.
    expect(failures['over-capacity'] ?? 0).toBeGreaterThan(0);
    expect(floodLog.length).toBeLessThanOrEqual(LOG_LINES_BOUND);
    for (const n of [a, b]) expect(n.proc.events.some((e) => e.event === 'down')).toBe(false);
  }, 120_000);
});
