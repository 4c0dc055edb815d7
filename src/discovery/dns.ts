/**
 * `dns`: peers are the A and/or AAAA records of one name, polled (libcluster's DNSPoll; on Fly
 * the name is `<app>.internal`, on Kubernetes a headless service).
 *
 * Failure semantics (libcluster issues #54 and #190: clusters torn apart by DNS hiccups):
 * only an answer that holds records replaces the peer set. Everything else — SERVFAIL,
 * REFUSED, a timeout, no server listening, and also NXDOMAIN / NODATA (no such name, no
 * records) — is reported with `ctx.lookupFailed` and keeps the current peers: "unknown", never
 * "no nodes". NXDOMAIN is included on purpose: a resolver restart, a split-horizon answer or
 * a Kubernetes service whose pods are all briefly unready all answer NXDOMAIN, and acting on it
 * would disconnect a healthy cluster. Nodes that really left are noticed by the failure
 * detector. Where the name lists this node too (Fly's `<app>.internal`, a headless service once
 * this pod is ready), a shrunken cluster still answers with records: an answer that holds only
 * this node is a legitimate empty peer set.
 *
 * With `family: 'both'`, one family answering is enough: a family that has no records
 * (NODATA) contributes nothing, and a family whose lookup failed (timeout, SERVFAIL...)
 * contributes the addresses it had at its last successful lookup, with one warning per
 * distinct error.
 */

import { Resolver } from 'node:dns/promises';
import { isIP } from 'node:net';
import { ConfigError, ErrorCodes, FoundationError } from '../errors.js';
import { formatAddress, parseAddress } from '../mesh/identity.js';
import { LogOnce } from '../util/logger.js';
import { rejectUnknownKeys, type Strategy, type StrategyContext } from './strategy.js';
import { intOption } from './strategy-config.js';

/** Which address records to ask for: `ipv4` = A, `ipv6` = AAAA, `both` = A and AAAA. */
export type DnsFamily = 'ipv4' | 'ipv6' | 'both';

/** Options shared by the `dns` and `dns-srv` strategies. */
export interface DnsResolverOptions {
  /** Address records to look up: `'ipv4'` (A), `'ipv6'` (AAAA) or `'both'` (A and AAAA). Default `'both'`. */
  family?: DnsFamily;
  /** Time between the end of one lookup and the start of the next, in ms (integer >= 50). Default 5000. */
  pollIntervalMs?: number;
  /**
   * Time a DNS server is given to answer one try of a query, in ms (integer 10..60000). A query
   * unanswered after `timeoutMs × tries` fails as a timeout. Default 2000.
   */
  timeoutMs?: number;
  /** Tries of each query (against each server) before it fails (integer 1..10). Default 2. */
  tries?: number;
  /**
   * DNS servers to ask, each an IP address with an optional port: `10.0.0.2`, `10.0.0.2:5353`,
   * `fd00::2` or `[fd00::2]:5353`. Default: the system's resolvers (`/etc/resolv.conf`).
   */
  servers?: string[];
}

/** Configuration of the `dns` strategy. */
export interface DnsStrategyConfig extends DnsResolverOptions {
  /** Name whose A/AAAA records are the peers, e.g. `my-app.internal` or `my-app.default.svc.cluster.local`. Required. */
  query: string;
  /** Mesh port the peers listen on (integer 1..65535); every record becomes `host:port`. Required. */
  port: number;
}

/** The keys of `DnsResolverOptions`, shared by the `dns` and `dns-srv` configs. */
export const RESOLVER_OPTION_KEYS: readonly (keyof DnsResolverOptions)[] = ['family', 'pollIntervalMs', 'timeoutMs', 'tries', 'servers'];
const DNS_CONFIG_KEYS: readonly string[] = ['query', 'port', ...RESOLVER_OPTION_KEYS] satisfies readonly (keyof DnsStrategyConfig)[];

type RecordType = 'A' | 'AAAA';

