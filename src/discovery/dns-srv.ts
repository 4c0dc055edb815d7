/**
 * `dns-srv`: peers are the targets of one name's SRV records, polled. Each record gives a
 * target name and a port; the target's A/AAAA records give the hosts (Kubernetes headless
 * services answer `_port._proto.svc...` with one pod DNS name per ready pod).
 *
 * Failure semantics are those of the `dns` strategy: only an SRV answer that holds records
 * replaces the peer set; SERVFAIL, timeouts, refused queries and also NXDOMAIN / NODATA are
 * reported with `ctx.lookupFailed` and keep the current peers, and so is an answer whose records
 * are all unusable (port 0, which usually means the name lacks the `_<port>._<proto>` labels,
 * or target "."): records that name no node say nothing about who is there. The SRV answer decides which
 * targets are members: a listed target whose own address lookup fails keeps the addresses it
 * had at its last successful lookup (one warning per distinct error), a target that is no
 * longer listed is dropped.
 */

import type { Resolver } from 'node:dns/promises';
import { isIP } from 'node:net';
import { ConfigError } from '../errors.js';
import { formatAddress } from '../mesh/identity.js';
import {
  type DnsResolverOptions,
  describeDnsCode,
  type LookupResult,
  PollingDnsStrategy,
  RESOLVER_OPTION_KEYS,
  resolveHosts,
  runQuery,
  validateDnsName,
  validateResolverOptions,
} from './dns.js';
import { rejectUnknownKeys } from './strategy.js';
import { booleanOption } from './strategy-config.js';

/** Configuration of the `dns-srv` strategy. */
export interface DnsSrvStrategyConfig extends DnsResolverOptions {
  /** Name whose SRV records list the peers, e.g. `_foundation._tcp.my-app.default.svc.cluster.local`. Required. */
  service: string;
  /**
   * Resolve each SRV target's A/AAAA records (per `family`) and use the addresses as hosts. When
   * `false`, the target name itself is the host (`pod-0.my-app.default.svc.cluster.local:4000`)
   * and is resolved when the mesh connects. A target that is an IP literal is used as is either way.
   * Default `true`.
   */
  resolveTargets?: boolean;
}

type RecordType = 'A' | 'AAAA';

const DNS_SRV_CONFIG_KEYS: readonly string[] = ['service', 'resolveTargets', ...RESOLVER_OPTION_KEYS] satisfies readonly (keyof DnsSrvStrategyConfig)[];

/** Peers are the SRV targets of one name, at the ports the records give. */
export class DnsSrvStrategy extends PollingDnsStrategy {
  readonly name = 'dns-srv';
  /** Every node reads the same shared medium, so discovery is mutual (see `Strategy.mutual`). */
  readonly mutual = true;
  private readonly service: string;
  private readonly resolveTargets: boolean;
  /** Last known addresses of each currently listed target, per record type. */
  private targets = new Map<string, Map<RecordType, string[]>>();

  constructor(config: DnsSrvStrategyConfig) {
    if (!config || typeof config !== 'object')
      throw new ConfigError('service', 'expected a DNS name, e.g. "_foundation._tcp.my-app.default.svc.cluster.local"');
    rejectUnknownKeys(config, DNS_SRV_CONFIG_KEYS);
    const service = validateDnsName('service', config.service, '_foundation._tcp.my-app.default.svc.cluster.local');
    const resolveTargets = booleanOption('resolveTargets', config.resolveTargets, true);
    super(validateResolverOptions(config));
    this.service = service;
    this.resolveTargets = resolveTargets;
  }

  override stop(): void {
    super.stop();
    this.targets = new Map();
  }

  /** Why an SRV answer whose records are all unusable (port 0, target ".") is "unknown", not "no nodes". */
  private unusableMessage(total: number, portZero: number, noTarget: number): string {
    const parts: string[] = [];
    if (portZero > 0) parts.push(`${portZero} with port 0`);
    if (noTarget > 0) parts.push(`${noTarget} with target "."`);
    let hint: string;
    if (portZero > 0 && this.service.startsWith('_')) {
      hint = `Port 0 records usually mean the Service has no port matching the "_<port-name>._<protocol>" labels of "${this.service}".`;
    } else if (portZero > 0) {
      hint = `Port 0 records usually mean the SRV name lacks the named port: ask for "_<port-name>._tcp.${this.service}", e.g. "_foundation._tcp.${this.service}" for a Service port named "foundation".`;
    } else {
      hint = 'A target of "." declares the service not available at this name.';
    }
    return `dns-srv lookup of "${this.service}" ${this.via} gave ${total} SRV record(s), none usable (${parts.join(', ')}): treated as unknown, the current peers are kept. ${hint}`;
  }

  protected async lookup(resolver: Resolver): Promise<LookupResult> {
    const srv = await runQuery(() => resolver.resolveSrv(this.service), this.options.timeoutMs * this.options.tries);
    if (srv.kind !== 'ok') {
      return { ok: false, message: `dns-srv lookup of "${this.service}" ${this.via} gave no records: SRV ${describeDnsCode(srv.code)}` };
    }
    const ports = new Map<string, Set<number>>();
    let portZero = 0;
    let noTarget = 0;
    for (const r of srv.values) {
      const target = r.name.replace(/\.$/, '').toLowerCase();
      // RFC 2782: a target of "." means the service is decidedly not available at this name.
      if (target === '') {
        noTarget++;
        continue;
      }
      if (!Number.isInteger(r.port) || r.port < 1 || r.port > 65535) {
        portZero++;
        continue;
      }
      const set = ports.get(target) ?? new Set<number>();
      set.add(r.port);
      ports.set(target, set);
    }
    if (ports.size === 0) {
      // Records, but not one that names a node: that says nothing about who is there ("unknown").
      return { ok: false, message: this.unusableMessage(srv.values.length, portZero, noTarget) };
    }
    const addresses: string[] = [];
    const warnings: string[] = [];
    const next = new Map<string, Map<RecordType, string[]>>();
    await Promise.all(
      [...ports].map(async ([target, targetPorts]) => {
        let hosts: string[];
        if (!this.resolveTargets || isIP(target)) {
          hosts = [target];
        } else {
          const lastKnown = this.targets.get(target) ?? new Map<RecordType, string[]>();
          next.set(target, lastKnown);
          const r = await resolveHosts(resolver, target, this.options, lastKnown);
          warnings.push(...r.partial);
          if (r.hosts) {
            hosts = r.hosts;
          } else {
            hosts = [...lastKnown.values()].flat();
            warnings.push(
              `SRV target "${target}" of "${this.service}" has no addresses: ${r.failures.join(', ')}; keeping its ${hosts.length} last known address(es)`,
            );
          }
        }
        for (const h of hosts) for (const p of targetPorts) addresses.push(formatAddress(h, p));
      }),
    );
    if (resolver === this.resolver) this.targets = next;
    return { ok: true, addresses, warnings: warnings.sort() };
  }
}
