/**
 * Start options: the one declaration. The zod schema validates; the interfaces below carry the
 * documentation editors and the API reference show, and compile-time checks prove that each
 * interface equals what its schema accepts (`z.input`), so the two cannot drift. (A type derived
 * with `z.input` alone would lose the per-key JSDoc in the emitted `.d.ts`.) Errors name the key,
 * the allowed values and a did-you-mean suggestion. Defaults live in `./defaults.ts`; the
 * resolution of a whole configuration (environment, defaults, cross-field checks) in `./resolve.ts`.
 */
import { z } from 'zod';
import { type ClusterOption, clusterShorthandSchema } from '../discovery/modes.js';
import type { TopologySpec } from '../discovery/registry.js';
import type { StrategyClass } from '../discovery/strategy.js';
import { ConfigError } from '../errors.js';
import { NODE_NAME_PATTERN } from '../mesh/identity.js';
import type { MeshTlsOptions } from '../mesh/mesh.js';
import type { RedisAdapterOptions } from '../pubsub/redis-adapter.js';
import type { Logger } from '../util/logger.js';
import { didYouMean } from '../util/suggest.js';
import { hostPortShape, parseHostPort } from './address.js';

/** Failure detector tuning. The defaults detect a silent peer in about 2 s. */
export interface FailureDetectorOptions {
  /** Heartbeat period in ms (10-60000). Default 250. */
  heartbeatIntervalMs?: number;
  /** Phi at which a silent member is declared down (> 0, < 1000). Default 8. */
  phiThreshold?: number;
  /** Phi at which a member is marked `suspect` (> 0, < `phiThreshold`). Default 3. */
  suspectPhi?: number;
  /** Pause (ms) tolerated on top of the usual heartbeat spacing before phi climbs. Default 1000. */
  acceptablePauseMs?: number;
  /** Floor of the inter-arrival standard deviation (ms), so a very regular history does not make phi hair-triggered. Default 100. */
  minStdDevMs?: number;
  /**
   * A node whose main thread has been blocked longer than this (ms) stops heartbeating, so peers
   * declare it down: a node stuck that long is as good as dead. Shorter stalls never cause a
   * node-down; they show up as loop lag. Must exceed 100. Default 10000.
   */
  maxMainStallMs?: number;
}

/** Per-lane queue policy. */
export interface LaneOptions {
  /** Queued bytes above which `send` returns false. */
  highWaterMark?: number;
  /** Queued bytes above which a back-pressure lane throws `LaneOverflowError` and a drop lane drops its oldest messages. Must be >= `highWaterMark`. */
  hardLimit?: number;
  /** `backpressure` (never drop) or `drop-oldest` (bounded, counted drops). */
  overflow?: 'backpressure' | 'drop-oldest';
}

/** Queue policies of the four lanes, and the scheduling mode. Fields left out keep the lane's default. */
export interface LanesOptions {
  /** Control lane (Foundation's own messages). Default 4 MiB / 64 MiB, backpressure. */
  control?: LaneOptions;
  /** Events lane (the default lane of `send`). Default 4 MiB / 64 MiB, backpressure. */
  events?: LaneOptions;
  /** Telemetry lane. Default 1 MiB / 1 MiB, drop-oldest. */
  telemetry?: LaneOptions;
  /** Bulk lane. Default 16 MiB / 256 MiB, backpressure. */
  bulk?: LaneOptions;
  /** `priority` (control first, then weighted round-robin) or `fifo` (one queue; only to measure what priority buys). Default `priority`. */
  mode?: 'priority' | 'fifo';
}

/** Where the HTTP admin server listens, as an object. */
export interface HttpOptions {
  /** Interface to listen on. Default `127.0.0.1`. */
  host?: string;
  /** TCP port; 0 picks a free one (read `node.httpAddress`). */
  port: number;
  /**
   * Host names (without port) accepted in the `Host` header besides IP literals, `localhost` and
   * `host`: the names clients use to reach the server (e.g. a Prometheus scrape target's DNS
   * name). A leading `*.` accepts every subdomain. Default none (see docs/guides/admin.md).
   */
  allowedHosts?: string[];
}

