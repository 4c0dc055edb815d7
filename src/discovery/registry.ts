/** Built-in strategies by name, and resolution of a topology's `strategy` (a name or a class). */
import { ConfigError } from '../errors.js';
import { DnsStrategy } from './dns.js';
import { DnsSrvStrategy } from './dns-srv.js';
import { GossipStrategy } from './gossip.js';
import { KubernetesStrategy } from './kubernetes.js';
import { LocalStrategy } from './local.js';
import { MdnsStrategy } from './mdns.js';
import { StaticStrategy } from './static.js';
import type { Strategy, StrategyClass } from './strategy.js';

export const BUILTIN_STRATEGIES: Record<string, StrategyClass<never>> = {
  static: StaticStrategy as StrategyClass<never>,
  local: LocalStrategy as StrategyClass<never>,
  gossip: GossipStrategy as StrategyClass<never>,
  mdns: MdnsStrategy as StrategyClass<never>,
  dns: DnsStrategy as StrategyClass<never>,
  'dns-srv': DnsSrvStrategy as StrategyClass<never>,
  kubernetes: KubernetesStrategy as StrategyClass<never>,
};

/** A topology as Wizard mode writes it: a strategy (name or class) and its config, passed through untouched. */
export interface TopologySpec {
  /** A built-in strategy name (`static`, `local`, ...) or a class implementing `Strategy`. */
  strategy: string | StrategyClass<never>;
  /** The strategy's own configuration. */
  config?: Record<string, unknown>;
}

export function createStrategy(topology: string, spec: TopologySpec): Strategy {
  const Cls = typeof spec.strategy === 'string' ? BUILTIN_STRATEGIES[spec.strategy] : spec.strategy;
  if (!Cls) {
    throw new ConfigError(
      `topologies.${topology}.strategy`,
      `unknown strategy "${String(spec.strategy)}"; allowed: ${Object.keys(BUILTIN_STRATEGIES).join(', ')}, or a class implementing Strategy`,
    );
  }
  try {
    return new Cls((spec.config ?? {}) as never);
  } catch (err) {
    if (err instanceof ConfigError)
      throw new ConfigError(`topologies.${topology}.config.${err.key}`, err.message.replace(/^Invalid configuration at "[^"]*": /, ''));
    throw err;
  }
}