/** Outcome of one query. `empty` is NXDOMAIN/NODATA: an answer, but one without records. */
export type QueryResult<T> = { kind: 'ok'; values: T[] } | { kind: 'empty'; code: string } | { kind: 'error'; code: string };
type QueryOutcome = QueryResult<string>;

/** What one poll found: the full peer set, or a failure that keeps the current one. */
export type LookupResult = { ok: true; addresses: string[]; warnings: string[] } | { ok: false; message: string };

const CODE_TEXT: Record<string, string> = {
  ENODATA: 'no records',
  ENOTFOUND: 'no such name (NXDOMAIN)',
  ESERVFAIL: 'server failure (SERVFAIL)',
  EREFUSED: 'query refused (REFUSED)',
  ETIMEOUT: 'timed out',
  ECONNREFUSED: 'connection refused: no DNS server listening',
  EFORMERR: 'server rejected the query as malformed (FORMERR)',
  ENOTIMP: 'query type not implemented by the server (NOTIMP)',
  EBADRESP: 'malformed answer',
  ECANCELLED: 'cancelled',
};

/** `ETIMEOUT (timed out)`: the error code and what it means. */
export function describeDnsCode(code: string): string {
  const text = CODE_TEXT[code];
  return text ? `${code} (${text})` : code;
}

const LABEL = '[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?';
const HOSTNAME = new RegExp(`^${LABEL}(?:\\.${LABEL})*\\.?$`);

/** Validates a DNS name (underscores allowed, for SRV names); throws a ConfigError naming `key`. */
export function validateDnsName(key: string, value: unknown, example: string): string {
  if (typeof value !== 'string' || value.length === 0) throw new ConfigError(key, `expected a DNS name, e.g. "${example}"`);
  if (isIP(value)) throw new ConfigError(key, `"${value}" is an IP address, not a DNS name; use the static strategy for fixed addresses`);
  if (value.replace(/\.$/, '').length > 253 || !HOSTNAME.test(value)) throw new ConfigError(key, `"${value}" is not a valid DNS name, e.g. "${example}"`);
  return value.replace(/\.$/, '');
}

/** Validated, defaulted resolver options. */
export interface ResolvedDnsOptions {
  family: DnsFamily;
  pollIntervalMs: number;
  timeoutMs: number;
  tries: number;
  servers: string[] | undefined;
}

/** Validates the options shared by `dns` and `dns-srv`, applying the defaults. */
export function validateResolverOptions(config: DnsResolverOptions): ResolvedDnsOptions {
  const family = config.family ?? 'both';
  if (family !== 'ipv4' && family !== 'ipv6' && family !== 'both') {
    throw new ConfigError('family', `expected one of 'ipv4', 'ipv6', 'both', got ${JSON.stringify(family)}`);
  }
  const pollIntervalMs = intOption('pollIntervalMs', config.pollIntervalMs, 5000, 50, 86_400_000);
  const timeoutMs = intOption('timeoutMs', config.timeoutMs, 2000, 10, 60_000);
  const tries = intOption('tries', config.tries, 2, 1, 10);
  let servers: string[] | undefined;
  if (config.servers !== undefined) {
    if (!Array.isArray(config.servers) || config.servers.length === 0) {
      throw new ConfigError('servers', 'expected a non-empty array of "ip" or "ip:port" strings (omit it to use the system resolvers)');
    }
    servers = config.servers.map((s, i) => {
      if (typeof s === 'string' && isIP(s)) return s;
      const a = typeof s === 'string' ? parseAddress(s) : undefined;
      if (!a || !isIP(a.host))
        throw new ConfigError(`servers[${i}]`, `"${String(s)}" is not an IP address or ip:port (e.g. "10.0.0.2", "10.0.0.2:53", "[fd00::2]:53")`);
      return s;
    });
  }
  return { family, pollIntervalMs, timeoutMs, tries, servers };
}

function errorCode(err: unknown): string {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  return typeof code === 'string' ? code : err instanceof Error ? err.message : String(err);
}

/**
 * Runs one query, classifying the result; a query still unanswered after `deadlineMs` counts as
 * ETIMEOUT (c-ares lengthens later tries, so its own limit is looser). Never throws.
 */