/** Options of `Foundation.start`. Every key is optional. */
export interface FoundationOptions {
  /** Cluster-unique node name. Default `<hostname>-<pid>`. */
  name?: string;
  /** Address to listen on for mesh links. Default `127.0.0.1`; use `0.0.0.0` to accept links from other hosts. */
  host?: string;
  /** Mesh TCP port; the heartbeat worker uses the same UDP port when free. Default 0 (any free port). */
  port?: number;
  /** Host peers should dial, when it differs from `host` (NAT, wildcard binds). Default: `host`, or the first non-internal IPv4 for a wildcard bind. */
  advertiseHost?: string;
  /** Nodes only link with nodes of the same cluster name. Default `foundation`. */
  clusterName?: string;
  /** Shared secret that authenticates every link (HMAC challenge-response; never sent). Use 32 or more random bytes. Default: FOUNDATION_SECRET, else the development cookie file. */
  secret?: string | Uint8Array;
  /** Run without authentication. Required to start without a secret when NODE_ENV=production. Default false. */
  insecure?: boolean;
  /** Development cookie file. Default `~/.foundation-cookie` (or FOUNDATION_COOKIE_FILE). */
  cookieFile?: string;
  /** Connect without joining: for CLIs and tools. Hidden nodes are not gossiped and not listed as members. Default false. */
  hidden?: boolean;
  /** TLS (and mTLS with `requestCert`) for mesh links. Default: plain TCP (links are still authenticated). */
  tls?: MeshTlsOptions;
  /** Mortal mode (`true`), an Apprentice shorthand such as `{ strategy: 'static', hosts: [...] }`, or `false` (no discovery, overriding FOUNDATION_CLUSTER). Default: no discovery. */
  cluster?: ClusterOption;
  /** Wizard mode: named topologies, passed through untouched. Several run at once. */
  topologies?: Record<string, TopologySpec>;
  /** Failure detector tuning. */
  failureDetector?: FailureDetectorOptions;
  /** UDP port of the heartbeat worker. Default: the mesh port (or any free port if taken). */
  heartbeatPort?: number;
  /**
   * HTTP admin server (`/health`, `/ready`, `/metrics`, `/cluster`): a port (`9100`, on
   * 127.0.0.1), `'host:port'` (`'0.0.0.0:9100'`, `'[::]:9100'`), `{ host?, port, allowedHosts? }`,
   * or `false`.
   * Default: disabled.
   */
  http?: false | number | string | HttpOptions;
  /** Largest frame accepted on a link, in bytes (>= 70000). Default 1 MiB. Must exceed `fragmentBytes` by at least 1024. */
  maxFrameBytes?: number;
  /** Largest reassembled message, in bytes. Default 64 MiB. */
  maxMessageBytes?: number;
  /** Fragment size for large messages, in bytes (1024-1048576). Default 64 KiB: the most a control message waits behind bulk data. */
  fragmentBytes?: number;
  /**
   * Flow-control window of a link, in bytes: how much events/telemetry/bulk data may be in flight
   * (written but not yet acknowledged by the receiver). It bounds what a control message waits
   * behind, and caps one link's throughput at about window ÷ round-trip time: raise it on
   * high-latency links. Default 512 KiB; use the same value on every node.
   */
  windowBytes?: number;
  /** Lane queue policies, and `mode: 'fifo'` (one queue, no priority; for comparison only). */
  lanes?: LanesOptions;
  /** Handshake deadline in ms. Default 5000. */
  handshakeTimeoutMs?: number;
  /** TCP connect deadline in ms. Default 1500. */
  connectTimeoutMs?: number;
  /** Reconnect backoff: exponential from `baseMs` to `maxMs` (>= `baseMs`), with jitter. Default 100 → 1000. */
  reconnect?: { baseMs: number; maxMs: number };
  /** Loop-lag p99 (ms) above which `/health` reports `degraded`. Default 200. */
  degradedLoopLagMs?: number;
  /** The transport under `node.pubsub` and `node.channels` (docs/guides/pubsub.md). Default: the mesh. */
  pubsub?: PubSubOptions;
  /** A pino (or pino-compatible) logger. Default: pino to stderr. */
  logger?: Logger;
}

/** The transport under `node.pubsub`. */
export interface PubSubOptions {
  /** `mesh` (default: Foundation's own links, lanes isolate channels) or `redis` (Redis pub/sub through the optional `ioredis` package, for nodes that cannot dial each other). */
  adapter?: 'mesh' | 'redis';
  /** Options of the redis adapter; only with `adapter: 'redis'`. */
  redis?: RedisAdapterOptions;
}

const port = z.number().int().min(0).max(65535);
const positiveMs = z.number().int().positive();
const bytes = z.union([z.string(), z.instanceof(Buffer)]);

