/**
 * The one resolver of start options: `Foundation.start` and `foundation config explain` both
 * call {@link resolveOptions}, so explain can never accept what start refuses. It merges the
 * environment, validates, applies the defaults (./defaults.ts), runs every cross-field check
 * and resolves the modes into topologies, and builds each strategy (their constructors only
 * validate). It binds nothing: what it cannot know before binding (the node's address, the
 * interfaces a strategy joins, in-cluster credentials) is checked when the strategies start.
 */
import { createSecureContext } from 'node:tls';
import { mdnsAvailable } from '../discovery/mdns.js';
import { type ModeName, resolveTopologies } from '../discovery/modes.js';
import { createStrategy, type TopologySpec } from '../discovery/registry.js';
import type { Strategy } from '../discovery/strategy.js';
import { ConfigError } from '../errors.js';
import type { BackoffOptions } from '../mesh/dialer.js';
import { type HeartbeatConfig, resolveHeartbeatConfig } from '../mesh/heartbeat-protocol.js';
import { defaultNodeName } from '../mesh/identity.js';
import { Inbox } from '../mesh/inbox.js';
import { Outbox, type OutboxOptions } from '../mesh/lanes.js';
import type { MeshTlsOptions } from '../mesh/mesh.js';
import { type ResolvedSecret, resolveSecret } from '../mesh/secret.js';
import type { RedisAdapterOptions } from '../pubsub/redis-adapter.js';
import type { Logger } from '../util/logger.js';
import { parseHostPort } from './address.js';
import { DEFAULTS } from './defaults.js';
import { mergeEnv, optionsFromEnv } from './env.js';
import { type FoundationOptions, type ParsedOptions, parseOptions } from './options.js';

/**
 * What the resolution is for. `start` reads (and in development creates) the cookie file and
 * hands the real secret to the topologies; `explain` creates nothing and shows a placeholder
 * where the secret would go. Every check is the same.
 */
export type ResolvePurpose = 'start' | 'explain';

/** A start configuration with every default applied and every check passed. */
export interface ResolvedOptions {
  /** The options as given, merged with the environment and validated, before defaults. */
  given: ParsedOptions;
  name: string;
  host: string;
  port: number;
  advertiseHost: string | undefined;
  clusterName: string;
  hidden: boolean;
  /** The secret links authenticate with, where it came from, and a warning to log. */
  secret: ResolvedSecret;
  tls: MeshTlsOptions | undefined;
  /** The admin server's address (and the extra `Host` names it answers to), or `false` when it is off. */
  http: false | { host: string; port: number; allowedHosts?: string[] };
  maxFrameBytes: number;
  maxMessageBytes: number;
  /** Lane policies, fragment size, window and scheduling mode, as the mesh's outboxes take them. */
  lanes: Partial<OutboxOptions>;
  handshakeTimeoutMs: number;
  connectTimeoutMs: number;
  reconnect: BackoffOptions;
  /** The heartbeat worker's configuration (`failureDetector` with defaults, and this node's name). */
  heartbeat: HeartbeatConfig;
  heartbeatPort: number | undefined;
  degradedLoopLagMs: number;
  /** The pubsub transport and its options. */
  pubsub: { adapter: 'mesh' } | { adapter: 'redis'; redis: RedisAdapterOptions };
  /** The logger given, if any (`start` makes the default one, named after the node). */
  logger: Logger | undefined;
  /** Which mode produced the topologies. */
  mode: ModeName;
  /** The topologies to run, by name (Mortal/Apprentice translated, Wizard passed through). */
  topologies: Record<string, TopologySpec>;
  /** The strategy of each topology, built (not started). */
  strategies: Array<[name: string, strategy: Strategy]>;
  /** One line per decision the mode translation made. */
  notes: string[];
}

/** The message of a ConfigError without its "Invalid configuration at" prefix, to re-key it. */
function bareMessage(err: ConfigError): string {
  return err.message.replace(/^Invalid configuration at "[^"]*": /, '');
}

/** Runs `check`, re-keying a ConfigError it throws with `rekey` (so errors name the option users write). */
function rekeyed<T>(check: () => T, rekey: (key: string) => string): T {
  try {
    return check();
  } catch (err) {
    if (err instanceof ConfigError) throw new ConfigError(rekey(err.key), bareMessage(err));
    throw err;
  }
}

/** Maps the heartbeat worker's config keys back to the `failureDetector` option names users write. */
function failureDetectorKey(key: string): string {
  const names: Record<string, string> = {
    'heartbeat.intervalMs': 'failureDetector.heartbeatIntervalMs',
    'heartbeat.detector.acceptablePauseMs': 'failureDetector.acceptablePauseMs',
    'heartbeat.detector.minStdDevMs': 'failureDetector.minStdDevMs',
  };
  return names[key] ?? key.replace(/^heartbeat\.(detector\.)?/, 'failureDetector.');
}

/** `http` in any accepted shape → the address to listen on, or false. */
function resolveHttp(http: ParsedOptions['http']): ResolvedOptions['http'] {
  if (http === undefined || http === false) return false;
  if (typeof http === 'number') return { host: DEFAULTS.httpHost, port: http };
  if (typeof http === 'string') {
    // The schema has checked the shape already.
    const parsed = parseHostPort(http, { allowBarePort: true });
    if (!parsed) throw new ConfigError('http', `"${http}" is not a port or host:port`);
    return { host: parsed.host ?? DEFAULTS.httpHost, port: parsed.port };
  }
  return { host: http.host ?? DEFAULTS.httpHost, port: http.port, ...(http.allowedHosts ? { allowedHosts: http.allowedHosts } : {}) };
}

