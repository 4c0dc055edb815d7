/**
 * Twelve-factor configuration: the same options from `FOUNDATION_*` environment variables.
 * Explicit options always win over the environment. Errors name the variable and the allowed values.
 */
import { CLUSTER_SHORTHANDS, SHORTHAND_NAMES, type ShorthandEnv, type ShorthandName } from '../discovery/modes.js';
import { ConfigError } from '../errors.js';
import { didYouMean, levenshtein } from '../util/suggest.js';
import { hostPortShape, parseHostPort } from './address.js';
import type { FoundationOptions } from './options.js';

/** Values accepted by FOUNDATION_CLUSTER: `true`/`mortal` (Mortal mode), `false`, or an Apprentice strategy. */
export const ENV_CLUSTER_VALUES = ['true', 'mortal', 'false', ...SHORTHAND_NAMES] as const;

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
  FOUNDATION_COOKIE_FILE: 'cookieFile',
  FOUNDATION_HTTP: 'http: `port` or `host:port`',
  FOUNDATION_CLUSTER: `cluster: ${ENV_CLUSTER_VALUES.join(' | ')} (mortal is the same as true)`,
  FOUNDATION_CLUSTER_PORT: "peers' mesh port for kubernetes / dns / fly (default: FOUNDATION_PORT)",
  ...Object.assign({}, ...SHORTHAND_NAMES.map((n) => CLUSTER_SHORTHANDS[n].variables)),
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
  const n = Number(v.trim());
  if (!/^\d{1,5}$/.test(v.trim()) || n > 65535) throw new ConfigError(key, `"${v}" is not a port number (0-65535)`);
  return n;
}

/** What the Apprentice shorthands read their companion variables through. */
function shorthandEnv(env: NodeJS.ProcessEnv): ShorthandEnv {
  return {
    get: (key) => env[key] || undefined,
    required: (key, because) => {
      const v = env[key];
      if (!v) throw new ConfigError(key, `is required when ${because}`);
      return v;
    },
    port: (key) => int(env, key),
  };
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
  if (env.FOUNDATION_COOKIE_FILE) o.cookieFile = env.FOUNDATION_COOKIE_FILE;
  if (env.FOUNDATION_HTTP) {
    const rules = { allowBarePort: true };
    const http = parseHostPort(env.FOUNDATION_HTTP, rules);
    if (!http) throw new ConfigError('FOUNDATION_HTTP', `"${env.FOUNDATION_HTTP}" is not ${hostPortShape(rules)}`);
    o.http = http.host === undefined ? http.port : { host: http.host, port: http.port };
  }
  let kind = env.FOUNDATION_CLUSTER?.trim().toLowerCase();
  if (!kind && env.FOUNDATION_STATIC) kind = 'static';
  if (kind === 'true' || kind === 'mortal') o.cluster = true;
  else if (kind === 'false') o.cluster = false;
  else if (kind && Object.hasOwn(CLUSTER_SHORTHANDS, kind)) o.cluster = CLUSTER_SHORTHANDS[kind as ShorthandName].fromEnv(shorthandEnv(env));
  else if (kind) {
    const hint = didYouMean(kind, ENV_CLUSTER_VALUES);
    throw new ConfigError(
      'FOUNDATION_CLUSTER',
      `"${kind}" is not allowed${hint ? `; did you mean "${hint}"?` : '.'} Allowed values: ${ENV_CLUSTER_VALUES.join(', ')}`,
    );
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

/** Variables read elsewhere (log level, test and CLI switches), not by the option mapping. */
const IGNORED = new Set(['FOUNDATION_LOG_LEVEL', 'FOUNDATION_EMIT_STARTED', 'FOUNDATION_EXIT_WITH_PARENT', 'FOUNDATION_REQUIRE_NETNS']);

/** Explicit options win key by key; the environment fills the rest. */
export function mergeEnv(options: FoundationOptions, fromEnv: FoundationOptions): FoundationOptions {
  const merged: FoundationOptions = { ...fromEnv };
  for (const [k, v] of Object.entries(options)) if (v !== undefined) (merged as Record<string, unknown>)[k] = v;
  return merged;
}
