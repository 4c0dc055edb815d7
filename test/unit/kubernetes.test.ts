import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { KubernetesApiError, KubernetesStrategy, type KubernetesStrategyConfig } from '../../src/discovery/kubernetes.js';
import { ConfigError, ErrorCodes } from '../../src/errors.js';
import { RecordingContext, ResourceTracker, until } from '../compliance/strategy-compliance.js';
import { endpointSlice, type FakeKubeApi, makeCertificates, pod, startFakeKubeApi } from '../helpers/fake-kube-api.js';
import { requireTools } from '../helpers/requires.js';

const SELF = { name: 'app-0', address: '10.244.1.10:4000', incarnation: 1 };

/** The fake API server serves TLS with certificates that `openssl` makes. */
const skip = requireTools(['openssl'], 'kubernetes strategy tests (the fake API server serves TLS)');

describe.skipIf(skip !== undefined)('kubernetes strategy against a fake API server', () => {
  let api: FakeKubeApi;
  const running: Array<{ s: KubernetesStrategy; ctx: RecordingContext }> = [];

  beforeAll(async () => {
    makeCertificates();
    api = await startFakeKubeApi();
  });
  afterAll(async () => {
    await api.close();
  });
  afterEach(async () => {
    for (const r of running.splice(0)) {
      r.ctx.abort.abort();
      await r.s.stop();
    }
    api.behaviour = 'ok';
    api.onlyOnContinue = false;
    api.delayMs = 0;
    api.goneOnContinue = 0;
    api.slices = [];
    api.pods = [];
    api.requests = [];
    api.rotateToken();
  });

  function start(config: Partial<KubernetesStrategyConfig>, self = SELF): { s: KubernetesStrategy; ctx: RecordingContext } {
    const s = new KubernetesStrategy({
      apiServer: api.url,
      serviceAccountPath: api.saDir,
      pollIntervalMs: 100,
      timeoutMs: 2000,
      ...config,
    } as KubernetesStrategyConfig);
    const ctx = new RecordingContext(self);
    s.start(ctx);
    const r = { s, ctx };
    running.push(r);
    return r;
  }

  const sorted = (a: string[]) => [...a].sort();
  async function peers(ctx: RecordingContext, expected: string[], ms = 4000): Promise<void> {
    const want = sorted(expected);
    await until(() => JSON.stringify(ctx.latest()) === JSON.stringify(want), ms, `peers ${want.join(',')} (last: ${ctx.latest()?.join(',')})`);
  }
  async function failure(ctx: RecordingContext, ms = 4000): Promise<Error> {
    const n = ctx.failures.length;
    await until(() => ctx.failures.length > n, ms, 'lookupFailed');
    return ctx.failures.at(-1) as Error;
  }
  /** Peer sets reported since `from` must all be `expected`: a failed listing never narrows them. */
  function keptSince(ctx: RecordingContext, from: number, expected: string[]): void {
    for (const set of ctx.peerSets.slice(from)) expect(set).toEqual(sorted(expected));
  }

  describe('EndpointSlices', () => {
    it('lists every slice of the service, keeps ready (and unknown) endpoints, leaves out self and not-ready ones', async () => {
      api.slices.push(
        endpointSlice({ service: 'app', endpoints: [{ ip: '10.244.1.10' }, { ip: '10.244.1.11' }, { ip: '10.244.1.12', ready: false }] }),
        endpointSlice({ service: 'app', endpoints: [{ ip: '10.244.2.20', ready: null }, { ip: '10.244.2.21' }] }),
        endpointSlice({ service: 'app', endpoints: [], ports: null }),
        endpointSlice({ service: 'other', endpoints: [{ ip: '10.244.3.30' }] }),
        endpointSlice({ service: 'app', namespace: 'kube-system', endpoints: [{ ip: '10.244.3.31' }] }),
      );
      const { ctx } = start({ service: 'app' });
      await peers(ctx, ['10.244.1.11:4000', '10.244.2.20:4000', '10.244.2.21:4000']);
      const r = api.requests[0];
      expect(r?.path).toBe('/apis/discovery.k8s.io/v1/namespaces/default/endpointslices');
      expect(r?.labelSelector).toBe('kubernetes.io/service-name=app');
      expect(r?.limit).toBe('500');
      expect(r?.accept).toBe('application/json');
      expect(r?.authorization).toBe(`Bearer ${api.token}`);
      expect(ctx.failures).toEqual([]);
    });

    it('includeNotReady keeps not-ready endpoints too', async () => {
      api.slices.push(endpointSlice({ service: 'app', endpoints: [{ ip: '10.244.1.11' }, { ip: '10.244.1.12', ready: false }] }));
      const { ctx } = start({ service: 'app', includeNotReady: true });
      await peers(ctx, ['10.244.1.11:4000', '10.244.1.12:4000']);
    });

    it('takes the port from the slices by portName', async () => {
      api.slices.push(
        endpointSlice({
          service: 'app',
          endpoints: [{ ip: '10.244.1.11' }],
          ports: [
            { name: 'http', port: 8080 },
            { name: 'cluster', port: 9100 },
          ],
        }),
        endpointSlice({
          service: 'app',
          endpoints: [{ ip: '10.244.2.21' }],
          ports: [
            { name: 'cluster', port: 9100 },
            { name: 'http', port: 8080 },
          ],
        }),
      );
      const { ctx } = start({ service: 'app', portName: 'cluster' });
      await peers(ctx, ['10.244.1.11:9100', '10.244.2.21:9100']);
    });

    it('a portName no slice has is a failed lookup naming the ports there are, and the peers are kept', async () => {
      api.slices.push(endpointSlice({ service: 'app', endpoints: [{ ip: '10.244.1.11' }], ports: [{ name: 'mesh', port: 4000 }] }));
      const { ctx } = start({ service: 'app', portName: 'mesh' });
      await peers(ctx, ['10.244.1.11:4000']);
      const from = ctx.peerSets.length;
      api.slices = [endpointSlice({ service: 'app', endpoints: [{ ip: '10.244.1.11' }], ports: [{ name: 'http', port: 8080 }] })];
      const err = await failure(ctx);
      expect(err.message).toContain('no port named "mesh"');
      expect(err.message).toContain('ports: http');
      keptSince(ctx, from, ['10.244.1.11:4000']);
    });

    it('port defaults to the port of this node’s own address', async () => {
      api.slices.push(endpointSlice({ service: 'app', endpoints: [{ ip: '10.244.1.11' }, { ip: '10.244.1.10' }] }));
      const { ctx } = start({ service: 'app' }, { ...SELF, address: '10.244.1.10:7946' });
      await peers(ctx, ['10.244.1.11:7946']);
    });

    it('a dual-stack service lists each pod once, in this node’s family', async () => {
      api.slices.push(
        endpointSlice({
          service: 'app',
          addressType: 'IPv6',
          endpoints: [
            { ip: 'fd00:10:244:1::11', podName: 'app-1' },
            { ip: 'fd00:10:244:2::21', podName: 'app-2' },
          ],
        }),
        endpointSlice({
          service: 'app',
          addressType: 'IPv4',
          endpoints: [
            { ip: '10.244.1.11', podName: 'app-1' },
            { ip: '10.244.2.21', podName: 'app-2' },
          ],
        }),
      );
      const v4 = start({ service: 'app' });
      const v6 = start({ service: 'app' }, { ...SELF, address: '[fd00:10:244:1::10]:4000' });
      await peers(v4.ctx, ['10.244.1.11:4000', '10.244.2.21:4000']);
      await peers(v6.ctx, ['[fd00:10:244:1::11]:4000', '[fd00:10:244:2::21]:4000']);
    });
  });

  describe('readiness: a listing with no Ready peer is "unknown", not "no nodes"', () => {
    const slice = (endpoints: Array<{ ip: string; ready?: boolean; podName?: string }>, addressType?: 'IPv4' | 'IPv6') =>
      endpointSlice({ service: 'app', endpoints, ...(addressType ? { addressType } : {}) });

    it('EndpointSlices: every other endpoint not Ready keeps the peers, names the situation and suggests includeNotReady', async () => {
      api.slices = [slice([{ ip: '10.244.1.10' }, { ip: '10.244.1.11' }, { ip: '10.244.1.12' }])];
      const { ctx } = start({ service: 'app' });
      await peers(ctx, ['10.244.1.11:4000', '10.244.1.12:4000']);
      const from = ctx.peerSets.length;
      // A rollout, or a readiness probe that fails everywhere but here.
      api.slices = [slice([{ ip: '10.244.1.10' }, { ip: '10.244.1.11', ready: false }, { ip: '10.244.1.12', ready: false }])];
      api.touch();
      const err = await failure(ctx);
      expect(err).toBeInstanceOf(KubernetesApiError);
      expect(err.message).toMatch(/EndpointSlices of service "app" in namespace "default" list 2 other endpoints, none of them Ready/);
      expect(err.message).toMatch(/treated as unknown/);
      expect(err.message).toMatch(/includeNotReady: true/);
      // The same without this node in the listing.
      api.slices = [slice([{ ip: '10.244.1.11', ready: false }])];
      api.touch();
      await until(() => ctx.failures.some((f) => /list 1 other endpoint, none of them Ready/.test(f.message)), 4000, 'the second failure');
      keptSince(ctx, from, ['10.244.1.11:4000', '10.244.1.12:4000']);

      // Scaled down to this node alone: a legitimate empty set.
      api.slices = [slice([{ ip: '10.244.1.10' }])];
      api.touch();
      await peers(ctx, []);
      // So is a listing with nothing in it.
      api.slices = [slice([{ ip: '10.244.1.11' }])];
      api.touch();
      await peers(ctx, ['10.244.1.11:4000']);
      api.slices = [];
      api.touch();
      await peers(ctx, []);
    });

    it('EndpointSlices: this pod listed in both families of a dual-stack service is still "only this node"', async () => {
      api.slices = [slice([{ ip: '10.244.1.11', podName: 'app-1' }])];
      const { ctx } = start({ service: 'app' });
      await peers(ctx, ['10.244.1.11:4000']);
      api.slices = [slice([{ ip: 'fd00:10:244:1::10', podName: 'app-0' }], 'IPv6'), slice([{ ip: '10.244.1.10', podName: 'app-0' }], 'IPv4')];
      api.touch();
      await peers(ctx, []);
      expect(ctx.failures).toEqual([]);
    });

    it('pods: no other pod Ready (or Running yet) keeps the peers; finished pods and this one alone are "scaled down"', async () => {
      api.pods = [pod({ name: 'app-0', ip: '10.244.1.10' }), pod({ name: 'app-1', ip: '10.244.1.11' })];
      const { ctx } = start({ mode: 'pods', selector: 'app=app', port: 4000 });
      await peers(ctx, ['10.244.1.11:4000']);
      const from = ctx.peerSets.length;
      api.pods = [
        pod({ name: 'app-0', ip: '10.244.1.10' }),
        pod({ name: 'app-1', ip: '10.244.1.11', ready: false }),
        pod({ name: 'app-2', phase: 'Pending' }),
        pod({ name: 'app-3', phase: 'Failed', ip: '10.244.1.13' }),
      ];
      api.touch();
      const err = await failure(ctx);
      expect(err.message).toMatch(
        /pods matching "app=app" in namespace "default" include 2 other pods but no usable peer \(1 not Ready, 1 not Running or without an IP yet\)/,
      );
      expect(err.message).toMatch(/includeNotReady: true/);
      keptSince(ctx, from, ['10.244.1.11:4000']);
      // Only this pod, and pods that finished (evicted, completed): scaled down.
      api.pods = [pod({ name: 'app-0', ip: '10.244.1.10' }), pod({ name: 'app-3', phase: 'Failed', ip: '10.244.1.13' })];
      api.touch();
      await peers(ctx, []);
    });
  });

  describe('pods mode', () => {
    it('keeps Running pods with an IP and a True Ready condition, matching the selector', async () => {
      const labels = { app: 'app', 'pod-template-hash': '7d9c5b6f4' };
      api.pods.push(
        pod({ name: 'app-7d9c5b6f4-self0', ip: '10.244.1.10', labels }),
        pod({ name: 'app-7d9c5b6f4-ok001', ip: '10.244.1.11', labels }),
        pod({ name: 'app-7d9c5b6f4-ok002', ip: '10.244.2.21', labels }),
        pod({ name: 'app-7d9c5b6f4-notrd', ip: '10.244.2.22', ready: false, labels }),
        pod({ name: 'app-7d9c5b6f4-pendg', phase: 'Pending', labels }),
        pod({ name: 'app-7d9c5b6f4-pndip', phase: 'Pending', ip: '10.244.2.23', ready: false, labels }),
        pod({ name: 'app-7d9c5b6f4-done1', phase: 'Succeeded', ip: '10.244.2.24', labels }),
        pod({ name: 'app-7d9c5b6f4-faild', phase: 'Failed', ip: '10.244.2.25', labels }),
        pod({ name: 'web-5f6d7c8b9-other', ip: '10.244.3.30', labels: { app: 'web' } }),
      );
      const { ctx } = start({ mode: 'pods', selector: 'app=app', port: 4000 });
      await peers(ctx, ['10.244.1.11:4000', '10.244.2.21:4000']);
      expect(api.requests[0]?.path).toBe('/api/v1/namespaces/default/pods');
      expect(api.requests[0]?.labelSelector).toBe('app=app');

      const all = start({ mode: 'pods', selector: 'app=app', port: 4000, includeNotReady: true });
      await peers(all.ctx, ['10.244.1.11:4000', '10.244.2.21:4000', '10.244.2.22:4000']);
    });

    it('takes the port from the container ports by portName', async () => {
      api.pods.push(
        pod({
          name: 'app-1',
          ip: '10.244.1.11',
          ports: [
            { name: 'http', containerPort: 8080 },
            { name: 'cluster', containerPort: 9100 },
          ],
        }),
      );
      const { ctx } = start({ mode: 'pods', selector: 'app=app', portName: 'cluster' });
      await peers(ctx, ['10.244.1.11:9100']);
    });
  });

  describe('pagination', () => {
    it('follows continue tokens across pages and reports only the complete listing', async () => {
      const eps = Array.from({ length: 9 }, (_, i) => ({ ip: `10.244.1.${20 + i}` }));
      // Nine slices of one endpoint each, two per page: five pages.
      for (const e of eps) api.slices.push(endpointSlice({ service: 'app', endpoints: [e] }));
      const { ctx } = start({ service: 'app', pageSize: 2 });
      await peers(
        ctx,
        eps.map((e) => `${e.ip}:4000`),
      );
      const first = api.requests.slice(0, 5);
      expect(first.map((r) => r.limit)).toEqual(['2', '2', '2', '2', '2']);
      expect(first[0]?.continue).toBeNull();
      for (const r of first.slice(1)) expect(r.continue).toBeTruthy();
      expect(first.every((r) => r.labelSelector === 'kubernetes.io/service-name=app')).toBe(true);
      // No partial set was ever reported.
      for (const set of ctx.peerSets) expect(set).toHaveLength(9);
    });

    it('pods are paginated the same way', async () => {
      for (let i = 0; i < 7; i++) api.pods.push(pod({ name: `app-7d9c5b6f4-p${i}`, ip: `10.244.2.${30 + i}` }));
      const { ctx } = start({ mode: 'pods', selector: 'app=app', port: 4000, pageSize: 3 });
      await peers(
        ctx,
        Array.from({ length: 7 }, (_, i) => `10.244.2.${30 + i}:4000`),
      );
      expect(api.requests.slice(0, 3).map((r) => !!r.continue)).toEqual([false, true, true]);
    });

    it('a 410 Gone on a continue token restarts the listing once from scratch', async () => {
      for (let i = 0; i < 6; i++) api.slices.push(endpointSlice({ service: 'app', endpoints: [{ ip: `10.244.1.${20 + i}` }] }));
      api.goneOnContinue = 1;
      const { ctx } = start({ service: 'app', pageSize: 2 });
      await peers(
        ctx,
        Array.from({ length: 6 }, (_, i) => `10.244.1.${20 + i}:4000`),
      );
      // page 1, page 2 -> 410, then page 1 again (no continue), 2, 3.
      expect(api.requests.slice(0, 5).map((r) => !!r.continue)).toEqual([false, true, false, true, true]);
      expect(ctx.failures).toEqual([]);
    });

    it('a second 410 in the same listing fails it, and the peers are kept', async () => {
      for (let i = 0; i < 4; i++) api.slices.push(endpointSlice({ service: 'app', endpoints: [{ ip: `10.244.1.${20 + i}` }] }));
      const expected = Array.from({ length: 4 }, (_, i) => `10.244.1.${20 + i}:4000`);
      const { ctx } = start({ service: 'app', pageSize: 2 });
      await peers(ctx, expected);
      const from = ctx.peerSets.length;
      api.goneOnContinue = 2;
      const err = await failure(ctx);
      expect(err).toBeInstanceOf(KubernetesApiError);
      expect((err as KubernetesApiError).status).toBe(410);
      expect(err.message).toContain('410 Expired');
      keptSince(ctx, from, expected);
    });

    it('a failure on a later page fails the whole listing: the first page alone is never reported', async () => {
      for (let i = 0; i < 4; i++) api.slices.push(endpointSlice({ service: 'app', endpoints: [{ ip: `10.244.1.${20 + i}` }] }));
      const expected = Array.from({ length: 4 }, (_, i) => `10.244.1.${20 + i}:4000`);
      const { ctx } = start({ service: 'app', pageSize: 2 });
      await peers(ctx, expected);
      const from = ctx.peerSets.length;
      api.onlyOnContinue = true;
      api.behaviour = 'error500';
      const err = await failure(ctx);
      expect(err.message).toContain('answered 500 InternalError');
      expect(err.message).toContain('etcdserver: request timed out');
      // Two more polls (each failing on its continue page) report nothing narrower either.
      const polled = api.requests.length;
      await until(() => api.requests.length >= polled + 4, 3000, 'two more polls');
      keptSince(ctx, from, expected);
    });
  });

  describe('API errors', () => {
    async function established(config: Partial<KubernetesStrategyConfig>, seed: () => void, expected: string[]) {
      seed();
      const r = start(config);
      await peers(r.ctx, expected);
      return { ...r, from: r.ctx.peerSets.length };
    }
    const seedSlices = () => api.slices.push(endpointSlice({ service: 'app', endpoints: [{ ip: '10.244.1.11' }, { ip: '10.244.1.12' }] }));
    const seedPods = () => api.pods.push(pod({ name: 'app-1', ip: '10.244.1.11' }), pod({ name: 'app-2', ip: '10.244.1.12' }));
    const expected = ['10.244.1.11:4000', '10.244.1.12:4000'];

    it('403 on endpointslices names the service account and the RBAC rule to grant', async () => {
      const { ctx, from } = await established({ service: 'app' }, seedSlices, expected);
      api.behaviour = 'forbidden';
      const err = await failure(ctx);
      expect(err).toBeInstanceOf(KubernetesApiError);
      expect((err as KubernetesApiError).code).toBe(ErrorCodes.DISCOVERY_LOOKUP_FAILED);
      expect((err as KubernetesApiError).status).toBe(403);
      expect(err.message).toContain(
        'Kubernetes API refused (403): the service account "system:serviceaccount:default:app" cannot list endpointslices.discovery.k8s.io in namespace "default" — grant a Role with { apiGroups: ["discovery.k8s.io"], resources: ["endpointslices"], verbs: ["list"] }',
      );
      keptSince(ctx, from, expected);
    });

    it('403 on pods names the core API group rule', async () => {
      const { ctx } = await established({ mode: 'pods', selector: 'app=app', port: 4000 }, seedPods, expected);
      api.behaviour = 'forbidden';
      const err = await failure(ctx);
      expect(err.message).toContain('the service account "system:serviceaccount:default:app" cannot list pods in namespace "default"');
      expect(err.message).toContain('{ apiGroups: [""], resources: ["pods"], verbs: ["list"] }');
    });

    it('403 without a Status body still names the service account, from the token', async () => {
      const { ctx } = await established({ service: 'app' }, seedSlices, expected);
      api.behaviour = 'forbidden-no-body';
      const err = await failure(ctx);
      expect(err.message).toContain('the service account "system:serviceaccount:default:app" cannot list endpointslices.discovery.k8s.io');
    });

    it('401 names the token file, and the peers are kept', async () => {
      const { ctx, from } = await established({ service: 'app' }, seedSlices, expected);
      // The API server no longer accepts what is in the file (revoked), without the file changing.
      api.token = 'something-else';
      const err = await failure(ctx);
      expect((err as KubernetesApiError).status).toBe(401);
      expect(err.message).toContain('Kubernetes API refused (401)');
      expect(err.message).toContain(`service-account token in ${join(api.saDir, 'token')}`);
      keptSince(ctx, from, expected);
    });

    it('re-reads the token on every poll (bound tokens rotate)', async () => {
      const { ctx } = await established({ service: 'app' }, seedSlices, expected);
      const old = api.token;
      const fresh = api.rotateToken();
      const n = api.requests.length;
      const at = ctx.peerSets.length;
      await until(() => ctx.peerSets.length > at + 1, 3000, 'listings after the rotation');
      expect(ctx.failures).toEqual([]);
      const after = api.requests.slice(n).map((r) => r.authorization);
      expect(after.length).toBeGreaterThan(0);
      expect(after.at(-1)).toBe(`Bearer ${fresh}`);
      expect(after).not.toContain(`Bearer ${old}`);
    });

    it('a missing token file is a failed lookup that says so', async () => {
      const { ctx, from } = await established({ service: 'app' }, seedSlices, expected);
      rmSync(join(api.saDir, 'token'));
      const err = await failure(ctx);
      expect(err.message).toContain('cannot read the service-account token');
      expect(err.message).toContain('ENOENT');
      keptSince(ctx, from, expected);
    });

    it('a slow API within timeoutMs works', async () => {
      seedSlices();
      api.behaviour = 'slow';
      api.delayMs = 400;
      const { ctx } = start({ service: 'app', timeoutMs: 1500 });
      await peers(ctx, expected);
      expect(ctx.failures).toEqual([]);
    });

    it('a hanging API times out within timeoutMs, and the peers are kept', async () => {
      const { ctx, from } = await established({ service: 'app', timeoutMs: 300 }, seedSlices, expected);
      api.behaviour = 'hang';
      const t0 = Date.now();
      const err = await failure(ctx);
      expect(Date.now() - t0).toBeLessThan(1500);
      expect(err.message).toMatch(/within 300 ms|idle for 300 ms/);
      await failure(ctx); // and again on the next poll: still failing, still kept
      keptSince(ctx, from, expected);
      api.behaviour = 'ok';
      const n = ctx.peerSets.length;
      await until(() => ctx.peerSets.length > n, 3000, 'recovery');
    });

    it('a response that trickles in forever hits the overall deadline, not just the idle timeout', async () => {
      const { ctx, from } = await established({ service: 'app', timeoutMs: 400 }, seedSlices, expected);
      api.behaviour = 'drip';
      const t0 = Date.now();
      const err = await failure(ctx);
      expect(Date.now() - t0).toBeLessThan(1500);
      expect(err.message).toContain('did not answer within 400 ms');
      keptSince(ctx, from, expected);
    });

    it('malformed JSON, or JSON that is not the list, keeps the peers', async () => {
      const { ctx, from } = await established({ service: 'app' }, seedSlices, expected);
      api.behaviour = 'malformed';
      expect((await failure(ctx)).message).toContain('malformed JSON');
      api.behaviour = 'not-a-list';
      await until(() => ctx.failures.some((e) => e.message.includes('not a EndpointSliceList')), 3000, 'not-a-list failure');
      keptSince(ctx, from, expected);
    });

    it('a 404 on EndpointSlices says the API server does not serve them', async () => {
      seedSlices();
      const { ctx } = start({ service: 'app', apiServer: `${api.url}/wrong-prefix` });
      const err = await failure(ctx);
      expect((err as KubernetesApiError).status).toBe(404);
      expect(err.message).toContain("does not serve discovery.k8s.io/v1 EndpointSlices (Kubernetes >= 1.21 does; use mode 'pods' on older clusters)");
      expect(api.requests[0]?.path).toBe('/wrong-prefix/apis/discovery.k8s.io/v1/namespaces/default/endpointslices');
    });

    it('a response over maxResponseBytes fails the listing', async () => {
      for (let i = 0; i < 20; i++) api.slices.push(endpointSlice({ service: 'app', endpoints: [{ ip: `10.244.1.${20 + i}` }] }));
      const { ctx } = start({ service: 'app', maxResponseBytes: 4096 });
      const err = await failure(ctx);
      expect(err.message).toContain('maxResponseBytes (4096)');
      expect(ctx.peerSets).toEqual([]);
    });

    it('an API server certificate the mounted CA does not sign is refused', async () => {
      seedSlices();
      const dir = mkdtempSync(join(tmpdir(), 'k8s-sa-'));
      try {
        writeFileSync(join(dir, 'token'), api.token);
        writeFileSync(join(dir, 'namespace'), 'default');
        // Some other CA (here: a certificate that is not one).
        writeFileSync(join(dir, 'ca.crt'), makeCertificates().certPem);
        const { ctx } = start({ service: 'app', serviceAccountPath: dir });
        const err = await failure(ctx);
        expect(err.message).toMatch(/certificate|verify/i);
        expect(ctx.peerSets).toEqual([]);
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    });

    it('stop aborts an in-flight request and goes quiet', async () => {
      seedSlices();
      api.behaviour = 'hang';
      const tracker = new ResourceTracker();
      try {
        const { s, ctx } = tracker.run(() => start({ service: 'app', timeoutMs: 20_000 }));
        await until(() => api.requests.length > 0, 2000, 'the request');
        const t0 = Date.now();
        await s.stop();
        expect(Date.now() - t0).toBeLessThan(500);
        // Event-driven: once everything it opened is released, nothing can call back.
        expect(await tracker.released(2000)).toEqual([]);
        expect(ctx.failures).toEqual([]);
        expect(ctx.peerSets).toEqual([]);
      } finally {
        tracker.dispose();
      }
    });
  });

  describe('addressMode', () => {
    it('ip, dns and hostname from EndpointSlices', async () => {
      api.slices.push(
        endpointSlice({
          service: 'app',
          endpoints: [
            { ip: '10.244.1.10', hostname: 'app-0' },
            { ip: '10.244.1.11', hostname: 'app-1' },
            { ip: '10.244.2.12', hostname: 'app-2' },
            { ip: '10.244.2.13' }, // no hostname: skipped in mode hostname
          ],
        }),
        endpointSlice({ service: 'app', addressType: 'IPv6', endpoints: [{ ip: 'fd00::7', podName: 'v6-only' }] }),
      );
      const ip = start({ service: 'app' });
      const dns = start({ service: 'app', addressMode: 'dns' });
      const host = start({ service: 'app', addressMode: 'hostname', clusterDomain: 'k8s.example.internal' });
      await peers(ip.ctx, ['10.244.1.11:4000', '10.244.2.12:4000', '10.244.2.13:4000', '[fd00::7]:4000']);
      await peers(dns.ctx, [
        '10-244-1-11.default.pod.cluster.local:4000',
        '10-244-2-12.default.pod.cluster.local:4000',
        '10-244-2-13.default.pod.cluster.local:4000',
        'fd00--7.default.pod.cluster.local:4000',
      ]);
      await peers(host.ctx, ['app-1.app.default.svc.k8s.example.internal:4000', 'app-2.app.default.svc.k8s.example.internal:4000']);
    });

    it('ip, dns and hostname from pods (spec.hostname / name, spec.subdomain / service)', async () => {
      api.pods.push(
        pod({ name: 'app-0', ip: '10.244.1.10', hostname: 'app-0', subdomain: 'app-headless' }),
        pod({ name: 'app-1', ip: '10.244.1.11', hostname: 'app-1', subdomain: 'app-headless' }),
        pod({ name: 'app-2', ip: '10.244.1.12', subdomain: 'app-headless' }),
        pod({ name: 'app-7d9c5b6f4-xq2z', ip: '10.244.1.13' }),
      );
      const base = { mode: 'pods' as const, selector: 'app=app', port: 4000 };
      const dns = start({ ...base, addressMode: 'dns' });
      const host = start({ ...base, addressMode: 'hostname' });
      const hostSvc = start({ ...base, addressMode: 'hostname', service: 'app-fallback' });
      await peers(dns.ctx, [
        '10-244-1-11.default.pod.cluster.local:4000',
        '10-244-1-12.default.pod.cluster.local:4000',
        '10-244-1-13.default.pod.cluster.local:4000',
      ]);
      // The pod with no subdomain has no such name unless `service` stands in for it.
      await peers(host.ctx, ['app-1.app-headless.default.svc.cluster.local:4000', 'app-2.app-headless.default.svc.cluster.local:4000']);
      await peers(hostSvc.ctx, [
        'app-1.app-headless.default.svc.cluster.local:4000',
        'app-2.app-headless.default.svc.cluster.local:4000',
        'app-7d9c5b6f4-xq2z.app-fallback.default.svc.cluster.local:4000',
      ]);
    });

    it('self is left out when this node advertises a name, or binds a wildcard', async () => {
      api.slices.push(
        endpointSlice({
          service: 'app',
          endpoints: [
            { ip: '127.0.0.1', hostname: 'app-0' },
            { ip: '10.244.1.11', hostname: 'app-1' },
          ],
        }),
      );
      const named = start({ service: 'app', addressMode: 'hostname' }, { ...SELF, address: 'app-0.app.default.svc.cluster.local:4000' });
      const wildcard = start({ service: 'app' }, { ...SELF, address: '0.0.0.0:4000' });
      await peers(named.ctx, ['app-1.app.default.svc.cluster.local:4000']);
      await peers(wildcard.ctx, ['10.244.1.11:4000']);
    });
  });

  describe('environment', () => {
    it('reads the API server from KUBERNETES_SERVICE_HOST/PORT and the namespace from the mount', async () => {
      const saved = { host: process.env.KUBERNETES_SERVICE_HOST, port: process.env.KUBERNETES_SERVICE_PORT };
      process.env.KUBERNETES_SERVICE_HOST = '127.0.0.1';
      process.env.KUBERNETES_SERVICE_PORT = String(api.port);
      try {
        api.slices.push(endpointSlice({ service: 'app', endpoints: [{ ip: '10.244.1.11' }] }));
        const s = new KubernetesStrategy({ service: 'app', serviceAccountPath: api.saDir, pollIntervalMs: 100 });
        const ctx = new RecordingContext(SELF);
        s.start(ctx);
        running.push({ s, ctx });
        await peers(ctx, ['10.244.1.11:4000']);
      } finally {
        if (saved.host === undefined) delete process.env.KUBERNETES_SERVICE_HOST;
        else process.env.KUBERNETES_SERVICE_HOST = saved.host;
        if (saved.port === undefined) delete process.env.KUBERNETES_SERVICE_PORT;
        else process.env.KUBERNETES_SERVICE_PORT = saved.port;
      }
    });

    it('start refuses to run with no API server, or no namespace, to be found', () => {
      const saved = process.env.KUBERNETES_SERVICE_HOST;
      delete process.env.KUBERNETES_SERVICE_HOST;
      try {
        const noApi = new KubernetesStrategy({ service: 'app', serviceAccountPath: api.saDir });
        expect(() => noApi.start(new RecordingContext(SELF))).toThrow(/KUBERNETES_SERVICE_HOST/);
        expect(() => noApi.start(new RecordingContext(SELF))).toThrow(expect.objectContaining({ key: 'topologies.compliance.config.apiServer' }));
        const noPort = new KubernetesStrategy({ service: 'app', apiServer: api.url, serviceAccountPath: api.saDir });
        expect(() => noPort.start(new RecordingContext({ ...SELF, address: 'app-0' }))).toThrow(
          expect.objectContaining({ key: 'topologies.compliance.config.port' }),
        );
        const empty = mkdtempSync(join(tmpdir(), 'k8s-empty-'));
        try {
          const noNs = new KubernetesStrategy({ service: 'app', apiServer: api.url, serviceAccountPath: empty });
          let err: unknown;
          try {
            noNs.start(new RecordingContext(SELF));
          } catch (e) {
            err = e;
          }
          expect(err).toBeInstanceOf(ConfigError);
          // Found at start, after the registry prefixed constructor errors: the strategy names the full key.
          expect((err as ConfigError).key).toBe('topologies.compliance.config.namespace');
        } finally {
          rmSync(empty, { recursive: true, force: true });
        }
      } finally {
        if (saved !== undefined) process.env.KUBERNETES_SERVICE_HOST = saved;
      }
    });

    it('an explicit namespace wins over the mounted one', async () => {
      api.slices.push(endpointSlice({ service: 'app', namespace: 'prod', endpoints: [{ ip: '10.244.9.1' }] }));
      const { ctx } = start({ service: 'app', namespace: 'prod' });
      await peers(ctx, ['10.244.9.1:4000']);
      expect(api.requests[0]?.path).toBe('/apis/discovery.k8s.io/v1/namespaces/prod/endpointslices');
    });
  });

  describe('configuration', () => {
    const bad: Array<[unknown, string, RegExp]> = [
      [{}, 'service', /required in mode 'endpointslices'/],
      [{ mode: 'endpoints', service: 'app' }, 'mode', /'endpointslices', 'pods'/],
      [{ mode: 'pods' }, 'selector', /required in mode 'pods'/],
      [{ mode: 'pods', selector: 'app: web' }, 'selector', /use '=', not ':'/],
      [{ service: 'app', selector: 'app=web' }, 'selector', /applies to mode 'pods'/],
      [{ service: 'App' }, 'service', /Service name/],
      [{ service: 'app', port: 4000.5 }, 'port', /integer between 1 and 65535/],
      [{ service: 'app', port: 4000, portName: 'mesh' }, 'portName', /not both/],
      [{ service: 'app', portName: 'Mesh Port' }, 'portName', /port name/],
      [{ service: 'app', addressMode: 'fqdn' }, 'addressMode', /'ip', 'dns', 'hostname'/],
      [{ service: 'app', clusterDomain: 'cluster.local.' }, 'clusterDomain', /DNS domain/],
      [{ service: 'app', namespace: '' }, 'namespace', /namespace name/],
      [{ service: 'app', pollIntervalMs: 10 }, 'pollIntervalMs', /integer between 50/],
      [{ service: 'app', timeoutMs: '5s' }, 'timeoutMs', /integer/],
      [{ service: 'app', pageSize: 0 }, 'pageSize', /between 1 and 10000/],
      [{ service: 'app', maxResponseBytes: 10 }, 'maxResponseBytes', /between 1024/],
      [{ service: 'app', serviceAccountPath: '' }, 'serviceAccountPath', /non-empty/],
      [{ service: 'app', apiServer: 'http://10.96.0.1' }, 'apiServer', /https:\/\//],
      [{ service: 'app', apiServer: 'not a url' }, 'apiServer', /https:\/\//],
      [{ service: 'app', includeNotReady: 1 }, 'includeNotReady', /true or false/],
      [{ service: 'app', pollInterval: 1000 }, 'pollInterval', /unknown key; did you mean "pollIntervalMs"\? Allowed keys: mode, service/],
      [{ service: 'app', zzz: 1 }, 'zzz', /^[^"]*"zzz": unknown key\. Allowed keys: mode, service/],
    ];
    it.each(bad)('%j is refused at %s', (config, key, message) => {
      let err: unknown;
      try {
        new KubernetesStrategy(config as KubernetesStrategyConfig);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(ConfigError);
      expect((err as ConfigError).key).toBe(key);
      expect((err as Error).message).toMatch(message);
    });

    it('accepts the documented shapes', () => {
      expect(() => new KubernetesStrategy({ service: 'app' })).not.toThrow();
      expect(() => new KubernetesStrategy({ mode: 'pods', selector: 'app=app,tier in (a,b),!canary', port: 4000 })).not.toThrow();
      expect(() => new KubernetesStrategy({ service: 'app', portName: 'mesh', addressMode: 'hostname', clusterDomain: 'corp.internal' })).not.toThrow();
      expect(() => new KubernetesStrategy({ service: 'app', apiServer: 'https://rancher.example.com/k8s/clusters/c-m-abc' })).not.toThrow();
    });
  });
});
