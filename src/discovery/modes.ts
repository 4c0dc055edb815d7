/**
 * Mortal and Apprentice modes resolve to Wizard topologies. Every mode ends as the same
 * `Record<name, TopologySpec>` structure, which `foundation config explain` prints: the facade
 * shows exactly what it does.
 *
 * | Apprentice shorthand                              | Topology (Wizard)                                                         |
 * |---------------------------------------------------|---------------------------------------------------------------------------|
 * | `true` (Mortal)                                   | `local` + `mdns` if multicast-dns resolves, else `gossip`                  |
 * | `{ strategy: 'kubernetes', appName, namespace?, mode? }` | `kubernetes`: endpointslices of service `appName` (or pods `app=<appName>`) |
 * | `{ strategy: 'dns', query, port? }`               | `dns`: A+AAAA of `query`, peers on `port` (default: this node's port)      |
 * | `{ strategy: 'dns-srv', service }`                | `dns-srv`: SRV of `service`                                                |
 * | `{ strategy: 'gossip', secret? }`                 | `gossip`: multicast, authenticated with `secret` (default: the node secret) |
 * | `{ strategy: 'mdns' }`                            | `mdns`: `_foundation._tcp.local`                                           |
 * | `{ strategy: 'static', hosts }`                   | `static`: `hosts`                                                          |
 * | `{ strategy: 'fly', app, port? }`                 | `dns`: AAAA of `<app>.internal` (Fly's private IPv6 network)               |
 * | `{ strategy: 'local', dir? }`                     | `local`                                                                    |
 */
import { ConfigError } from '../errors.js';
import type { TopologySpec } from './registry.js';

/** Apprentice-mode keywords, one per deployment target. */
export type ClusterShorthand =
  /** Kubernetes: peers are the endpoints of the Service `appName` (or pods labelled `app=<appName>` with `mode: 'pods'`). */
  | { strategy: 'kubernetes'; appName: string; namespace?: string; mode?: 'endpointslices' | 'pods'; port?: number }
  /** DNS A/AAAA records of `query`; peers listen on `port` (default: this node's port). */
  | { strategy: 'dns'; query: string; port?: number }
  /** DNS SRV records of `service` (e.g. a Kubernetes headless service). */
  | { strategy: 'dns-srv'; service: string }
  /** UDP multicast gossip; packets authenticated and encrypted with `secret` (default: the node's secret). */
  | { strategy: 'gossip'; secret?: string }
  /** mDNS / DNS-SD (needs the optional package multicast-dns). */
  | { strategy: 'mdns' }
  /** A fixed list of `host:port` addresses. */
  | { strategy: 'static'; hosts: string[] }
  /** Fly.io: AAAA records of `<app>.internal`; peers listen on `port` (default: this node's port). */
  | { strategy: 'fly'; app: string; port?: number }
  /** Same-host discovery through a directory under the temp dir. */
  | { strategy: 'local'; dir?: string };

/** `cluster` option: `true` for Mortal mode, or an Apprentice shorthand. */
export type ClusterOption = boolean | ClusterShorthand;

/** Facts about the node that translations need. */
export interface ModeContext {
  /** The node's mesh port (0 when it is chosen at start). */
  port: number;
  /** The node's shared secret, when it has one (gossip authenticates with it by default). Bytes are kept as bytes. */
  secret?: string | Uint8Array;
  /** Whether the optional mDNS package resolves. */
  mdnsAvailable: boolean;
}

/** Which mode produced the topologies, for `config explain`. */
export type ModeName = 'none' | 'mortal' | 'apprentice' | 'wizard' | 'apprentice+wizard' | 'mortal+wizard';

export interface ResolvedTopologies {
  mode: ModeName;
  topologies: Record<string, TopologySpec>;
  /** One line per decision the translation made (e.g. why gossip and not mdns). */
  notes: string[];
}

