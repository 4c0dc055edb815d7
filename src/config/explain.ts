/**
 * `foundation config explain`: the topologies a set of options and environment resolves to,
 * exactly as `Foundation.start` would run them. Secrets are redacted.
 */

import { mdnsAvailable } from '../discovery/mdns.js';
import { type ClusterOption, type ModeName, resolveTopologies } from '../discovery/modes.js';
import { createStrategy, type TopologySpec } from '../discovery/registry.js';
import { SecretRequiredError } from '../errors.js';
import type { FoundationOptions } from '../foundation.js';
import { formatAddress } from '../mesh/identity.js';
import { mergeEnv, optionsFromEnv } from './env.js';
import { parseOptions } from './options.js';

export interface Explanation {
  mode: ModeName;
  node: { name: string | null; host: string; port: number; advertiseHost: string | null; clusterName: string; secret: 'set' | 'insecure' | 'cookie-file' };
  topologies: Record<string, { strategy: string; config: Record<string, unknown> }>;
  notes: string[];
}

const SECRET_KEYS = /secret|token|password|key/i;

function redact(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(redact);
  if (value && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, SECRET_KEYS.test(k) && typeof v === 'string' ? '<redacted>' : redact(v)]));
  }
  return value;
}

function strategyName(spec: TopologySpec): string {
  return typeof spec.strategy === 'string' ? spec.strategy : `class ${spec.strategy.name || '(anonymous)'}`;
}

/** Resolves options + environment the way `Foundation.start` does, without starting anything. */
export async function explainConfig(options: FoundationOptions, env: NodeJS.ProcessEnv = process.env): Promise<Explanation> {
  const o = parseOptions(mergeEnv(options, optionsFromEnv(env)));
  const secret = o.secret ? 'set' : o.insecure ? 'insecure' : 'cookie-file';
  const resolved = resolveTopologies(o.cluster as ClusterOption | undefined, o.topologies as Record<string, TopologySpec> | undefined, {
    port: o.port ?? 0,
    // The real secret never reaches the output: a placeholder marks where it would be used.
    secret: secret === 'insecure' ? undefined : '<node secret>',
    mdnsAvailable: o.cluster === true ? await mdnsAvailable() : false,
  });
  // Build every strategy as start would, so a bad topology fails here too (constructors only validate).
  for (const [name, spec] of Object.entries(resolved.topologies)) createStrategy(name, spec);
  if (secret === 'cookie-file' && (env.NODE_ENV ?? process.env.NODE_ENV) === 'production') throw new SecretRequiredError();
  const topologies: Explanation['topologies'] = {};
  for (const [name, spec] of Object.entries(resolved.topologies)) {
    topologies[name] = { strategy: strategyName(spec), config: redact(spec.config ?? {}) as Record<string, unknown> };
  }
  return {
    mode: resolved.mode,
    node: {
      name: o.name ?? null,
      host: o.host ?? '127.0.0.1',
      port: o.port ?? 0,
      advertiseHost: o.advertiseHost ?? null,
      clusterName: o.clusterName ?? 'foundation',
      secret,
    },
    topologies,
    notes: resolved.notes,
  };
}

/** The human-readable form. */
export function formatExplanation(e: Explanation): string {
  const lines = [
    `mode: ${e.mode}`,
    `node: ${e.node.name ?? '(default name)'} on ${formatAddress(e.node.host, e.node.port)}, cluster "${e.node.clusterName}", secret: ${e.node.secret}`,
  ];
  const names = Object.keys(e.topologies);
  if (names.length === 0) lines.push('topologies: none (the node only accepts links; nothing dials out)');
  else lines.push('topologies:');
  for (const name of names) {
    const t = e.topologies[name] as Explanation['topologies'][string];
    lines.push(`  ${name}:`, `    strategy: ${t.strategy}`, `    config: ${JSON.stringify(t.config)}`);
  }
  for (const n of e.notes) lines.push(`note: ${n}`);
  return lines.join('\n');
}
