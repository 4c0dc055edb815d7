/**
 * Mutual discovery (Strategy.mutual): when both ends of a pair find each other, only the smaller
 * address dials, so a forming cluster opens one connection per pair. Real nodes in this process
 * (the built library: the heartbeat worker runs from dist/), found through the `local` strategy.
 */
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import type { Foundation as FoundationApi, FoundationNode } from '../../src/index.js';
import { silentLogger } from '../compliance/strategy-compliance.js';

const DIST_FOUNDATION = fileURLToPath(new URL('../../dist/foundation.js', import.meta.url));
const BUILT = existsSync(DIST_FOUNDATION);
const CONNECT_CHANNEL = 'foundation:discovery:connect';

describe.skipIf(!BUILT)(`mutual discovery dials once per pair${BUILT ? '' : ' (skipped: run npm run build)'}`, () => {
  let nodes: FoundationNode[] = [];
  let dir: string | undefined;

  afterEach(async () => {
    await Promise.allSettled(nodes.map((n) => n.stop()));
    nodes = [];
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('only the smaller address of each pair dials, and every pair comes up', async () => {
    const { Foundation } = (await import(DIST_FOUNDATION)) as { Foundation: typeof FoundationApi };
    dir = mkdtempSync(join(tmpdir(), 'foundation-mutual-'));
    const attempts: Array<{ node: string; peer: string; result: string }> = [];
    const onConnect = (m: unknown) => attempts.push(m as { node: string; peer: string; result: string });
    subscribe(CONNECT_CHANNEL, onConnect);
    try {
      const names = ['m1', 'm2', 'm3'];
      nodes = await Promise.all(
        names.map((name) =>
          Foundation.start({
            name,
            host: '127.0.0.1',
            port: 0,
            secret: 'mutual-test-secret',
            logger: silentLogger,
            topologies: { local: { strategy: 'local', config: { dir, scanIntervalMs: 100 } } },
          }),
        ),
      );
      const deadline = Date.now() + 5000;
      const full = () => nodes.every((n) => n.cluster.members().filter((m) => m.status === 'up').length === names.length - 1);
      while (!full() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      expect(full()).toBe(true);
      // Past the larger address's wait (at most 300 ms): no late second dial either.
      await new Promise((r) => setTimeout(r, 500));
      const addressOf = new Map(nodes.map((n) => [n.id.name, n.id.address]));
      const dials = attempts.filter((a) => addressOf.has(a.node));
      // A pair may also come up through a transitive join (a member tells the others about a
      // newcomer) before discovery's next scan: then that pair has no discovery dial. What must
      // hold: discovery dials only from the smaller address, never twice for one pair, and one
      // link per pair in all.
      expect(dials.length).toBeGreaterThanOrEqual(1);
      for (const a of dials) expect((addressOf.get(a.node) as string) < a.peer, `${a.node} (${addressOf.get(a.node)}) dialed ${a.peer}`).toBe(true);
      const okPairs = dials.filter((a) => a.result === 'ok').map((a) => `${addressOf.get(a.node)}>${a.peer}`);
      expect(new Set(okPairs).size).toBe(okPairs.length);
      const links = nodes.map((n) => n.mesh.stats());
      expect(links.reduce((sum, s) => sum + s.linksOpened, 0)).toBe(2 * 3);
      expect(links.reduce((sum, s) => sum + s.linksReplaced, 0)).toBe(0);
    } finally {
      unsubscribe(CONNECT_CHANNEL, onConnect);
    }
  });
});