export async function runQuery<T>(q: () => Promise<T[]>, deadlineMs: number): Promise<QueryResult<T>> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<QueryResult<T>>((resolve) => {
    timer = setTimeout(() => resolve({ kind: 'error', code: 'ETIMEOUT' }), deadlineMs);
    timer.unref();
  });
  const answer = (async (): Promise<QueryResult<T>> => {
    try {
      const values = await q();
      return values.length > 0 ? { kind: 'ok', values } : { kind: 'empty', code: 'ENODATA' };
    } catch (err) {
      const code = errorCode(err);
      return code === 'ENODATA' || code === 'ENOTFOUND' ? { kind: 'empty', code } : { kind: 'error', code };
    }
  })();
  try {
    return await Promise.race([answer, deadline]);
  } finally {
    clearTimeout(timer);
  }
}

/** The record types a family asks for. */
export function recordTypes(family: DnsFamily): RecordType[] {
  return family === 'ipv4' ? ['A'] : family === 'ipv6' ? ['AAAA'] : ['A', 'AAAA'];
}

/**
 * Resolves a name's addresses over `family`, reusing `lastKnown[type]` for a record type whose
 * query failed while another answered. Returns `hosts` undefined when no type answered with records.
 */
export async function resolveHosts(
  resolver: Resolver,
  name: string,
  options: ResolvedDnsOptions,
  lastKnown: Map<RecordType, string[]>,
): Promise<{ hosts: string[] | undefined; failures: string[]; partial: string[] }> {
  const types = recordTypes(options.family);
  const deadline = options.timeoutMs * options.tries;
  const outcomes = await Promise.all(types.map((t) => runQuery(() => (t === 'A' ? resolver.resolve4(name) : resolver.resolve6(name)), deadline)));
  const answered = outcomes.some((o) => o.kind === 'ok');
  const failures = types.map((t, i) => {
    const o = outcomes[i] as QueryOutcome;
    return o.kind === 'ok' ? `${t} ok` : `${t} ${describeDnsCode(o.code)}`;
  });
  if (!answered) return { hosts: undefined, failures, partial: [] };
  const hosts: string[] = [];
  const partial: string[] = [];
  types.forEach((t, i) => {
    const o = outcomes[i] as QueryOutcome;
    if (o.kind === 'ok') {
      lastKnown.set(t, o.values);
      hosts.push(...o.values);
    } else if (o.kind === 'empty') {
      lastKnown.set(t, []);
    } else {
      const kept = lastKnown.get(t) ?? [];
      hosts.push(...kept);
      partial.push(`${t} lookup of "${name}" failed: ${describeDnsCode(o.code)}; keeping its ${kept.length} last known address(es)`);
    }
  });
  return { hosts, failures, partial };
}

function canonicalHost(host: string): string {
  const h = host.toLowerCase().replace(/\.$/, '');
  if (isIP(h) === 6) {
    try {
      return new URL(`http://[${h}]/`).hostname.slice(1, -1);
    } catch {
      return h;
    }
  }
  return h;
}

/** True when `address` names this node (`host:port` compared case- and IPv6-notation-insensitively). */
export function isSelf(address: string, selfAddress: string): boolean {
  if (address === selfAddress) return true;
  const a = parseAddress(address);
  const s = parseAddress(selfAddress);
  return !!a && !!s && a.port === s.port && canonicalHost(a.host) === canonicalHost(s.host);
}

/**
 * Shared polling machinery of the DNS strategies: one resolver per run, a lookup right at start
 * and then `pollIntervalMs` after each lookup ends (lookups never overlap), stop cancelling the
 * timer and the queries in flight.
 */
export abstract class PollingDnsStrategy implements Strategy {
  abstract readonly name: string;
  protected resolver?: Resolver;
  private ctx?: StrategyContext;
  private timer?: NodeJS.Timeout;
  private running = false;
  private failing = false;
  /** Partial-failure warnings logged, each once until a lookup answers in full. */
  private readonly warned = new LogOnce();
  private onAbort?: () => void;

