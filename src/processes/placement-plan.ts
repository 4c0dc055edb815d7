/**
 * What this node should start, from what it sees: the placement decision of `node.processes`,
 * pure (no timers, no network), so the simulation tests run exactly the decision the nodes run.
 *
 * - Replicated: a copy here of every replicated spec any node publishes, when this node defined
 *   the type (and has not stopped that name itself).
 * - Available singletons this node declared: when no live node holds the name in the registry,
 *   the rendezvous owner among live declarers starts it. The registry drops a node's names when
 *   it goes down, so "nobody holds it" also covers a host that died.
 * - Orphaned children (their host went down without giving them up): the rendezvous owner among
 *   live nodes that defined the type adopts each one nobody holds. The owner may never have seen
 *   the child's spec (its host died before the spec reached it): a node that knows the orphan and
 *   sees it unadopted after `forwardAfterMs` sends it to the owner.
 *
 * Sticky by construction: nothing here moves a worker that runs (active rebalancing is a separate,
 * explicit step), so a node that joins takes nothing over.
 */
import { ownerOf } from './placement.js';
import type { ChildEntry, ProcessTable } from './process-table.js';

/** What the decision reads. */
export interface PlacementView {
  readonly self: string;
  /** This node and every up member (not hidden). */
  readonly live: readonly string[];
  readonly table: ProcessTable;
  /** The node holding `name` in the registry, if any. */
  registered(name: string): string | undefined;
  /** Whether `name` runs (or is starting) on this node. */
  runsHere(name: string): boolean;
  /** Whether this node defined worker type `type`. */
  defines(type: string): boolean;
  /** Replicated names this node stopped and must not restart. */
  stoppedReplicated?: ReadonlySet<string>;
  /** Now, on the clock of the table's `since` stamps. */
  readonly now: number;
  /** An orphan older than this that the owner has not adopted is sent to the owner (it may not know of it). */
  readonly forwardAfterMs: number;
  /**
   * Whether a live host gave up `name` a moment ago: a graceful stop unregisters a singleton, then
   * asks its successor to adopt it with its state; nobody else starts it meanwhile, or the state
   * would be lost to a fresh start. Absent: nothing is being handed off.
   */
  handingOff?(name: string): boolean;
}

export type PlacementAction =
  | { start: 'replicated'; name: string; copy: string; type: string; args: unknown }
  | { start: 'singleton'; name: string; type: string; args: unknown }
  | { start: 'orphan'; name: string; spec: ChildEntry; from: string }
  /** Ask `to`, the owner, to adopt an orphan: only this node may have seen its spec. */
  | { start: 'forward'; name: string; spec: ChildEntry; from: string; to: string };

/** Replicated copies to start here (these need no synced view: a copy per node is always right). */
export function planReplicated(v: PlacementView): PlacementAction[] {
  const out: PlacementAction[] = [];
  for (const name of v.table.names('replicated')) {
    const copy = `${name}@${v.self}`;
    if (v.runsHere(copy) || v.table.own('replicated', name) || v.stoppedReplicated?.has(name)) continue;
    const spec = [...v.table.holders('replicated', name).values()][0];
    if (spec && v.defines(spec.type)) out.push({ start: 'replicated', name, copy, type: spec.type, args: spec.args });
  }
  return out;
}

/** Singletons and orphans this node owns and nobody runs (needs a view synced with every live peer). */
export function planOwned(v: PlacementView): PlacementAction[] {
  const out: PlacementAction[] = [];
  for (const name of v.table.names('singleton')) {
    const mine = v.table.own('singleton', name);
    if (mine?.k !== 'singleton' || mine.consistency !== 'available' || v.runsHere(name) || v.registered(name) !== undefined) continue;
    if (v.handingOff?.(name)) continue;
    const declarers = v.live.filter((n) => v.table.holders('singleton', name).has(n));
    if (ownerOf(name, declarers) === v.self) out.push({ start: 'singleton', name, type: mine.type, args: mine.args });
  }
  for (const [name, spec, from, since] of v.table.orphans()) {
    if (v.runsHere(name) || v.registered(name) !== undefined) continue;
    const eligible = v.live.filter((n) => v.table.holders('type', spec.type).has(n));
    const owner = ownerOf(name, eligible);
    if (owner === v.self) out.push({ start: 'orphan', name, spec, from });
    else if (owner !== undefined && v.now - since >= v.forwardAfterMs) out.push({ start: 'forward', name, spec, from, to: owner });
  }
  return out;
}
