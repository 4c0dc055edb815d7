/**
 * `foundation config explain`: the topologies a set of options and environment resolves to,
 * exactly as `Foundation.start` would run them (both call `resolveOptions`). Secrets are redacted.
 */

import type { ModeName } from '../discovery/modes.js';
import type { TopologySpec } from '../discovery/registry.js';
import { formatAddress } from '../mesh/identity.js';
import type { FoundationOptions } from './options.js';
import { resolveOptions } from './resolve.js';

export interface Explanation {
  mode: ModeName;
  node: { name: string | null; host: string; port: number; advertiseHost: string | null; clusterName: string; secret: 'set' | 'insecure' | 'cookie-file' };
  topologies: Record<string, { strategy: string; config: Record<string, unknown> }>;
  /** The pubsub transport; a Redis URL's password is redacted. */
  pubsub: { adapter: 'mesh' | 'redis'; url?: string };
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

/**
 * Resolves options + environment with the resolver `Foundation.start` uses, without starting
 * anything (and without creating the development cookie file). Rejects exactly when start would
 * reject before binding, with the same error.
 */
export async function explainConfig(options: FoundationOptions, env: NodeJS.ProcessEnv = process.env): Promise<Explanation> {
  const r = await resolveOptions(options, env, 'explain');
  const topologies: Explanation['topologies'] = {};
  for (const [name, spec] of Object.entries(r.topologies)) {
    topologies[name] = { strategy: strategyName(spec), config: redact(spec.config ?? {}) as Record<string, unknown> };
  }
  return {
    mode: r.mode,
    node: {
      name: r.given.name ?? null,
      host: r.host,
      port: r.port,
      advertiseHost: r.advertiseHost ?? null,
      clusterName: r.clusterName,
      secret: r.secret.source === 'option' ? 'set' : r.secret.source,
    },
    topologies,
    pubsub:
      r.pubsub.adapter === 'redis'
        ? { adapter: 'redis', url: (r.pubsub.redis.url ?? 'redis://127.0.0.1:6379').replace(/\/\/([^@/]*)@/, '//<redacted>@') }
        : { adapter: 'mesh' },
    notes: r.notes,
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
  lines.push(`pubsub: ${e.pubsub.adapter}${e.pubsub.url ? ` (${e.pubsub.url})` : ''}`);
  for (const n of e.notes) lines.push(`note: ${n}`);
  return lines.join('\n');
}