function fixedPort(ctx: ModeContext, given: number | undefined, key: string, strategy: string): number {
  const port = given ?? ctx.port;
  if (!port)
    throw new ConfigError(
      key,
      `the ${strategy} strategy needs the peers' mesh port: set \`port\` here or a fixed node \`port\` (all nodes listen on the same port)`,
    );
  return port;
}

/** Translates one Apprentice shorthand into a named topology. */
export function translateShorthand(s: ClusterShorthand, ctx: ModeContext): [string, TopologySpec] {
  switch (s.strategy) {
    case 'kubernetes': {
      const mode = s.mode ?? 'endpointslices';
      const port = fixedPort(ctx, s.port, 'cluster.port', 'kubernetes');
      const config: Record<string, unknown> = mode === 'pods' ? { mode, selector: `app=${s.appName}`, port } : { mode, service: s.appName, port };
      if (s.namespace) config.namespace = s.namespace;
      return ['kubernetes', { strategy: 'kubernetes', config }];
    }
    case 'dns':
      return ['dns', { strategy: 'dns', config: { query: s.query, port: fixedPort(ctx, s.port, 'cluster.port', 'dns') } }];
    case 'dns-srv':
      return ['dns-srv', { strategy: 'dns-srv', config: { service: s.service } }];
    case 'gossip': {
      const secret = s.secret ?? ctx.secret;
      return ['gossip', { strategy: 'gossip', config: secret ? { secret } : {} }];
    }
    case 'mdns':
      return ['mdns', { strategy: 'mdns', config: {} }];
    case 'static':
      return ['static', { strategy: 'static', config: { hosts: s.hosts } }];
    case 'fly':
      return ['fly', { strategy: 'dns', config: { query: `${s.app}.internal`, family: 'ipv6', port: fixedPort(ctx, s.port, 'cluster.port', 'fly') } }];
    case 'local':
      return ['local', { strategy: 'local', config: s.dir ? { dir: s.dir } : {} }];
  }
}

/** Resolves `cluster` (Mortal/Apprentice) and `topologies` (Wizard) into the topologies to run. */
export function resolveTopologies(
  cluster: ClusterOption | undefined,
  topologies: Record<string, TopologySpec> | undefined,
  ctx: ModeContext,
): ResolvedTopologies {
  const out: Record<string, TopologySpec> = {};
  const notes: string[] = [];
  let mode: ModeName = 'none';
  if (cluster === true) {
    mode = 'mortal';
    out.local = { strategy: 'local', config: {} };
    notes.push('mortal: local finds nodes on this host');
    if (ctx.mdnsAvailable) {
      out.mdns = { strategy: 'mdns', config: {} };
      notes.push('mortal: multicast-dns is installed, so mdns finds nodes on the LAN');
    } else {
      out.gossip = { strategy: 'gossip', config: ctx.secret ? { secret: ctx.secret } : {} };
      notes.push('mortal: multicast-dns is not installed, so gossip (UDP multicast) finds nodes on the LAN');
    }
    if (!ctx.secret && !ctx.mdnsAvailable) notes.push('mortal: no secret, so gossip packets are not authenticated');
  } else if (cluster && typeof cluster === 'object') {
    mode = 'apprentice';
    const [name, spec] = translateShorthand(cluster, ctx);
    out[name] = spec;
    notes.push(`apprentice: ${cluster.strategy} → topology "${name}" (strategy ${String(spec.strategy)})`);
  }
  const wizard = Object.entries(topologies ?? {});
  if (wizard.length > 0) {
    mode = mode === 'none' ? 'wizard' : (`${mode}+wizard` as ModeName);
    // Wizard topologies pass through untouched and win over a shorthand of the same name.
    for (const [name, spec] of wizard) {
      if (out[name]) notes.push(`wizard: topology "${name}" replaces the one the ${mode.split('+')[0]} mode made`);
      out[name] = spec;
    }
  }
  return { mode, topologies: out, notes };
}
