/**
 * The handoff grace (src/processes/handoffs.ts): a singleton that a live host gave up is left to
 * its handoff for HANDOFF_GRACE_MS, so that the owner's placement does not start it fresh between
 * the host's unregistration and its adopt request (which lost the handed-off state once, under
 * CI load). Driven by a fake clock, and through the placement decision itself.
 */
import { describe, expect, it } from 'vitest';
import { HANDOFF_GRACE_MS, Handoffs } from '../../../src/processes/handoffs.js';
import { rankFor } from '../../../src/processes/placement.js';
import { type PlacementView, planOwned } from '../../../src/processes/placement-plan.js';
import { ProcessTable, type ProcessTableMessage } from '../../../src/processes/process-table.js';

const up =
  (...nodes: string[]) =>
  (n: string) =>
    nodes.includes(n);

describe('handoff grace', () => {
  it('holds a singleton a live host gave up for HANDOFF_GRACE_MS, until its adoption, or until the host goes down', () => {
    let now = 0;
    const h = new Handoffs('owner', () => now);
    h.registered('s', 'host');
    expect(h.unregistered('s', up('host'))).toBe(true);
    now = HANDOFF_GRACE_MS - 1;
    expect(h.handingOff('s')).toBe(true);
    now = HANDOFF_GRACE_MS;
    expect(h.handingOff('s')).toBe(false);
    // Adopted by its successor: registered again, nothing pending.
    h.registered('s', 'host');
    h.unregistered('s', up('host'));
    h.registered('s', 'owner');
    expect(h.handingOff('s')).toBe(false);
    expect(h.lastHost('s')).toBe('owner');
    // Its host goes down during the grace: placed at once.
    h.registered('s', 'host');
    h.unregistered('s', up('host'));
    h.hostDown('host');
    expect(h.handingOff('s')).toBe(false);
  });

  it('no grace for a name this node gave up, a dead host, or one never seen running', () => {
    const h = new Handoffs('owner', () => 0);
    h.registered('a', 'owner');
    expect(h.unregistered('a', up('owner'))).toBe(false);
    h.registered('b', 'host');
    expect(h.unregistered('b', up())).toBe(false);
    expect(h.unregistered('c', up('host'))).toBe(false);
    for (const n of ['a', 'b', 'c']) expect(h.handingOff(n)).toBe(false);
  });

  it('the owner does not start a singleton being handed off, and starts it once the grace is over', () => {
    // Two nodes declared the singleton; the one rendezvous hashing does not pick ran it, and is stopping.
    const nodes = ['n1', 'n2'];
    const owner = rankFor('s', nodes)[0] as string;
    const host = nodes.find((n) => n !== owner) as string;
    // Both nodes' process tables, each declaring the singleton, joined by a queue pumped to the end.
    const queue: Array<[from: string, to: string | null, m: ProcessTableMessage]> = [];
    const tables = new Map(
      nodes.map((n) => [
        n,
        new ProcessTable(
          n,
          1,
          (to, m) => queue.push([n, to, m]),
          () => {},
        ),
      ]),
    );
    for (const [n, t] of tables) {
      for (const peer of nodes) if (peer !== n) t.peerUp(peer);
      t.setOwn('w', { k: 'type' });
      t.setOwn('s', { k: 'singleton', type: 'w', args: null, consistency: 'available' });
      t.flush();
    }
    for (let m = queue.shift(); m !== undefined; m = queue.shift()) {
      const [from, to, msg] = m;
      for (const n of nodes) if (n !== from && (to === null || to === n)) tables.get(n)?.receive(from, 1, msg);
    }
    const table = tables.get(owner) as ProcessTable;
    expect(table.holders('singleton', 's').size).toBe(2);
    let now = 0;
    const handoffs = new Handoffs(owner, () => now);
    handoffs.registered('s', host);
    handoffs.unregistered('s', up(host));
    const view = (): PlacementView => ({
      self: owner,
      live: nodes,
      table,
      registered: () => undefined,
      runsHere: () => false,
      defines: () => true,
      now,
      forwardAfterMs: 1000,
      handingOff: (name) => handoffs.handingOff(name),
    });
    expect(planOwned(view())).toEqual([]);
    now = HANDOFF_GRACE_MS;
    expect(planOwned(view())).toEqual([{ start: 'singleton', name: 's', type: 'w', args: null }]);
  });
});
