/**
 * `node.services`: the ServiceMesh facade. Service discovery with health, on the registry.
 *
 * What really happens (the facade is leaky on purpose, docs/guides/services.md):
 * - `register(name, ...)` is `registry.register('service:<name>:<id>', record)` on this node;
 *   the instance's check runs here, and a change of its health is `registry.update` of that
 *   name, replicated like a registration;
 * - `discover({ name })` is `registry.select('service:<name>:*')`, a local read, whose entries
 *   are shaped into records (with the link RTT to each owner) and filtered;
 * - `call(name, method, args)` picks a healthy instance and sends a request on the system topic
 *   `$svc.call` to the node that owns it (`InternalMesh.request`), which runs the instance's
 *   handler; a failure to reach it is retried on another instance.
 * A node's instances go when it goes down, because its registrations do.
 */
import { randomBytes } from 'node:crypto';
import semver from 'semver';
import { ConfigError, ErrorCodes, FoundationError, MessagingError, RegistryError, type ServiceCallAttempt, ServiceError } from '../../errors.js';
import { assertSerializable } from '../../mesh/codec.js';
import type { InternalMesh } from '../../mesh/interface.js';
import type { MessageContext } from '../../mesh/types.js';
import type { NameOwner, RegistryApi } from '../../registry/registry.js';
import type { Logger } from '../../util/logger.js';
import { RateLimitedLog } from '../../util/logger.js';
import { type CheckOutcome, type HealthCheck, HealthCheckRunner, resolveCheck } from './health-check.js';
import { checkStrategy, Picker, type PickStrategy } from './pick.js';
import {
  checkInstanceId,
  checkServiceName,
  type HealthState,
  type InstanceMeta,
  instanceName,
  instancePattern,
  parseInstance,
  type ServiceRecord,
  toRecord,
} from './records.js';

/** A handler of one method of a service, run on the node that owns the instance called. Its return value (or what its promise resolves to) is the call's result. */
export type ServiceHandler = (args: unknown, ctx: ServiceCallContext) => unknown | Promise<unknown>;

/** What a handler is told about the call. */
export interface ServiceCallContext {
  /** The calling node. */
  readonly from: string;
  readonly service: string;
  /** The instance id called. */
  readonly instance: string;
  readonly method: string;
}

/** Options of `services.register`. */
export interface ServiceRegisterOptions {
  /** Instance id, unique for this service in the cluster. Default: 16 random hex characters. */
  id?: string;
  /** Semver version of the instance (`1.4.2`), matched by `discover({ version: range })`. Default none. */
  version?: string;
  /** Tags, matched by `discover({ tags })` (an instance must carry every tag asked). Default none. */
  tags?: string[];
  /** Application metadata (serializable), returned in every record. Default `{}`. */
  meta?: Record<string, unknown>;
  /** Where clients reach the instance outside Foundation (a URL, `host:port`...). Default none. */
  endpoint?: string;
  /**
   * Health check run on this node: a function, an http(s) URL, or `{ run, intervalMs?, timeoutMs? }`
   * (defaults 5000 and 2000 ms; see `HealthCheckOptions`). Without one, the instance is always `passing`.
   */
  check?: HealthCheck;
  /** Handlers of `services.call` for this instance, by method name (they take precedence over `services.handle`). */
  handlers?: Record<string, ServiceHandler>;
}

/** A registered instance, returned by `services.register`. */
export interface ServiceRegistration {
  readonly name: string;
  readonly id: string;
  /** The registry name beneath: `service:<name>:<id>`. */
  readonly registryName: string;
  /** Current health as this node last published it. */
  health(): { status: HealthState; output: string | null; checkedAt: number | null };
  /** Stops the check and removes the instance from the cluster; false when it was already gone. */
  deregister(): boolean;
}

/** A discovery query. */
export interface ServiceQuery {
  /** Service name. */
  name: string;
  /** Only instances carrying every one of these tags. */
  tags?: string[];
  /** Only instances whose version satisfies this semver range (`^1.2`, `>=2 <3`); instances without a version never match. */
  version?: string;
  /** `true`: only healthy instances (`passing` or `warning`); `false`: only `critical` ones; absent: all. */
  healthy?: boolean;
}

