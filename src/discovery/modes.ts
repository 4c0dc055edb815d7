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
import { z } from 'zod';
import { ConfigError } from '../errors.js';
import { parseAddress } from '../mesh/identity.js';
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

/** What a shorthand's `fromEnv` may read: `FOUNDATION_*` variables, with errors naming the variable. */
export interface ShorthandEnv {
  /** The variable's value, `undefined` when unset or empty. */
  get(key: string): string | undefined;
  /** The variable's value; a ConfigError naming it (and `because`) when unset. */
  required(key: string, because: string): string;
  /** A port number (0-65535) from the variable, `undefined` when unset. */
  port(key: string): number | undefined;
}

/** Everything about one Apprentice shorthand: its keys, how the environment sets it, what it becomes. */
interface ShorthandDefinition<S extends z.ZodObject> {
  /** The `cluster: { strategy, ... }` object this shorthand accepts (the `strategy` key is a literal). */
  schema: S;
  /** The shorthand `FOUNDATION_CLUSTER=<strategy>` means, from its companion variables. */
  fromEnv(env: ShorthandEnv): z.input<S>;
  /** The companion variables `fromEnv` reads, with what they set (the table in docs/guides/configuration.md). */
  variables: Record<string, string>;
  /** The named Wizard topology this shorthand becomes. */
  translate(s: z.output<S>, ctx: ModeContext): [string, TopologySpec];
}

/** Types a table entry: `S` comes from `schema` alone, so `fromEnv` and `translate` are checked against it. */
function shorthand<S extends z.ZodObject>(def: { schema: S } & NoInfer<Omit<ShorthandDefinition<S>, 'schema'>>): ShorthandDefinition<S> {
  return def;
}

const portSchema = z.number().int().min(0).max(65535);
const hostPort = z.string().refine((v) => parseAddress(v) !== undefined, 'expected "host:port"');
const CLUSTER_PORT = 'FOUNDATION_CLUSTER_PORT';

function fixedPort(ctx: ModeContext, given: number | undefined, key: string, strategy: string): number {
  const port = given ?? ctx.port;
  if (!port)
    throw new ConfigError(
      key,
      `the ${strategy} strategy needs the peers' mesh port: set \`port\` here or a fixed node \`port\` (all nodes listen on the same port)`,
    );
  return port;
}

function withPort(env: ShorthandEnv): { port?: number } {
  const port = env.port(CLUSTER_PORT);
  return port ? { port } : {};
}

/**
 * The Apprentice shorthands, defined once: the option schema (`cluster: {...}`), the
 * environment mapping (`FOUNDATION_CLUSTER=<key>`) and the translation to a topology all come
 * from this table. The key order is the order errors list the allowed strategies in.
 */