/**
 * Resolves start options the way `Foundation.start` runs them: `input` over the `FOUNDATION_*`
 * variables of `env`, validated, defaults applied, cross-field rules checked, modes resolved into
 * topologies and each strategy built. Throws `ConfigError` naming the key (or the variable) and
 * the allowed values, or `SecretRequiredError` under `NODE_ENV=production` without a secret.
 */
export async function resolveOptions(
  input: FoundationOptions = {},
  env: NodeJS.ProcessEnv = process.env,
  purpose: ResolvePurpose = 'start',
): Promise<ResolvedOptions> {
  const given = parseOptions(mergeEnv(input ?? {}, optionsFromEnv(env)));
  const name = given.name ?? defaultNodeName();
  const port = given.port ?? DEFAULTS.port;
  const secret = resolveSecret({
    secret: given.secret,
    insecure: given.insecure ?? DEFAULTS.insecure,
    cookieFile: given.cookieFile,
    env: env.NODE_ENV,
    createCookie: purpose === 'start',
  });

  const fragmentBytes = given.fragmentBytes ?? DEFAULTS.fragmentBytes;
  const maxFrameBytes = given.maxFrameBytes ?? DEFAULTS.maxFrameBytes;
  if (maxFrameBytes < fragmentBytes + DEFAULTS.frameHeadroomBytes) {
    throw new ConfigError('maxFrameBytes', `must exceed fragmentBytes (${fragmentBytes}) by at least ${DEFAULTS.frameHeadroomBytes}`);
  }

  const fd = { ...DEFAULTS.failureDetector, ...given.failureDetector };
  const heartbeat: HeartbeatConfig = {
    intervalMs: fd.heartbeatIntervalMs,
    phiThreshold: fd.phiThreshold,
    suspectPhi: fd.suspectPhi,
    detector: { acceptablePauseMs: fd.acceptablePauseMs, minStdDevMs: fd.minStdDevMs },
    maxMainStallMs: fd.maxMainStallMs,
    // Lets the worker reject this node's own packets reflected back at it.
    self: name,
  };
  rekeyed(() => resolveHeartbeatConfig(heartbeat), failureDetectorKey);

  const { mode: laneMode, ...lanePolicies } = given.lanes ?? {};
  const lanes: Partial<OutboxOptions> = {
    fragmentBytes,
    mode: laneMode ?? DEFAULTS.laneMode,
    lanes: lanePolicies,
    windowBytes: given.windowBytes ?? DEFAULTS.windowBytes,
  };
  // Links build their outboxes and inboxes later, on a socket callback: check the policies now.
  rekeyed(
    () => new Outbox(lanes),
    (key) => (key === 'fragmentBytes' || key === 'windowBytes' || key.startsWith('lanes.') ? key : `lanes.${key}`),
  );
  const maxMessageBytes = given.maxMessageBytes ?? DEFAULTS.maxMessageBytes;
  new Inbox({ maxMessageBytes });

  const reconnect = given.reconnect ?? { ...DEFAULTS.reconnect };
  if (reconnect.maxMs < reconnect.baseMs) throw new ConfigError('reconnect.maxMs', `must be >= reconnect.baseMs (${reconnect.baseMs}), got ${reconnect.maxMs}`);

  if (given.tls) {
    // The mesh builds its TLS server and clients on bind and dial: parse the key material now.
    const { key, cert, ca } = given.tls;
    try {
      createSecureContext({ key, cert, ...(ca !== undefined ? { ca } : {}) });
    } catch (err) {
      throw new ConfigError('tls', `the key, certificate or CA is not usable PEM: ${(err as Error).message}`);
    }
  }

  const resolved = resolveTopologies(given.cluster, given.topologies, {
    port,
    // explain never holds the real secret: a placeholder marks where it would be used.
    secret: secret.source === 'insecure' ? undefined : purpose === 'start' ? secret.secret : '<node secret>',
    mdnsAvailable: given.cluster === true ? await mdnsAvailable() : false,
  });
  const strategies = Object.entries(resolved.topologies).map(([tname, spec]): [string, Strategy] => [tname, createStrategy(tname, spec)]);

  return {
    given,
    name,
    host: given.host ?? DEFAULTS.host,
    port,
    advertiseHost: given.advertiseHost,
    clusterName: given.clusterName ?? DEFAULTS.clusterName,
    hidden: given.hidden ?? DEFAULTS.hidden,
    secret,
    tls: given.tls,
    http: resolveHttp(given.http),
    maxFrameBytes,
    maxMessageBytes,
    lanes,
    handshakeTimeoutMs: given.handshakeTimeoutMs ?? DEFAULTS.handshakeTimeoutMs,
    connectTimeoutMs: given.connectTimeoutMs ?? DEFAULTS.connectTimeoutMs,
    reconnect,
    heartbeat,
    heartbeatPort: given.heartbeatPort,
    degradedLoopLagMs: given.degradedLoopLagMs ?? DEFAULTS.degradedLoopLagMs,
    pubsub: (given.pubsub?.adapter ?? DEFAULTS.pubsubAdapter) === 'redis' ? { adapter: 'redis', redis: given.pubsub?.redis ?? {} } : { adapter: 'mesh' },
    logger: given.logger,
    mode: resolved.mode,
    topologies: resolved.topologies,
    strategies,
    notes: resolved.notes,
  };
}