/** Options of `services.pick`. */
export interface ServicePickOptions {
  /** Default `round-robin`. */
  strategy?: PickStrategy;
  /** As in `discover`. */
  tags?: string[];
  /** As in `discover`. */
  version?: string;
}

/** Options of `services.call`. */
export interface ServiceCallOptions extends ServicePickOptions {
  /** Milliseconds each attempt waits for its reply. Default 5000. */
  timeoutMs?: number;
  /**
   * Further attempts, each on another instance, when one cannot be reached, times out, is gone or
   * went critical. Default 2. A timed-out attempt may still have run: use 0 for methods that must
   * not run twice. Errors thrown by the handler are never retried.
   */
  retries?: number;
}

/** What `services.explain(name)` says. */
export interface ServiceExplanation {
  /** The facade call. */
  readonly facade: string;
  /** The registry call beneath. */
  readonly mechanism: string;
  /** The registry glob selected. */
  readonly pattern: string;
  /** One paragraph on what really happens. */
  readonly summary: string;
  /** The registry entries the select returns now, unshaped. */
  readonly entries: NameOwner[];
  /** Entries under the pattern that are not service records (registered by hand), left out of `discover`. */
  readonly ignored: string[];
}

/** Counters of the service mesh on this node. */
export interface ServicesStats {
  /** Instances in the cluster as this node sees them, by health. */
  instances: Record<HealthState, number>;
  /** Instances this node registered. */
  local: number;
  /** Check runs on this node, by outcome. */
  checks: Record<HealthState, number>;
  /** Health changes this node published. */
  healthChanges: number;
  /** `call`s made from this node, by outcome: `ok`, `error` (the handler threw), `no-method`, `unavailable`. */
  calls: { ok: number; error: number; noMethod: number; unavailable: number };
  /** Attempts retried on another instance. */
  retries: number;
  /** Calls this node's instances handled, and malformed call requests dropped. */
  served: number;
  requestsDropped: number;
}

/** The public API of `node.services`. */
export interface ServicesApi {
  /**
   * Registers an instance of `name` on this node. Resolves once the first check has run (so the
   * instance never appears with an unknown health) and the registration is made. Throws
   * `ConfigError` on bad options, `FOUNDATION_NAME_REGISTERED` when the id is taken.
   */
  register(name: string, opts?: ServiceRegisterOptions): Promise<ServiceRegistration>;
  /** Instances of a service from local replicated state (no network), in id order. */
  discover(query: ServiceQuery): ServiceRecord[];
  /** Every instance of every service, as `discover` shapes them (what `/services` serves). */
  list(): ServiceRecord[];
  /** One healthy instance chosen by `strategy` (preferring `passing` to `warning`); undefined when none. */
  pick(name: string, opts?: ServicePickOptions): ServiceRecord | undefined;
  /**
   * Calls `method` on a healthy instance of `name` with `args` (serializable); resolves with what
   * its handler returns. Rejects with `ServiceError`: `FOUNDATION_SERVICE_CALL_FAILED` (the handler
   * threw), `FOUNDATION_SERVICE_NO_METHOD`, `FOUNDATION_SERVICE_UNAVAILABLE` (no instance, or none
   * answered within the retries).
   */
  call<T = unknown>(name: string, method: string, args?: unknown, opts?: ServiceCallOptions): Promise<T>;
  /** Handles `method` for every instance of `name` on this node, present and future (an instance's own `handlers` take precedence). Returns the function that removes it. */
  handle(name: string, method: string, handler: ServiceHandler): () => void;
  /** Says what `discover({ name })` really does, with the registry entries beneath. */
  explain(name: string): ServiceExplanation;
  /** Counters. */
  stats(): ServicesStats;
}

/** System topic of `services.call`. */
export const SERVICES_CALL_TOPIC = '$svc.call';
/** Lane of calls and replies: the lane user requests default to. */
const CALL_LANE = 'events';
const DEFAULT_CALL_TIMEOUT_MS = 5000;
const DEFAULT_RETRIES = 2;