const strategyRef = z.union([z.string().min(1), z.custom<StrategyClass<never>>((v) => typeof v === 'function', 'expected a strategy name or class')]);

const topologySchema = z.strictObject({
  strategy: strategyRef,
  config: z.record(z.string(), z.unknown()).optional(),
});

const laneSchema = z.strictObject({
  highWaterMark: z.number().int().positive().optional(),
  hardLimit: z.number().int().positive().optional(),
  overflow: z.enum(['backpressure', 'drop-oldest']).optional(),
});

/** What `http` accepts, in words: the same shapes as FOUNDATION_HTTP and `foundation start --http`. */
export const HTTP_SHAPE = `false, a port number, "${hostPortShape({ allowBarePort: true })}" as a string, or { host?, port }`;

const httpSchema = z.union(
  [
    z.literal(false),
    port,
    z.string().refine((v) => parseHostPort(v, { allowBarePort: true }) !== undefined, `expected ${hostPortShape({ allowBarePort: true })}`),
    z.strictObject({ host: z.string().min(1).optional(), port, allowedHosts: z.array(z.string().min(1)).optional() }),
  ],
  { error: `expected ${HTTP_SHAPE}` },
);

const lanesSchema = z.strictObject({
  control: laneSchema.optional(),
  events: laneSchema.optional(),
  telemetry: laneSchema.optional(),
  bulk: laneSchema.optional(),
  mode: z.enum(['priority', 'fifo']).optional(),
});

