/**
 * Twelve-factor configuration: the same options from `FOUNDATION_*` environment variables.
 * Explicit options always win over the environment. Errors name the variable and the allowed values.
 */
import { ConfigError } from '../errors.js';
import type { FoundationOptions } from '../foundation.js';
import { didYouMean, levenshtein } from '../util/suggest.js';

/** Apprentice strategies accepted by FOUNDATION_CLUSTER. */
export const ENV_CLUSTER_VALUES = ['true', 'mortal', 'false', 'kubernetes', 'dns', 'dns-srv', 'gossip', 'mdns', 'static', 'fly', 'local'] as const;

/** Every variable read, with what it sets: the table in docs/guides/configuration.md. */
export const ENV_VARIABLES: Record<string, string> = {
  FOUNDATION_NAME: 'name',
  FOUNDATION_HOST: 'host',
  FOUNDATION_PORT: 'port',
  FOUNDATION_ADVERTISE_HOST: 'advertiseHost',
  FOUNDATION_CLUSTER_NAME: 'clusterName',
  FOUNDATION_SECRET: 'secret',
  FOUNDATION_INSECURE: 'insecure (true/false)',
  FOUNDATION_HIDDEN: 'hidden (true/false)',
  FOUNDATION_HTTP: 'http: `port` or `host:port`',
  FOUNDATION_CLUSTER: `cluster: ${ENV_CLUSTER_VALUES.join(' | ')}`,
  FOUNDATION_CLUSTER_PORT: "peers' mesh port for kubernetes / dns / fly (default: FOUNDATION_PORT)",
  FOUNDATION_K8S_APP_NAME: 'kubernetes appName',
  FOUNDATION_K8S_NAMESPACE: 'kubernetes namespace',
  FOUNDATION_K8S_MODE: 'kubernetes mode: endpointslices | pods',
  FOUNDATION_DNS_QUERY: 'dns query',
  FOUNDATION_DNS_SERVICE: 'dns-srv service',
  FOUNDATION_GOSSIP_SECRET: 'gossip secret (default: FOUNDATION_SECRET)',
  FOUNDATION_STATIC: 'static hosts, comma-separated `host:port` (implies FOUNDATION_CLUSTER=static)',
  FOUNDATION_FLY_APP: 'fly app (default: FLY_APP_NAME, which Fly sets)',
  FOUNDATION_LOCAL_DIR: 'local dir',
  FOUNDATION_TOPOLOGIES: 'Wizard topologies as JSON: {"name": {"strategy": "...", "config": {...}}}',
};

/** A known variable within one or two typos of `key` (compared without the shared prefix). */
function nearMiss(key: string, known: string[]): string | undefined {
  const suffix = key.slice('FOUNDATION_'.length);
  const hint = didYouMean(
    suffix,
    known.map((k) => k.slice('FOUNDATION_'.length)),
  );
  if (!hint) return undefined;
  const limit = Math.max(1, Math.floor(Math.min(suffix.length, hint.length) / 4));
  return levenshtein(suffix, hint) <= limit ? `FOUNDATION_${hint}` : undefined;
}

function bool(env: NodeJS.ProcessEnv, key: string): boolean | undefined {
  const v = env[key];
  if (v === undefined || v === '') return undefined;
  if (/^(1|true|yes|on)$/i.test(v)) return true;
  if (/^(0|false|no|off)$/i.test(v)) return false;
  throw new ConfigError(key, `"${v}" is not a boolean. Allowed values: true, false, 1, 0, yes, no, on, off`);
}

function int(env: NodeJS.ProcessEnv, key: string): number | undefined {
  const v = env[key];
  if (v === undefined || v === '') return undefined;
  if (!/^\d+$/.test(v.trim())) throw new ConfigError(key, `"${v}" is not a port number (0-65535)`);
  return Number(v.trim());
}

function required(env: NodeJS.ProcessEnv, key: string, because: string): string {
  const v = env[key];
  if (!v) throw new ConfigError(key, `is required when ${because}`);
  return v;
}

function list(v: string): string[] {
  return v
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
}

