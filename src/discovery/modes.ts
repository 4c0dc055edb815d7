/**
 * Mortal and Apprentice modes resolve to Wizard topologies. Every mode ends as the same
 * `Record<name, TopologySpec>` structure, which `foundation config explain` prints.
 */
import type { TopologySpec } from './registry.js';

/** Apprentice-mode keywords. */
export type ClusterShorthand =
  | { strategy: 'static'; hosts: string[] }
  | { strategy: 'local'; dir?: string };

/** `cluster` option: `true` for Mortal mode, or an Apprentice shorthand. */
export type ClusterOption = boolean | ClusterShorthand;

export function resolveTopologies(cluster: ClusterOption | undefined, topologies: Record<string, TopologySpec> | undefined): Record<string, TopologySpec> {
  const out: Record<string, TopologySpec> = {};
  if (cluster === true) {
    out.local = { strategy: 'local', config: {} };
  } else if (cluster && typeof cluster === 'object') {
    if (cluster.strategy === 'static') out.static = { strategy: 'static', config: { hosts: cluster.hosts } };
    else if (cluster.strategy === 'local') out.local = { strategy: 'local', config: cluster.dir ? { dir: cluster.dir } : {} };
  }
  // Wizard topologies pass through untouched and win over a shorthand of the same name.
  for (const [name, spec] of Object.entries(topologies ?? {})) out[name] = spec;
  return out;
}