const redisSchema = z.strictObject({
  url: z
    .string()
    .regex(/^rediss?:\/\//, 'expected a redis:// or rediss:// URL')
    .optional(),
  prefix: z.string().min(1).max(200).optional(),
  presenceMs: z.number().int().min(50).optional(),
});

const pubsubSchema = z
  .strictObject({
    adapter: z.enum(['mesh', 'redis']).optional(),
    redis: redisSchema.optional(),
  })
  .refine((v) => v.redis === undefined || v.adapter === 'redis', { message: "redis options need adapter: 'redis'", path: ['redis'] });

const failureDetectorSchema = z.strictObject({
  heartbeatIntervalMs: positiveMs.optional(),
  phiThreshold: z.number().positive().optional(),
  suspectPhi: z.number().positive().optional(),
  acceptablePauseMs: z.number().int().min(0).optional(),
  minStdDevMs: positiveMs.optional(),
  maxMainStallMs: positiveMs.optional(),
});

const tlsSchema = z.strictObject({
  key: bytes,
  cert: bytes,
  ca: z.union([bytes, z.array(bytes)]).optional(),
  requestCert: z.boolean().optional(),
  rejectUnauthorized: z.boolean().optional(),
  serverName: z.string().optional(),
});

export const optionsSchema = z.strictObject({
  name: z.string().regex(NODE_NAME_PATTERN, 'letters, digits and ._@:- only, at most 128 characters, starting with a letter or digit').optional(),
  host: z.string().min(1).optional(),
  port: port.optional(),
  advertiseHost: z.string().min(1).optional(),
  clusterName: z.string().min(1).max(128).optional(),
  secret: z.union([z.string().min(1), z.custom<Uint8Array>((v) => v instanceof Uint8Array, 'expected a string or bytes (Uint8Array)')]).optional(),
  insecure: z.boolean().optional(),
  cookieFile: z.string().min(1).optional(),
  hidden: z.boolean().optional(),
  tls: tlsSchema.optional(),
  cluster: z.union([z.boolean(), clusterShorthandSchema]).optional(),
  topologies: z.record(z.string(), topologySchema).optional(),
  failureDetector: failureDetectorSchema.optional(),
  heartbeatPort: port.optional(),
  http: httpSchema.optional(),
  maxFrameBytes: z.number().int().min(70_000).optional(),
  maxMessageBytes: z.number().int().positive().optional(),
  fragmentBytes: z
    .number()
    .int()
    .min(1024)
    .max(1 << 20)
    .optional(),
  windowBytes: z.number().int().min(65_536).optional(),
  lanes: lanesSchema.optional(),
  handshakeTimeoutMs: positiveMs.optional(),
  connectTimeoutMs: positiveMs.optional(),
  reconnect: z.strictObject({ baseMs: positiveMs, maxMs: positiveMs }).optional(),
  degradedLoopLagMs: positiveMs.optional(),
  pubsub: pubsubSchema.optional(),
  logger: z
    .custom<Logger>(
      (v) =>
        typeof v === 'object' &&
        v !== null &&
        ['debug', 'info', 'warn', 'error', 'child'].every((m) => typeof (v as Record<string, unknown>)[m] === 'function'),
      'expected a pino-compatible logger (with debug, info, warn, error and child methods)',
    )
    .optional(),
});

/** Start options after validation (the schema does not transform: the same shape as {@link FoundationOptions}). */
export type ParsedOptions = z.output<typeof optionsSchema>;

/** `true` when A and B are the same type, optional keys included (TS's own identity check). */
type Equals<A, B> = (<T>() => T extends A ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? true : false;
// Compile-time proofs that each documented interface is exactly what its schema accepts.
const optionsMatchSchema: Equals<FoundationOptions, z.input<typeof optionsSchema>> = true;
const parsedMatchesInput: Equals<ParsedOptions, z.input<typeof optionsSchema>> = true;
const failureDetectorMatchesSchema: Equals<FailureDetectorOptions, z.input<typeof failureDetectorSchema>> = true;
const laneMatchesSchema: Equals<LaneOptions, z.input<typeof laneSchema>> = true;
const lanesMatchSchema: Equals<LanesOptions, z.input<typeof lanesSchema>> = true;
const httpMatchesSchema: Equals<FoundationOptions['http'], z.input<typeof httpSchema> | undefined> = true;
const tlsMatchesSchema: Equals<MeshTlsOptions, z.input<typeof tlsSchema>> = true;
const topologyMatchesSchema: Equals<TopologySpec, z.input<typeof topologySchema>> = true;
const pubsubMatchesSchema: Equals<PubSubOptions, z.input<typeof pubsubSchema>> = true;
const redisMatchesSchema: Equals<RedisAdapterOptions, z.input<typeof redisSchema>> = true;
void [pubsubMatchesSchema, redisMatchesSchema];
void [
  optionsMatchSchema,
  parsedMatchesInput,
  failureDetectorMatchesSchema,
  laneMatchesSchema,
  lanesMatchSchema,
  httpMatchesSchema,
  tlsMatchesSchema,
  topologyMatchesSchema,
];

/**
 * The schema at `path`, walking `input` alongside so that a discriminated union resolves to the
 * branch the input names (`{ strategy: 'local', ... }` is checked against the `local` branch).
 */
function shapeAt(schema: z.ZodType, path: PropertyKey[], input: unknown): z.ZodType | undefined {
  let s: z.ZodType | undefined = schema;
  let value = input;
  for (const key of path) {
    if (!s) return undefined;
    s = unwrap(s, value);
    if (s instanceof z.ZodObject) s = (s.shape as Record<string, z.ZodType>)[String(key)];
    else if (s instanceof z.ZodRecord) s = s.valueType as z.ZodType;
    else return undefined;
    value = typeof value === 'object' && value !== null ? (value as Record<PropertyKey, unknown>)[key] : undefined;
  }
  return s ? unwrap(s, value) : undefined;
}

/** Strips optional/nullable; for a union, the object branch that `value` selects (else the first object branch). */
function unwrap(s: z.ZodType, value: unknown): z.ZodType {
  let cur = s;
  while (cur instanceof z.ZodOptional || cur instanceof z.ZodNullable) cur = cur.unwrap() as z.ZodType;
  if (cur instanceof z.ZodUnion) {
    const objects: z.ZodObject[] = [];
    const collect = (t: z.ZodType): void => {
      const u = unwrapOptional(t);
      if (u instanceof z.ZodUnion) for (const o of u.options as z.ZodType[]) collect(o);
      else if (u instanceof z.ZodObject) objects.push(u);
    };
    collect(cur);
    const named = (o: z.ZodObject): boolean => {
      if (typeof value !== 'object' || value === null) return false;
      return Object.entries(o.shape as Record<string, z.ZodType>).some(
        ([k, t]) => t instanceof z.ZodLiteral && (value as Record<string, unknown>)[k] === t.value,
      );
    };
    const chosen = objects.find(named) ?? objects[0];
    if (chosen) return chosen;
  }
  return cur;
}

function formatPath(path: PropertyKey[]): string {
  return path.map((p, i) => (typeof p === 'number' ? `[${p}]` : i === 0 ? String(p) : `.${String(p)}`)).join('') || '(root)';
}

/**
 * Turns the first zod issue into a ConfigError naming the key, the allowed values and a suggestion.
 * `input` (what was validated) picks the branch of a discriminated union for "unknown key" errors.
 */
export function toConfigError(error: z.ZodError, schema: z.ZodType = optionsSchema, prefix = '', input?: unknown): ConfigError {
  const issue = error.issues[0] as z.core.$ZodIssue;
  const path = [...(prefix ? [prefix] : []), ...issue.path] as PropertyKey[];
  if (issue.code === 'unrecognized_keys') {
    const shape = shapeAt(schema, issue.path as PropertyKey[], input);
    const allowed = shape instanceof z.ZodObject ? Object.keys(shape.shape) : [];
    const key = issue.keys[0] as string;
    const hint = didYouMean(key, allowed);
    return new ConfigError(formatPath([...path, key]), `unknown key${hint ? `; did you mean "${hint}"?` : '.'} Allowed keys: ${allowed.join(', ')}`);
  }
  if (issue.code === 'invalid_value') {
    const allowed = issue.values.map((v) => JSON.stringify(v));
    return new ConfigError(formatPath(path), `${issue.message}. Allowed values: ${allowed.join(', ')}`);
  }
  if (issue.code === 'invalid_union') {
    const discriminator = findDiscriminatorIssue(issue);
    if (discriminator) {
      const allowed = discriminators(schema, issue.path as PropertyKey[]);
      const given = discriminator.input;
      const hint =
        typeof given === 'string'
          ? didYouMean(
              given,
              allowed.map((a) => JSON.parse(a) as string),
            )
          : undefined;
      return new ConfigError(
        formatPath([...path, 'strategy']),
        `unknown strategy ${JSON.stringify(given)}${hint ? `; did you mean "${hint}"?` : '.'} Allowed values: ${allowed.join(', ')}`,
      );
    }
    // Report the most specific branch's problem (a nested key, a failed refinement, a value out
    // of range) rather than a bare "Invalid input"; when every branch only says "not my type",
    // the union's own message (which lists the accepted shapes) is the clearest.
    const nested = issue.errors.flat().find((e) => e.path.length > 0 || (e.code !== 'invalid_type' && e.code !== 'invalid_value'));
    if (nested) return toConfigError({ issues: [{ ...nested, path: [...issue.path, ...nested.path] }] } as unknown as z.ZodError, schema, prefix, input);
  }
  return new ConfigError(formatPath(path), issue.message);
}

function findDiscriminatorIssue(issue: z.core.$ZodIssue): { input: unknown } | undefined {
  if (issue.code !== 'invalid_union') return undefined;
  if ('note' in issue && issue.note === 'No matching discriminator') {
    const input = (issue as { input?: unknown }).input;
    const disc =
      typeof input === 'object' && input !== null
        ? (input as Record<string, unknown>)[String((issue as { discriminator?: string }).discriminator ?? 'strategy')]
        : input;
    return { input: disc };
  }
  for (const e of issue.errors.flat()) {
    const found = findDiscriminatorIssue(e);
    if (found) return found;
  }
  return undefined;
}

function discriminators(schema: z.ZodType, path: PropertyKey[]): string[] {
  let s: z.ZodType | undefined = schema;
  for (const key of path) {
    s = s ? unwrapOptional(s) : undefined;
    if (s instanceof z.ZodObject) s = (s.shape as Record<string, z.ZodType>)[String(key)];
  }
  s = s ? unwrapOptional(s) : undefined;
  const out: string[] = [];
  const visit = (t: z.ZodType): void => {
    const u = unwrapOptional(t);
    if (u instanceof z.ZodDiscriminatedUnion || u instanceof z.ZodUnion) for (const o of u.options as z.ZodType[]) visit(o);
    else if (u instanceof z.ZodObject) {
      const lit = (u.shape as Record<string, z.ZodType>).strategy;
      if (lit instanceof z.ZodLiteral) out.push(JSON.stringify(lit.value));
    }
  };
  if (s) visit(s);
  return out;
}

function unwrapOptional(s: z.ZodType): z.ZodType {
  let cur = s;
  while (cur instanceof z.ZodOptional) cur = cur.unwrap() as z.ZodType;
  return cur;
}

/** Validates start options eagerly; throws ConfigError on the first problem. */
export function parseOptions(input: unknown): ParsedOptions {
  const r = optionsSchema.safeParse(input ?? {}, { reportInput: true });
  if (!r.success) throw toConfigError(r.error, optionsSchema, '', input ?? {});
  return r.data;
}
