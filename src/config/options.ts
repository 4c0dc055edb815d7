/**
 * Start options: the zod schema, the defaults, and errors that name the key, the allowed values
 * and a did-you-mean suggestion.
 */
import { z } from 'zod';
import { ConfigError } from '../errors.js';
import { NODE_NAME_PATTERN, parseAddress } from '../mesh/identity.js';
import { didYouMean } from '../util/suggest.js';

const port = z.number().int().min(0).max(65535);
const positiveMs = z.number().int().positive();

const strategyRef = z.union([z.string().min(1), z.custom<new (config: never) => unknown>((v) => typeof v === 'function', 'expected a strategy name or class')]);

const topologySchema = z.strictObject({
  strategy: strategyRef,
  config: z.record(z.string(), z.unknown()).optional(),
});

const hostPort = z.string().refine((v) => parseAddress(v) !== undefined, 'expected "host:port"');

const clusterShorthand = z.discriminatedUnion('strategy', [
  z.strictObject({
    strategy: z.literal('kubernetes'),
    appName: z.string().min(1),
    namespace: z.string().min(1).optional(),
    mode: z.enum(['endpointslices', 'pods']).optional(),
    port: port.optional(),
  }),
  z.strictObject({ strategy: z.literal('dns'), query: z.string().min(1), port: port.optional() }),
  z.strictObject({ strategy: z.literal('dns-srv'), service: z.string().min(1) }),
  z.strictObject({ strategy: z.literal('gossip'), secret: z.string().min(1).optional() }),
  z.strictObject({ strategy: z.literal('mdns') }),
  z.strictObject({ strategy: z.literal('static'), hosts: z.array(hostPort) }),
  z.strictObject({ strategy: z.literal('fly'), app: z.string().min(1), port: port.optional() }),
  z.strictObject({ strategy: z.literal('local'), dir: z.string().min(1).optional() }),
]);

const laneSchema = z.strictObject({
  highWaterMark: z.number().int().positive().optional(),
  hardLimit: z.number().int().positive().optional(),
  overflow: z.enum(['backpressure', 'drop-oldest']).optional(),
});

export const optionsSchema = z.strictObject({
  name: z.string().regex(NODE_NAME_PATTERN, 'letters, digits and ._@:- only, at most 128 characters, starting with a letter or digit').optional(),
  host: z.string().min(1).optional(),
  port: port.optional(),
  advertiseHost: z.string().min(1).optional(),
  clusterName: z.string().min(1).max(128).optional(),
  secret: z.union([z.string().min(1), z.instanceof(Uint8Array)]).optional(),
  insecure: z.boolean().optional(),
  cookieFile: z.string().optional(),
  hidden: z.boolean().optional(),
  tls: z
    .strictObject({
      key: z.union([z.string(), z.instanceof(Buffer)]),
      cert: z.union([z.string(), z.instanceof(Buffer)]),
      ca: z.union([z.string(), z.instanceof(Buffer), z.array(z.union([z.string(), z.instanceof(Buffer)]))]).optional(),
      requestCert: z.boolean().optional(),
      rejectUnauthorized: z.boolean().optional(),
      serverName: z.string().optional(),
    })
    .optional(),
  cluster: z.union([z.boolean(), clusterShorthand]).optional(),
  topologies: z.record(z.string(), topologySchema).optional(),
  failureDetector: z
    .strictObject({
      heartbeatIntervalMs: positiveMs.optional(),
      phiThreshold: z.number().positive().optional(),
      suspectPhi: z.number().positive().optional(),
      acceptablePauseMs: z.number().int().min(0).optional(),
      minStdDevMs: positiveMs.optional(),
      maxMainStallMs: positiveMs.optional(),
    })
    .optional(),
  heartbeatPort: port.optional(),
  http: z.union([z.literal(false), z.strictObject({ host: z.string().optional(), port: port })]).optional(),
  maxFrameBytes: z.number().int().min(70_000).optional(),
  maxMessageBytes: z.number().int().positive().optional(),
  fragmentBytes: z
    .number()
    .int()
    .min(1024)
    .max(1 << 20)
    .optional(),
  windowBytes: z.number().int().min(65_536).optional(),
  lanes: z
    .strictObject({
      control: laneSchema.optional(),
      events: laneSchema.optional(),
      telemetry: laneSchema.optional(),
      bulk: laneSchema.optional(),
      mode: z.enum(['priority', 'fifo']).optional(),
    })
    .optional(),
  handshakeTimeoutMs: positiveMs.optional(),
  connectTimeoutMs: positiveMs.optional(),
  reconnect: z.strictObject({ baseMs: positiveMs, maxMs: positiveMs }).optional(),
  degradedLoopLagMs: positiveMs.optional(),
  logger: z.custom<object>((v) => typeof v === 'object' && v !== null, 'expected a pino-compatible logger').optional(),
});

export type ParsedOptions = z.infer<typeof optionsSchema>;

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
    // Report the most specific branch's problem rather than a bare "Invalid input".
    const nested = issue.errors.flat().find((e) => e.code !== 'invalid_type' || e.path.length > 0);
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