export const CLUSTER_SHORTHANDS = {
  kubernetes: shorthand({
    schema: z.strictObject({
      strategy: z.literal('kubernetes'),
      appName: z.string().min(1),
      namespace: z.string().min(1).optional(),
      mode: z.enum(['endpointslices', 'pods']).optional(),
      port: portSchema.optional(),
    }),
    variables: {
      FOUNDATION_K8S_APP_NAME: 'kubernetes appName (required with FOUNDATION_CLUSTER=kubernetes)',
      FOUNDATION_K8S_NAMESPACE: 'kubernetes namespace',
      FOUNDATION_K8S_MODE: 'kubernetes mode: endpointslices | pods',
    },
    fromEnv: (env) => {
      const mode = env.get('FOUNDATION_K8S_MODE');
      if (mode !== undefined && mode !== 'endpointslices' && mode !== 'pods')
        throw new ConfigError('FOUNDATION_K8S_MODE', `"${mode}" is not allowed. Allowed values: endpointslices, pods`);
      const namespace = env.get('FOUNDATION_K8S_NAMESPACE');
      return {
        strategy: 'kubernetes',
        appName: env.required('FOUNDATION_K8S_APP_NAME', 'FOUNDATION_CLUSTER=kubernetes'),
        ...(namespace ? { namespace } : {}),
        ...(mode ? { mode } : {}),
        ...withPort(env),
      };
    },
    translate: (s, ctx) => {
      const mode = s.mode ?? 'endpointslices';
      const port = fixedPort(ctx, s.port, 'cluster.port', 'kubernetes');
      const config: Record<string, unknown> = mode === 'pods' ? { mode, selector: `app=${s.appName}`, port } : { mode, service: s.appName, port };
      if (s.namespace) config.namespace = s.namespace;
      return ['kubernetes', { strategy: 'kubernetes', config }];
    },
  }),
  dns: shorthand({
    schema: z.strictObject({ strategy: z.literal('dns'), query: z.string().min(1), port: portSchema.optional() }),
    variables: { FOUNDATION_DNS_QUERY: 'dns query (required with FOUNDATION_CLUSTER=dns)' },
    fromEnv: (env) => ({ strategy: 'dns', query: env.required('FOUNDATION_DNS_QUERY', 'FOUNDATION_CLUSTER=dns'), ...withPort(env) }),
    translate: (s, ctx) => ['dns', { strategy: 'dns', config: { query: s.query, port: fixedPort(ctx, s.port, 'cluster.port', 'dns') } }],
  }),
  'dns-srv': shorthand({
    schema: z.strictObject({ strategy: z.literal('dns-srv'), service: z.string().min(1) }),
    variables: { FOUNDATION_DNS_SERVICE: 'dns-srv service (required with FOUNDATION_CLUSTER=dns-srv)' },
    fromEnv: (env) => ({ strategy: 'dns-srv', service: env.required('FOUNDATION_DNS_SERVICE', 'FOUNDATION_CLUSTER=dns-srv') }),
    translate: (s) => ['dns-srv', { strategy: 'dns-srv', config: { service: s.service } }],
  }),
  gossip: shorthand({
    schema: z.strictObject({ strategy: z.literal('gossip'), secret: z.string().min(1).optional() }),
    variables: { FOUNDATION_GOSSIP_SECRET: 'gossip secret (default: the node secret, e.g. FOUNDATION_SECRET)' },
    fromEnv: (env) => {
      const secret = env.get('FOUNDATION_GOSSIP_SECRET');
      return { strategy: 'gossip', ...(secret ? { secret } : {}) };
    },
    translate: (s, ctx) => {
      const secret = s.secret ?? ctx.secret;
      return ['gossip', { strategy: 'gossip', config: secret ? { secret } : {} }];
    },
  }),
  mdns: shorthand({
    schema: z.strictObject({ strategy: z.literal('mdns') }),
    variables: {},
    fromEnv: () => ({ strategy: 'mdns' as const }),
    translate: () => ['mdns', { strategy: 'mdns', config: {} }],
  }),
  static: shorthand({
    schema: z.strictObject({ strategy: z.literal('static'), hosts: z.array(hostPort) }),
    variables: {
      FOUNDATION_STATIC: 'static hosts, comma-separated host:port; implies FOUNDATION_CLUSTER=static when FOUNDATION_CLUSTER is unset',
    },
    fromEnv: (env) => ({
      strategy: 'static',
      hosts: env
        .required('FOUNDATION_STATIC', 'FOUNDATION_CLUSTER=static')
        .split(',')
        .map((h) => h.trim())
        .filter(Boolean),
    }),
    translate: (s) => ['static', { strategy: 'static', config: { hosts: s.hosts } }],
  }),
  fly: shorthand({
    schema: z.strictObject({ strategy: z.literal('fly'), app: z.string().min(1), port: portSchema.optional() }),
    variables: { FOUNDATION_FLY_APP: 'fly app (default: FLY_APP_NAME, which Fly sets)' },
    fromEnv: (env) => {
      const app = env.get('FOUNDATION_FLY_APP') ?? env.get('FLY_APP_NAME');
      if (!app) throw new ConfigError('FOUNDATION_FLY_APP', 'is required when FOUNDATION_CLUSTER=fly (or run on Fly, which sets FLY_APP_NAME)');
      return { strategy: 'fly', app, ...withPort(env) };
    },
    translate: (s, ctx) => [
      'fly',
      { strategy: 'dns', config: { query: `${s.app}.internal`, family: 'ipv6', port: fixedPort(ctx, s.port, 'cluster.port', 'fly') } },
    ],
  }),
  local: shorthand({
    schema: z.strictObject({ strategy: z.literal('local'), dir: z.string().min(1).optional() }),
    variables: { FOUNDATION_LOCAL_DIR: 'local dir' },
    fromEnv: (env) => {
      const dir = env.get('FOUNDATION_LOCAL_DIR');
      return { strategy: 'local', ...(dir ? { dir } : {}) };
    },
    translate: (s) => ['local', { strategy: 'local', config: s.dir ? { dir: s.dir } : {} }],
  }),
} as const;

/** An Apprentice strategy name (`kubernetes`, `dns`, ...). */
export type ShorthandName = keyof typeof CLUSTER_SHORTHANDS;

/** Apprentice strategy names, in table order. */
export const SHORTHAND_NAMES = Object.keys(CLUSTER_SHORTHANDS) as ShorthandName[];

/** The `cluster: {...}` object schema: one branch per shorthand, chosen by `strategy`. */
export const clusterShorthandSchema = z.discriminatedUnion('strategy', [
  CLUSTER_SHORTHANDS.kubernetes.schema,
  CLUSTER_SHORTHANDS.dns.schema,
  CLUSTER_SHORTHANDS['dns-srv'].schema,
  CLUSTER_SHORTHANDS.gossip.schema,
  CLUSTER_SHORTHANDS.mdns.schema,
  CLUSTER_SHORTHANDS.static.schema,
  CLUSTER_SHORTHANDS.fly.schema,
  CLUSTER_SHORTHANDS.local.schema,
]);

/** `true`/`false` for a boolean or a nested shape: TS's own equality test, strict about optional keys. */
type Equals<A, B> = (<T>() => T extends A ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? true : false;
/** Compile-time proof that the documented union and the schema (and the table's order) agree: a drift fails `tsc`. */
const shorthandTypeMatchesSchema: Equals<ClusterShorthand, z.input<typeof clusterShorthandSchema>> = true;
const tableListsEveryBranch: Equals<ShorthandName, ClusterShorthand['strategy']> = true;
void shorthandTypeMatchesSchema;
void tableListsEveryBranch;

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

/** Translates one Apprentice shorthand into a named topology. */
export function translateShorthand(s: ClusterShorthand, ctx: ModeContext): [string, TopologySpec] {
  const def = CLUSTER_SHORTHANDS[s.strategy] as ShorthandDefinition<z.ZodObject>;
  return def.translate(s as z.output<z.ZodObject>, ctx);
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
