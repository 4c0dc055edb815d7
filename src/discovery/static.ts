import { ConfigError } from '../errors.js';
import { parseAddress } from '../mesh/identity.js';
import { rejectUnknownKeys, type Strategy, type StrategyContext } from './strategy.js';

/** Configuration of the `static` strategy. */
export interface StaticStrategyConfig {
  /** `host:port` addresses of the nodes to keep connected (this node's own address may be listed; it is skipped). */
  hosts: string[];
}

const STATIC_CONFIG_KEYS: readonly (keyof StaticStrategyConfig)[] = ['hosts'];

/** A fixed list of hosts, kept connected with backoff, like libcluster's Epmd strategy. */
export class StaticStrategy implements Strategy {
  readonly name = 'static';
  private readonly hosts: string[];

  constructor(config: StaticStrategyConfig) {
    if (config && typeof config === 'object') rejectUnknownKeys(config, STATIC_CONFIG_KEYS);
    if (!config || !Array.isArray(config.hosts)) throw new ConfigError('hosts', 'expected an array of "host:port" strings');
    config.hosts.forEach((h, i) => {
      if (typeof h !== 'string' || !parseAddress(h)) throw new ConfigError(`hosts[${i}]`, `"${String(h)}" is not a host:port address`);
    });
    this.hosts = [...config.hosts];
  }

  start(ctx: StrategyContext): void {
    ctx.setPeers(this.hosts.filter((h) => h !== ctx.self.address));
  }

  stop(): void {}
}
