import { afterAll, describe } from 'vitest';
import { KubernetesStrategy, type KubernetesStrategyConfig } from '../../src/discovery/kubernetes.js';
import { describeStrategyCompliance } from '../compliance/strategy-compliance.js';
import { endpointSlice, type FakeKubeApi, pod, startFakeKubeApi } from '../helpers/fake-kube-api.js';
import { requireTools } from '../helpers/requires.js';

// The node runs as pod 10.244.1.10, which the API lists too: the strategy must leave it out.
const self = { name: 'app-0', address: '10.244.1.10:4000', incarnation: 1 };
const open = new Set<FakeKubeApi>();
afterAll(async () => {
  await Promise.all([...open].map((a) => a.close()));
});

async function fakeApi(): Promise<FakeKubeApi> {
  const api = await startFakeKubeApi();
  open.add(api);
  return api;
}

const create = (c: KubernetesStrategyConfig) => new KubernetesStrategy(c);

/** The fake API server serves TLS with certificates that `openssl` makes. */
const skip = requireTools(['openssl'], 'kubernetes strategy compliance (the fake API server serves TLS)');

describe.skipIf(skip !== undefined)('kubernetes strategy compliance', () => {
  describe('mode endpointslices, lookups broken by a 403', () => {
    describeStrategyCompliance({
      name: 'kubernetes',
      convergeMs: 5000,
      async setup() {
        const api = await fakeApi();
        api.slices.push(
          endpointSlice({ service: 'app', endpoints: [{ ip: '10.244.1.10' }, { ip: '10.244.1.11' }] }),
          endpointSlice({ service: 'app', endpoints: [{ ip: '10.244.2.12' }, { ip: '10.244.2.13', ready: false }] }),
          // Another application's slice in the same namespace: not ours.
          endpointSlice({ service: 'other', endpoints: [{ ip: '10.244.3.20' }] }),
        );
        let next = 30;
        return {
          self,
          expectedPeers: ['10.244.1.11:4000', '10.244.2.12:4000'],
          create: () => new KubernetesStrategy({ service: 'app', apiServer: api.url, serviceAccountPath: api.saDir, pollIntervalMs: 100, timeoutMs: 2000 }),
          breakLookups: async () => {
            api.behaviour = 'forbidden';
          },
          restoreLookups: async () => {
            api.behaviour = 'ok';
          },
          addPeer: async () => {
            const ip = `10.244.4.${next++}`;
            api.slices.push(endpointSlice({ name: `app-added-${ip.replace(/\./g, '-')}`, service: 'app', endpoints: [{ ip }] }));
            api.touch();
            return `${ip}:4000`;
          },
          removePeer: async (address: string) => {
            const name = `app-added-${address.split(':')[0]?.replace(/\./g, '-')}`;
            api.slices = api.slices.filter((s) => (s.metadata as { name: string }).name !== name);
            api.touch();
          },
          teardown: async () => {
            open.delete(api);
            await api.close();
          },
        };
      },
      invalidConfigs: [
        { config: {}, key: 'service', create },
        { config: { service: 'App_1' }, key: 'service', create },
        { config: { mode: 'endpoints', service: 'app' }, key: 'mode', create },
        { config: { mode: 'pods' }, key: 'selector', create },
        { config: { mode: 'pods', selector: 'app: web' }, key: 'selector', create },
        { config: { service: 'app', selector: 'app=web' }, key: 'selector', create },
        { config: { service: 'app', port: 0 }, key: 'port', create },
        { config: { service: 'app', port: 70000 }, key: 'port', create },
        { config: { service: 'app', port: 4000, portName: 'mesh' }, key: 'portName', create },
        { config: { service: 'app', addressMode: 'fqdn' }, key: 'addressMode', create },
        { config: { service: 'app', namespace: 'Not_A_Namespace' }, key: 'namespace', create },
        { config: { service: 'app', pollIntervalMs: 1 }, key: 'pollIntervalMs', create },
        { config: { service: 'app', timeoutMs: -5 }, key: 'timeoutMs', create },
        { config: { service: 'app', pageSize: 0 }, key: 'pageSize', create },
        { config: { service: 'app', apiServer: 'http://10.96.0.1' }, key: 'apiServer', create },
        { config: { service: 'app', clusterDomain: '.cluster.local' }, key: 'clusterDomain', create },
        { config: { service: 'app', includeNotReady: 'yes' }, key: 'includeNotReady', create },
        { config: { service: 'app', labelSelector: 'app=web' }, key: 'labelSelector', create },
      ],
    });
  });

  // The same contract in mode `pods`, with lookups broken by a 500.
  describe('mode pods, lookups broken by a 500', () => {
    describeStrategyCompliance({
      name: 'kubernetes',
      async setup() {
        const api = await fakeApi();
        const labels = { app: 'app', 'pod-template-hash': '7d9c5b6f4' };
        api.pods.push(
          pod({ name: 'app-7d9c5b6f4-self0', ip: '10.244.1.10', labels }),
          pod({ name: 'app-7d9c5b6f4-aaaa1', ip: '10.244.1.11', labels }),
          pod({ name: 'app-7d9c5b6f4-bbbb2', ip: '10.244.2.12', labels }),
          pod({ name: 'app-7d9c5b6f4-cccc3', phase: 'Pending', labels }),
          pod({ name: 'web-5f6d7c8b9-dddd4', ip: '10.244.2.40', labels: { app: 'web' } }),
        );
        let next = 50;
        return {
          self,
          expectedPeers: ['10.244.1.11:4000', '10.244.2.12:4000'],
          create: () =>
            new KubernetesStrategy({
              mode: 'pods',
              selector: 'app=app',
              port: 4000,
              apiServer: api.url,
              serviceAccountPath: api.saDir,
              pollIntervalMs: 100,
              timeoutMs: 2000,
            }),
          breakLookups: async () => {
            api.behaviour = 'error500';
          },
          restoreLookups: async () => {
            api.behaviour = 'ok';
          },
          addPeer: async () => {
            const ip = `10.244.5.${next++}`;
            api.pods.push(pod({ name: `app-7d9c5b6f4-n${ip.replace(/\./g, '')}`, ip, labels }));
            api.touch();
            return `${ip}:4000`;
          },
          removePeer: async (address: string) => {
            const ip = address.split(':')[0];
            api.pods = api.pods.filter((p) => (p.status as { podIP?: string }).podIP !== ip);
            api.touch();
          },
          teardown: async () => {
            open.delete(api);
            await api.close();
          },
        };
      },
      invalidConfigs: [],
    });
  });
});
