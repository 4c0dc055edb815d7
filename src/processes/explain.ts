/**
 * The read-only views of `node.processes`: where a name should run and why (`explain`), and which
 * registry entries are workers (`list`). Pure functions of the replicated tables, so every node
 * answers the same.
 */

import { rankFor } from './placement.js';
import type { ProcessTable } from './process-table.js';
import type { ProcessExplanation, ProcessInfo } from './types.js';

/** What `explain` says about `name`'s placement, before its host's own figures are added. */
export type PlacementExplanation = Omit<ProcessExplanation, 'name' | 'node' | 'registry' | 'restarts' | 'mailboxDepth'>;

/**
 * Why `name` runs where it does: its kind, the placement rule, and the candidate nodes in order,
 * from the process table as this node holds it. `registered`: the registry knows the name (for a
 * name that is no worker). `quorumToken`: the fencing token of a quorum singleton's lease, if
 * this node sees its holder.
 */
export function explainPlacement(
  name: string,
  table: ProcessTable,
  live: readonly string[],
  registered: boolean,
  quorumToken: (name: string) => number | undefined,
): PlacementExplanation {
  const at = name.lastIndexOf('@');
  const singleton = [...table.holders('singleton', name).values()][0];
  const child = [...table.holders('child', name).values()][0] ?? table.orphans().find(([n]) => n === name)?.[1];
  const replicated = at > 0 ? table.holders('replicated', name.slice(0, at)).get(name.slice(at + 1)) : undefined;
  let base: Omit<ProcessExplanation, 'name' | 'node' | 'registry' | 'restarts' | 'mailboxDepth'>;
  if (singleton?.k === 'singleton') {
    const declarers = live.filter((n) => table.holders('singleton', name).has(n));
    base =
      singleton.consistency === 'quorum'
        ? {
            kind: 'singleton',
            type: singleton.type,
            consistency: 'quorum',
            placement: `quorum lease: a majority of clusterSize ${singleton.clusterSize} declared nodes grants it; the lease holder runs it`,
            candidates: rankFor(name, declarers),
            fencingToken: quorumToken(name),
          }
        : {
            kind: 'singleton',
            type: singleton.type,
            consistency: 'available',
            placement:
              'rendezvous hashing of the name over live nodes that declared it; sticky while its node lives; conflicts after a partition: earliest registration wins',
            candidates: rankFor(name, declarers),
          };
  } else if (child?.k === 'child') {
    const eligible = live.filter((n) => table.holders('type', child.type).has(n));
    base = {
      kind: 'child',
      type: child.type,
      placement: `rendezvous hashing of the name over live nodes that defined type "${child.type}"; sticky while its host lives; adopted by the owner among survivors when it dies`,
      candidates: rankFor(name, eligible),
      orphan: table.orphans().some(([n]) => n === name),
    };
  } else if (replicated?.k === 'replicated') {
    base = {
      kind: 'replicated',
      type: replicated.type,
      placement: `one copy per node that defined type "${replicated.type}", named name@node`,
      candidates: [name.slice(at + 1)],
    };
  } else {
    base = { kind: 'unknown', placement: registered ? 'a registry name not started by node.processes' : 'no such worker', candidates: [] };
  }
  return base;
}

/** The worker a registry entry names (its metadata says which kind and type), or undefined for other names. */
export function processInfoOf(name: string, node: string, meta: unknown): ProcessInfo | undefined {
  const m = meta as { proc?: unknown; type?: unknown; token?: unknown } | null;
  if (typeof m !== 'object' || m === null || typeof m.type !== 'string') return undefined;
  if (m.proc !== 'singleton' && m.proc !== 'replicated' && m.proc !== 'child') return undefined;
  return { name, node, kind: m.proc, type: m.type, ...(typeof m.token === 'number' ? { fencingToken: m.token } : {}) };
}