  constructor(protected readonly options: ResolvedDnsOptions) {}

  /** `via 127.0.0.1:5353` or `via the system resolvers`, for messages. */
  protected get via(): string {
    return this.options.servers ? `via ${this.options.servers.join(', ')}` : 'via the system resolvers';
  }

  /** One poll: the full peer set (self not yet removed), or why the lookup failed. */
  protected abstract lookup(resolver: Resolver): Promise<LookupResult>;

  start(ctx: StrategyContext): void {
    if (this.running || ctx.signal.aborted) return;
    this.ctx = ctx;
    this.running = true;
    const resolver = new Resolver({ timeout: this.options.timeoutMs, tries: this.options.tries });
    if (this.options.servers) resolver.setServers(this.options.servers);
    this.resolver = resolver;
    this.onAbort = () => void this.stop();
    ctx.signal.addEventListener('abort', this.onAbort, { once: true });
    void this.poll(resolver);
  }

  private async poll(resolver: Resolver): Promise<void> {
    let result: LookupResult;
    try {
      result = await this.lookup(resolver);
    } catch (err) {
      result = { ok: false, message: `${this.name} lookup failed ${this.via}: ${(err as Error).message}` };
    }
    const ctx = this.ctx;
    // Stopped meanwhile (or restarted with a new resolver): this answer belongs to nobody.
    if (!this.running || !ctx || resolver !== this.resolver || ctx.signal.aborted) return;
    if (result.ok) {
      if (this.failing) ctx.logger.info({ strategy: this.name }, `${this.name} lookup answers again`);
      this.failing = false;
      for (const w of result.warnings) {
        if (!this.warned.first(w)) continue;
        ctx.logger.warn({ strategy: this.name, error: w }, 'dns lookup partly failed: keeping the last known addresses of the part that failed');
      }
      if (result.warnings.length === 0) this.warned.clear();
      ctx.setPeers([...new Set(result.addresses)].filter((a) => !isSelf(a, ctx.self.address)));
    } else {
      this.failing = true;
      ctx.lookupFailed(new FoundationError(ErrorCodes.DISCOVERY_LOOKUP_FAILED, result.message));
    }
    this.timer = setTimeout(() => void this.poll(resolver), this.options.pollIntervalMs);
    this.timer.unref();
  }

  stop(): void {
    if (!this.running) return;
    this.running = false;
    clearTimeout(this.timer);
    this.timer = undefined;
    if (this.onAbort) this.ctx?.signal.removeEventListener('abort', this.onAbort);
    this.resolver?.cancel();
    this.resolver = undefined;
    this.warned.clear();
    this.failing = false;
  }
}

/** Peers are the A and/or AAAA records of one name, each at `port`. */
export class DnsStrategy extends PollingDnsStrategy {
  readonly name = 'dns';
  /** Every node reads the same shared medium, so discovery is mutual (see `Strategy.mutual`). */
  readonly mutual = true;
  private readonly query: string;
  private readonly port: number;
  private readonly lastKnown = new Map<RecordType, string[]>();

  constructor(config: DnsStrategyConfig) {
    if (!config || typeof config !== 'object') throw new ConfigError('query', 'expected a DNS name, e.g. "my-app.internal"');
    rejectUnknownKeys(config, DNS_CONFIG_KEYS);
    const query = validateDnsName('query', config.query, 'my-app.internal');
    if (config.port === undefined) throw new ConfigError('port', 'required: the mesh port the peers listen on (integer from 1 to 65535)');
    const port = intOption('port', config.port, 0, 1, 65535);
    super(validateResolverOptions(config));
    this.query = query;
    this.port = port;
  }

  protected async lookup(resolver: Resolver): Promise<LookupResult> {
    const { hosts, failures, partial } = await resolveHosts(resolver, this.query, this.options, this.lastKnown);
    if (!hosts) {
      return { ok: false, message: `dns lookup of "${this.query}" ${this.via} gave no addresses: ${failures.join(', ')}` };
    }
    return { ok: true, addresses: hosts.map((h) => formatAddress(h, this.port)), warnings: partial };
  }
}
