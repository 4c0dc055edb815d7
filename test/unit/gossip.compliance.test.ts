/**
 * The gossip strategy against the shared compliance suite. The "source" is real: the peers
 * are other GossipStrategy instances announcing over 127.0.0.1 multicast (joined and sent on
 * loopback only), on a group and port unique to each environment.
 */
import { randomInt } from 'node:crypto';
import { GossipStrategy, type GossipStrategyConfig } from '../../src/discovery/gossip.js';
import { describeStrategyCompliance, RecordingContext } from '../compliance/strategy-compliance.js';

const self = { name: 'self', address: '127.0.0.1:4000', incarnation: 1 };
let envCounter = 0;

describeStrategyCompliance({
  name: 'gossip',
  convergeMs: 3000,
  async setup() {
    envCounter++;
    const config: GossipStrategyConfig = {
      group: `239.255.${randomInt(1, 255)}.${randomInt(1, 255)}`,
      port: 40000 + ((randomInt(10000) + envCounter * 37) % 10000),
      secret: 'compliance-secret',
      intervalMs: 200,
    };
    const peers = new Map<string, { s: GossipStrategy; ctx: RecordingContext }>();
    const startPeer = async (name: string, port: number) => {
      const address = `127.0.0.1:${port}`;
      const s = new GossipStrategy(config);
      const ctx = new RecordingContext({ name, address, incarnation: Date.now() * 1000 + port });
      await s.start(ctx);
      peers.set(address, { s, ctx });
      return address;
    };
    const stopPeer = async (address: string) => {
      const p = peers.get(address);
      if (!p) return;
      peers.delete(address);
      p.ctx.abort.abort();
      await p.s.stop();
    };
    await startPeer('p1', 4101);
    await startPeer('p2', 4102);
    let next = 4110;
    return {
      self,
      expectedPeers: ['127.0.0.1:4101', '127.0.0.1:4102'],
      create: () => new GossipStrategy(config),
      addPeer: () => {
        const port = next++;
        return startPeer(`n${port}`, port);
      },
      removePeer: stopPeer,
      teardown: async () => {
        for (const address of [...peers.keys()]) await stopPeer(address);
      },
    };
  },
  invalidConfigs: [
    { config: { group: '10.0.0.1' }, key: 'group', create: (c) => new GossipStrategy(c) },
    { config: { group: 'not-an-ip' }, key: 'group', create: (c) => new GossipStrategy(c) },
    { config: { port: 0 }, key: 'port', create: (c) => new GossipStrategy(c) },
    { config: { port: 65536 }, key: 'port', create: (c) => new GossipStrategy(c) },
    { config: { port: '45892' }, key: 'port', create: (c) => new GossipStrategy(c) },
    { config: { ttl: -1 }, key: 'ttl', create: (c) => new GossipStrategy(c) },
    { config: { ttl: 256 }, key: 'ttl', create: (c) => new GossipStrategy(c) },
    { config: { interface: 'eth0' }, key: 'interface', create: (c) => new GossipStrategy(c) },
    { config: { interface: '::1' }, key: 'interface', create: (c) => new GossipStrategy(c) },
    { config: { interface: '0.0.0.0' }, key: 'interface', create: (c) => new GossipStrategy(c) },
    { config: { intervalMs: 10 }, key: 'intervalMs', create: (c) => new GossipStrategy(c) },
    { config: { intervalMs: 1.5 }, key: 'intervalMs', create: (c) => new GossipStrategy(c) },
    { config: { broadcastOnly: 'yes' }, key: 'broadcastOnly', create: (c) => new GossipStrategy(c) },
    { config: { broadcastAddress: 'everyone' }, key: 'broadcastAddress', create: (c) => new GossipStrategy(c) },
    { config: { broadcastAddress: '239.1.1.1' }, key: 'broadcastAddress', create: (c) => new GossipStrategy(c) },
    { config: { secret: '' }, key: 'secret', create: (c) => new GossipStrategy(c) },
    { config: { secret: 42 }, key: 'secret', create: (c) => new GossipStrategy(c) },
    { config: { intervalMs: 1000, expireAfterMs: 1500 }, key: 'expireAfterMs', create: (c) => new GossipStrategy(c) },
    { config: { expireAfterMs: 'soon' }, key: 'expireAfterMs', create: (c) => new GossipStrategy(c) },
    { config: null, key: 'config', create: (c) => new GossipStrategy(c) },
    { config: { intervalMS: 500 }, key: 'intervalMS', create: (c) => new GossipStrategy(c) },
    { config: { secrets: 'x' }, key: 'secrets', create: (c) => new GossipStrategy(c) },
  ],
});