/** Reads the options the environment sets. Unknown FOUNDATION_* variables get a did-you-mean error. */
export function optionsFromEnv(env: NodeJS.ProcessEnv): FoundationOptions {
  const o: FoundationOptions = {};
  for (const key of Object.keys(env)) {
    if (!key.startsWith('FOUNDATION_') || key in ENV_VARIABLES || IGNORED.has(key)) continue;
    const hint = nearMiss(key, Object.keys(ENV_VARIABLES));
    // Only a near-miss is an error: unrelated FOUNDATION_* variables may belong to the application.
    if (hint) throw new ConfigError(key, `unknown variable; did you mean ${hint}?`);
  }
  if (env.FOUNDATION_NAME) o.name = env.FOUNDATION_NAME;
  if (env.FOUNDATION_HOST) o.host = env.FOUNDATION_HOST;
  const port = int(env, 'FOUNDATION_PORT');
  if (port !== undefined) o.port = port;
  if (env.FOUNDATION_ADVERTISE_HOST) o.advertiseHost = env.FOUNDATION_ADVERTISE_HOST;
  if (env.FOUNDATION_CLUSTER_NAME) o.clusterName = env.FOUNDATION_CLUSTER_NAME;
  if (env.FOUNDATION_SECRET) o.secret = env.FOUNDATION_SECRET;
  const insecure = bool(env, 'FOUNDATION_INSECURE');
  if (insecure !== undefined) o.insecure = insecure;
  const hidden = bool(env, 'FOUNDATION_HIDDEN');
  if (hidden !== undefined) o.hidden = hidden;
  if (env.FOUNDATION_HTTP) {
    const m = /^(?:(.+):)?(\d{1,5})$/.exec(env.FOUNDATION_HTTP.trim());
    if (!m) throw new ConfigError('FOUNDATION_HTTP', `"${env.FOUNDATION_HTTP}" is not \`port\` or \`host:port\``);
    o.http = { port: Number(m[2]), ...(m[1] ? { host: m[1].replace(/^\[|\]$/g, '') } : {}) };
  }
  const clusterPort = int(env, 'FOUNDATION_CLUSTER_PORT');
  let kind = env.FOUNDATION_CLUSTER?.trim().toLowerCase();
  if (!kind && env.FOUNDATION_STATIC) kind = 'static';
  if (kind) {
    switch (kind) {
      case 'true':
      case 'mortal':
        o.cluster = true;
        break;
      case 'false':
        o.cluster = false;
        break;
      case 'kubernetes': {
        const mode = env.FOUNDATION_K8S_MODE;
        if (mode && mode !== 'endpointslices' && mode !== 'pods')
          throw new ConfigError('FOUNDATION_K8S_MODE', `"${mode}" is not allowed. Allowed values: endpointslices, pods`);
        o.cluster = {
          strategy: 'kubernetes',
          appName: required(env, 'FOUNDATION_K8S_APP_NAME', 'FOUNDATION_CLUSTER=kubernetes'),
          ...(env.FOUNDATION_K8S_NAMESPACE ? { namespace: env.FOUNDATION_K8S_NAMESPACE } : {}),
          ...(mode ? { mode: mode as 'endpointslices' | 'pods' } : {}),
          ...(clusterPort ? { port: clusterPort } : {}),
        };
        break;
      }
      case 'dns':
        o.cluster = { strategy: 'dns', query: required(env, 'FOUNDATION_DNS_QUERY', 'FOUNDATION_CLUSTER=dns'), ...(clusterPort ? { port: clusterPort } : {}) };
        break;
      case 'dns-srv':
        o.cluster = { strategy: 'dns-srv', service: required(env, 'FOUNDATION_DNS_SERVICE', 'FOUNDATION_CLUSTER=dns-srv') };
        break;
      case 'gossip':
        o.cluster = { strategy: 'gossip', ...(env.FOUNDATION_GOSSIP_SECRET ? { secret: env.FOUNDATION_GOSSIP_SECRET } : {}) };
        break;
      case 'mdns':
        o.cluster = { strategy: 'mdns' };
        break;
      case 'static':
        o.cluster = { strategy: 'static', hosts: list(required(env, 'FOUNDATION_STATIC', 'FOUNDATION_CLUSTER=static')) };
        break;
      case 'fly': {
        const app = env.FOUNDATION_FLY_APP ?? env.FLY_APP_NAME;
        if (!app) throw new ConfigError('FOUNDATION_FLY_APP', 'is required when FOUNDATION_CLUSTER=fly (or run on Fly, which sets FLY_APP_NAME)');
        o.cluster = { strategy: 'fly', app, ...(clusterPort ? { port: clusterPort } : {}) };
        break;
      }
      case 'local':
        o.cluster = { strategy: 'local', ...(env.FOUNDATION_LOCAL_DIR ? { dir: env.FOUNDATION_LOCAL_DIR } : {}) };
        break;
      default: {
        const hint = didYouMean(kind, ENV_CLUSTER_VALUES);
        throw new ConfigError(
          'FOUNDATION_CLUSTER',
          `"${kind}" is not allowed${hint ? `; did you mean "${hint}"?` : '.'} Allowed values: ${ENV_CLUSTER_VALUES.join(', ')}`,
        );
      }
    }
  }
  if (env.FOUNDATION_TOPOLOGIES) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(env.FOUNDATION_TOPOLOGIES);
    } catch (err) {
      throw new ConfigError('FOUNDATION_TOPOLOGIES', `is not valid JSON: ${(err as Error).message}`);
    }
    o.topologies = parsed as FoundationOptions['topologies'];
  }
  return o;
}

/** Variables read elsewhere (the cookie file, log level, test and CLI switches), not by the option mapping. */
const IGNORED = new Set([
  'FOUNDATION_COOKIE_FILE',
  'FOUNDATION_LOG_LEVEL',
  'FOUNDATION_EMIT_STARTED',
  'FOUNDATION_EXIT_WITH_PARENT',
  'FOUNDATION_REQUIRE_NETNS',
]);

/** Explicit options win key by key; the environment fills the rest. */
export function mergeEnv(options: FoundationOptions, fromEnv: FoundationOptions): FoundationOptions {
  const merged: FoundationOptions = { ...fromEnv };
  for (const [k, v] of Object.entries(options)) if (v !== undefined) (merged as Record<string, unknown>)[k] = v;
  return merged;
}