/** A call request on the wire. */
interface CallRequest {
  s: string;
  i: string;
  m: string;
  a: unknown;
}

/** A call reply on the wire. */
type CallReply =
  | { ok: true; v: unknown }
  | { ok: false; why: 'gone' | 'critical' }
  | { ok: false; why: 'no-method' }
  | { ok: false; why: 'error'; error: { name: string; message: string; code?: string } };

/** Transport errors after which another instance is tried; with `node`, every instance of that node is skipped. */
const RETRYABLE: Record<string, 'node' | 'instance'> = {
  [ErrorCodes.NODE_UNREACHABLE]: 'node',
  [ErrorCodes.LINK_CLOSED]: 'node',
  [ErrorCodes.NODE_STOPPED]: 'node',
  [ErrorCodes.NO_HANDLER]: 'node',
  [ErrorCodes.LANE_OVERFLOW]: 'node',
  [ErrorCodes.REQUEST_TIMEOUT]: 'instance',
};

/** One registry entry read as an instance (see `ServiceMesh.parsed`). */
interface ParsedEntry {
  readonly meta: InstanceMeta;
  readonly version: semver.SemVer | null;
  record?: ServiceRecord;
}

interface LocalInstance {
  readonly name: string;
  readonly id: string;
  readonly registryName: string;
  meta: InstanceMeta;
  readonly handlers: Map<string, ServiceHandler>;
  runner?: HealthCheckRunner;
}

function checkStrings(v: unknown, key: string): asserts v is string[] {
  if (!Array.isArray(v) || !v.every((t) => typeof t === 'string' && t.length > 0)) throw new ConfigError(key, 'expected an array of non-empty strings');
}

function parseCallRequest(v: unknown): CallRequest | undefined {
  if (typeof v !== 'object' || v === null) return undefined;
  const r = v as Partial<CallRequest>;
  return typeof r.s === 'string' && typeof r.i === 'string' && typeof r.m === 'string' && 'a' in r ? (r as CallRequest) : undefined;
}

function parseCallReply(v: unknown): CallReply | undefined {
  if (typeof v !== 'object' || v === null) return undefined;
  const r = v as Record<string, unknown>;
  if (r.ok === true) return { ok: true, v: r.v };
  if (r.why === 'gone' || r.why === 'critical' || r.why === 'no-method') return { ok: false, why: r.why };
  if (r.why === 'error' && typeof r.error === 'object' && r.error !== null) {
    const e = r.error as Record<string, unknown>;
    return {
      ok: false,
      why: 'error',
      error: {
        name: typeof e.name === 'string' ? e.name : 'Error',
        message: typeof e.message === 'string' ? e.message : 'unknown error',
        ...(typeof e.code === 'string' ? { code: e.code } : {}),
      },
    };
  }
  return undefined;
}

export class ServiceMesh implements ServicesApi {
  private readonly local = new Map<string, LocalInstance>();
  /** `services.handle` handlers: service name → method → handler. */
  private readonly serviceHandlers = new Map<string, Map<string, ServiceHandler>>();
  private readonly picker: Picker;
  private readonly warn: RateLimitedLog;
  /**
   * What each registry entry was read as (entries are replaced on every change, so a cached read
   * is never stale): its instance meta, its parsed version, the record last returned (reused while
   * the RTT to the owner is the same); null for an entry that is not an instance.
   */
  private readonly parsed = new WeakMap<NameOwner, ParsedEntry | null>();
  /** Parsed semver ranges of `discover({ version })`, by text. */
  private readonly ranges = new Map<string, semver.Range>();
  private readonly offs: Array<() => void> = [];
  private stopped = false;
  private readonly counters = {
    checks: { passing: 0, warning: 0, critical: 0 } as Record<HealthState, number>,
    healthChanges: 0,
    calls: { ok: 0, error: 0, noMethod: 0, unavailable: 0 },
    retries: 0,
    served: 0,
    requestsDropped: 0,
  };

  constructor(
    private readonly mesh: InternalMesh,
    private readonly registry: RegistryApi,
    log: Logger,
    random: () => number = Math.random,
  ) {
    this.warn = new RateLimitedLog(log);
    this.picker = new Picker(mesh.self.name, random);
  }

  /** Starts serving calls to this node's instances. */
  start(): void {
    this.offs.push(this.mesh.handleSystem(SERVICES_CALL_TOPIC, (payload, ctx) => this.serve(payload, ctx)));
    // An instance id registered on both sides of a partition: the registry keeps the earlier one
    // everywhere and this node gave its registration up, so its check and handlers stop too.
    this.offs.push(
      this.registry.watch((e) => {
        if (e.type !== 'conflict' || e.loser !== this.mesh.self.name) return;
        const inst = this.local.get(e.name);
        if (!inst) return;
        inst.runner?.stop();
        this.local.delete(e.name);
        this.warn.warn(
          `conflict:${e.name}`,
          { service: inst.name, id: inst.id, winner: e.winner },
          'service instance id also registered by another node, which keeps it: this instance is withdrawn',
        );
      }),
    );
  }

  /** Stops every check and serving calls; the instances leave with the node (its registrations go when it goes down). */
  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    for (const inst of this.local.values()) inst.runner?.stop();
    for (const off of this.offs.splice(0)) off();
  }

  // ---- registration -------------------------------------------------------------------------

  async register(name: string, opts: ServiceRegisterOptions = {}): Promise<ServiceRegistration> {
    checkServiceName(name);
    if (typeof opts !== 'object' || opts === null) throw new ConfigError('opts', 'expected an object of register options');
    const id = opts.id ?? randomBytes(8).toString('hex');
    checkInstanceId(id);
    if (opts.version !== undefined && (typeof opts.version !== 'string' || semver.valid(opts.version) === null))
      throw new ConfigError('version', `expected a semver version such as "1.4.2", got ${JSON.stringify(opts.version)}`);
    const tags = opts.tags ?? [];
    checkStrings(tags, 'tags');
    const meta = opts.meta ?? {};
    if (typeof meta !== 'object' || meta === null || Array.isArray(meta)) throw new ConfigError('meta', 'expected an object');
    assertSerializable(meta, '$.meta');
    if (opts.endpoint !== undefined && (typeof opts.endpoint !== 'string' || opts.endpoint.length === 0))
      throw new ConfigError('endpoint', 'expected a non-empty string (a URL, host:port...)');
    const handlers = new Map<string, ServiceHandler>();
    for (const [method, fn] of Object.entries(opts.handlers ?? {})) {
      if (typeof fn !== 'function') throw new ConfigError(`handlers.${method}`, 'expected a function');
      handlers.set(method, fn);
    }
    const check = opts.check === undefined ? undefined : resolveCheck(opts.check);
    const registryName = instanceName(name, id);
    if (this.stopped) throw new RegistryError(ErrorCodes.NODE_STOPPED, 'node is stopped: no new service instances');
    const taken = this.registry.lookup(registryName);
    if (taken) throw new RegistryError(ErrorCodes.NAME_REGISTERED, `instance "${id}" of service "${name}" is already registered by node ${taken.node}`, taken);

    const runner = check ? new HealthCheckRunner(check, (o) => this.onOutcome(inst, o)) : undefined;
    const first = runner ? await runner.start() : undefined;
    if (first) this.counters.checks[first.status]++;
    const inst: LocalInstance = {
      name,
      id,
      registryName,
      handlers,
      ...(runner ? { runner } : {}),
      meta: {
        $service: 1,
        name,
        id,
        version: opts.version ?? null,
        tags: [...tags],
        meta,
        endpoint: opts.endpoint ?? null,
        health: first?.status ?? 'passing',
        output: first?.output ?? null,
        checkedAt: first?.at ?? null,
      },
    };
    try {
      if (this.stopped) throw new RegistryError(ErrorCodes.NODE_STOPPED, 'node is stopped: no new service instances');
      this.registry.register(registryName, inst.meta);
    } catch (err) {
      runner?.stop();
      throw err;
    }
    this.local.set(registryName, inst);
    return {
      name,
      id,
      registryName,
      health: () => ({ status: inst.meta.health, output: inst.meta.output, checkedAt: inst.meta.checkedAt }),
      deregister: () => this.deregister(inst),
    };
  }

  private deregister(inst: LocalInstance): boolean {
    inst.runner?.stop();
    if (this.local.get(inst.registryName) !== inst) return false;
    this.local.delete(inst.registryName);
    return this.registry.unregister(inst.registryName);
  }

  /** A later check run: publish a change of state (or of its output) through the registry. */
  private onOutcome(inst: LocalInstance, o: CheckOutcome): void {
    this.counters.checks[o.status]++;
    if (this.local.get(inst.registryName) !== inst) return;
    if (o.status === inst.meta.health && o.output === inst.meta.output) return;
    inst.meta = { ...inst.meta, health: o.status, output: o.output, checkedAt: o.at };
    this.counters.healthChanges++;
    try {
      this.registry.update(inst.registryName, inst.meta);
    } catch (err) {
      this.warn.warn(
        `update:${inst.registryName}`,
        { service: inst.name, id: inst.id, error: (err as Error).message },
        'service health could not be published',
      );
    }
  }

  handle(name: string, method: string, handler: ServiceHandler): () => void {
    checkServiceName(name);
    if (typeof method !== 'string' || method.length === 0) throw new ConfigError('method', 'expected a non-empty string');
    if (typeof handler !== 'function') throw new ConfigError('handler', 'expected a function');
    let byMethod = this.serviceHandlers.get(name);
    if (!byMethod) {
      byMethod = new Map();
      this.serviceHandlers.set(name, byMethod);
    }
    if (byMethod.has(method))
      throw new FoundationError(ErrorCodes.HANDLER_EXISTS, `method "${method}" of service "${name}" already has a handler on this node (remove it first)`);
    byMethod.set(method, handler);
    return () => {
      if (byMethod.get(method) === handler) byMethod.delete(method);
    };
  }

  // ---- discovery ----------------------------------------------------------------------------

  private entryOf(owner: NameOwner): ParsedEntry | undefined {
    let e = this.parsed.get(owner);
    if (e === undefined) {
      const meta = parseInstance(owner);
      e = meta ? { meta, version: meta.version === null ? null : semver.parse(meta.version) } : null;
      this.parsed.set(owner, e);
    }
    return e ?? undefined;
  }

  private instanceOf(owner: NameOwner): InstanceMeta | undefined {
    return this.entryOf(owner)?.meta;
  }

  private rttTo(node: string): number | null {
    if (node === this.mesh.self.name) return 0;
    return this.mesh.membership.get(node)?.rttMs ?? null;
  }

  /** The record of an entry (frozen, so one can be handed out again while nothing it shows has changed). */
  private recordOf(o: NameOwner, e: ParsedEntry, rttMs: number | null): ServiceRecord {
    if (e.record && e.record.rttMs === rttMs) return e.record;
    e.record = Object.freeze(toRecord(o.node, e.meta, rttMs));
    return e.record;
  }

  private shape(owners: NameOwner[]): ServiceRecord[] {
    const out: ServiceRecord[] = [];
    for (const o of owners) {
      const e = this.entryOf(o);
      if (e) out.push(this.recordOf(o, e, this.rttTo(o.node)));
    }
    return out;
  }

  private rangeOf(text: unknown): semver.Range {
    let range = typeof text === 'string' ? this.ranges.get(text) : undefined;
    if (range) return range;
    try {
      range = new semver.Range(text as string);
    } catch {
      throw new ConfigError('version', `expected a semver range such as "^1.2" or ">=2 <3", got ${JSON.stringify(text)}`);
    }
    if (this.ranges.size >= 256) this.ranges.clear();
    this.ranges.set(text as string, range);
    return range;
  }

  discover(query: ServiceQuery): ServiceRecord[] {
    if (typeof query !== 'object' || query === null) throw new ConfigError('query', 'expected { name, tags?, version?, healthy? }');
    checkServiceName(query.name);
    if (query.tags !== undefined) checkStrings(query.tags, 'tags');
    const range = query.version === undefined ? undefined : this.rangeOf(query.version);
    if (query.healthy !== undefined && typeof query.healthy !== 'boolean') throw new ConfigError('healthy', 'expected a boolean');
    const out: ServiceRecord[] = [];
    // One RTT per node per call: instances of one node share it.
    let lastNode: string | undefined;
    let lastRtt: number | null = null;
    for (const o of this.registry.select(instancePattern(query.name))) {
      const e = this.entryOf(o);
      if (!e) continue;
      const m = e.meta;
      if (query.healthy !== undefined && (m.health !== 'critical') !== query.healthy) continue;
      if (query.tags && !query.tags.every((t) => m.tags.includes(t))) continue;
      if (range && (e.version === null || !range.test(e.version))) continue;
      if (o.node !== lastNode) {
        lastNode = o.node;
        lastRtt = this.rttTo(o.node);
      }
      out.push(this.recordOf(o, e, lastRtt));
    }
    return out;
  }

  list(): ServiceRecord[] {
    return this.shape(this.registry.select(instancePattern()));
  }

  pick(name: string, opts: ServicePickOptions = {}): ServiceRecord | undefined {
    const strategy = opts.strategy ?? 'round-robin';
    checkStrategy(strategy);
    const records = this.discover({ name, healthy: true, ...(opts.tags ? { tags: opts.tags } : {}), ...(opts.version ? { version: opts.version } : {}) });
    return this.picker.pick(name, records, strategy);
  }

  explain(name: string): ServiceExplanation {
    checkServiceName(name);
    const pattern = instancePattern(name);
    const entries = this.registry.select(pattern);
    return {
      facade: `services.discover({ name: '${name}' })`,
      mechanism: `registry.select('${pattern}')`,
      pattern,
      summary:
        `A registry select whose results are shaped into records carrying health. Each instance of "${name}" is the registry name ` +
        `service:${name}:<id>, registered by the node that runs it with its record as meta; that node runs the instance's check and ` +
        "publishes a change of health with registry.update. discover() reads this node's replica of the registry (no network) and adds " +
        'the heartbeat RTT to each owner; an instance leaves with its node, as every registration does.',
      entries,
      ignored: entries.filter((o) => !this.instanceOf(o)).map((o) => o.name),
    };
  }

  stats(): ServicesStats {
    const instances: Record<HealthState, number> = { passing: 0, warning: 0, critical: 0 };
    for (const o of this.registry.select(instancePattern())) {
      const m = this.instanceOf(o);
      if (m) instances[m.health]++;
    }
    return {
      instances,
      local: this.local.size,
      checks: { ...this.counters.checks },
      healthChanges: this.counters.healthChanges,
      calls: { ...this.counters.calls },
      retries: this.counters.retries,
      served: this.counters.served,
      requestsDropped: this.counters.requestsDropped,
    };
  }

  // ---- calls --------------------------------------------------------------------------------

  async call<T = unknown>(name: string, method: string, args: unknown = null, opts: ServiceCallOptions = {}): Promise<T> {
    checkServiceName(name);
    if (typeof method !== 'string' || method.length === 0) throw new ConfigError('method', 'expected a non-empty string');
    const strategy = opts.strategy ?? 'round-robin';
    checkStrategy(strategy);
    const timeoutMs = opts.timeoutMs ?? DEFAULT_CALL_TIMEOUT_MS;
    if (typeof timeoutMs !== 'number' || !Number.isFinite(timeoutMs) || timeoutMs <= 0)
      throw new ConfigError('timeoutMs', `expected a positive number of milliseconds, got ${String(timeoutMs)}`);
    const retries = opts.retries ?? DEFAULT_RETRIES;
    if (!Number.isInteger(retries) || retries < 0) throw new ConfigError('retries', `expected an integer >= 0, got ${String(retries)}`);
    assertSerializable(args, '$.args');
    const query: ServiceQuery = { name, healthy: true, ...(opts.tags ? { tags: opts.tags } : {}), ...(opts.version ? { version: opts.version } : {}) };

    const attempts: ServiceCallAttempt[] = [];
    const skipNodes = new Set<string>();
    const skipInstances = new Set<string>();
    for (let attempt = 0; attempt <= retries; attempt++) {
      const candidates = this.discover(query).filter((r) => !skipNodes.has(r.node) && !skipInstances.has(r.id));
      const target = this.picker.pick(name, candidates, strategy);
      if (!target) break;
      if (attempt > 0) this.counters.retries++;
      let reply: CallReply | undefined;
      try {
        const raw = await this.mesh.request<unknown>(
          target.node,
          SERVICES_CALL_TOPIC,
          { s: name, i: target.id, m: method, a: args } satisfies CallRequest,
          CALL_LANE,
          timeoutMs,
        );
        reply = parseCallReply(raw);
        if (!reply) throw new MessagingError(ErrorCodes.REMOTE_ERROR, `malformed reply from ${target.node}`);
      } catch (err) {
        const code = err instanceof FoundationError ? err.code : undefined;
        const scope = code ? RETRYABLE[code] : undefined;
        if (!scope) throw err;
        attempts.push({ node: target.node, instance: target.id, code: code as string, message: (err as Error).message });
        if (scope === 'node') skipNodes.add(target.node);
        else skipInstances.add(target.id);
        continue;
      }
      if (reply.ok) {
        this.counters.calls.ok++;
        return reply.v as T;
      }
      if (reply.why === 'gone' || reply.why === 'critical') {
        attempts.push({
          node: target.node,
          instance: target.id,
          code: reply.why,
          message: reply.why === 'gone' ? 'instance deregistered' : 'instance is critical on its node',
        });
        skipInstances.add(target.id);
        continue;
      }
      if (reply.why === 'no-method') {
        this.counters.calls.noMethod++;
        throw new ServiceError(ErrorCodes.SERVICE_NO_METHOD, `instance ${target.id} of "${name}" on ${target.node} has no handler for "${method}"`, {
          service: name,
          method,
          attempts,
        });
      }
      if (reply.why !== 'error') continue;
      this.counters.calls.error++;
      throw new ServiceError(ErrorCodes.SERVICE_CALL_FAILED, `"${name}".${method} failed on ${target.node} (instance ${target.id}): ${reply.error.message}`, {
        service: name,
        method,
        attempts,
        remote: { ...reply.error, node: target.node, instance: target.id },
      });
    }
    this.counters.calls.unavailable++;
    const why = attempts.length === 0 ? 'no healthy instance' : attempts.map((a) => `${a.instance}@${a.node}: ${a.code}`).join('; ');
    throw new ServiceError(ErrorCodes.SERVICE_UNAVAILABLE, `no instance of "${name}" answered "${method}" (${why})`, { service: name, method, attempts });
  }

  /** Runs a call on this node: the instance must still be here and not critical. */
  private async serve(payload: unknown, ctx: MessageContext): Promise<CallReply> {
    const req = parseCallRequest(payload);
    if (!req) {
      this.counters.requestsDropped++;
      this.warn.warn(`bad:${ctx.from}`, { from: ctx.from }, 'malformed service call dropped');
      return { ok: false, why: 'gone' };
    }
    const inst = this.local.get(instanceName(req.s, req.i));
    if (!inst || this.stopped) return { ok: false, why: 'gone' };
    if (inst.meta.health === 'critical') return { ok: false, why: 'critical' };
    const handler = inst.handlers.get(req.m) ?? this.serviceHandlers.get(req.s)?.get(req.m);
    if (!handler) return { ok: false, why: 'no-method' };
    this.counters.served++;
    try {
      const v = await handler(req.a, { from: ctx.from, service: req.s, instance: req.i, method: req.m });
      // A result the codec refuses would fail the reply, and the caller would wait out its timeout.
      assertSerializable(v, '$.result');
      return { ok: true, v };
    } catch (err) {
      const e = err instanceof Error ? err : new Error(String(err));
      const code = (e as { code?: unknown }).code;
      return { ok: false, why: 'error', error: { name: e.name, message: e.message, ...(typeof code === 'string' ? { code } : {}) } };
    }
  }
}
