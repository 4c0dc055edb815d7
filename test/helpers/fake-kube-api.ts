/**
 * A fake Kubernetes API server for the `kubernetes` strategy's tests: a real `node:https` server
 * on 127.0.0.1 with a throwaway CA and server certificate made by `openssl`, serving the
 * EndpointSlice and Pod list endpoints as the real API server does (bearer-token check, label
 * selectors, `limit`/`continue` pagination over a consistent snapshot, `metav1.Status` errors),
 * with switchable failure behaviours. It also writes a service-account directory
 * (`token`, `ca.crt`, `namespace`) like the one mounted into every pod.
 */
import { execFileSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { createServer, type Server } from 'node:https';
import type { Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface Certificates {
  caPem: string;
  certPem: string;
  keyPem: string;
}

let certs: Certificates | undefined;

/** A CA and a server certificate for 127.0.0.1 / localhost, made once per test process. */
export function makeCertificates(): Certificates {
  if (certs) return certs;
  const dir = mkdtempSync(join(tmpdir(), 'fake-kube-certs-'));
  const run = (...args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
  try {
    const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
    run(
      'req',
      '-x509',
      ...ec,
      '-keyout',
      'ca.key',
      '-out',
      'ca.crt',
      '-days',
      '2',
      '-subj',
      '/CN=fake-kubernetes-ca',
      '-addext',
      'basicConstraints=critical,CA:TRUE',
      '-addext',
      'keyUsage=critical,keyCertSign,cRLSign',
    );
    run('req', ...ec, '-keyout', 'server.key', '-out', 'server.csr', '-subj', '/CN=kube-apiserver');
    writeFileSync(
      join(dir, 'ext.cnf'),
      [
        'subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local',
        'basicConstraints=CA:FALSE',
        'keyUsage=critical,digitalSignature,keyEncipherment',
        'extendedKeyUsage=serverAuth',
        '',
      ].join('\n'),
    );
    run('x509', '-req', '-in', 'server.csr', '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'server.crt', '-days', '2', '-extfile', 'ext.cnf');
    certs = {
      caPem: readFileSync(join(dir, 'ca.crt'), 'utf8'),
      certPem: readFileSync(join(dir, 'server.crt'), 'utf8'),
      keyPem: readFileSync(join(dir, 'server.key'), 'utf8'),
    };
    return certs;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** A service-account token as the kubelet projects it: a JWT (unsigned here; only the API server verifies it). */
export function makeToken(namespace: string, serviceAccount: string, serial = 1): string {
  const b64 = (v: unknown) => Buffer.from(JSON.stringify(v)).toString('base64url');
  const now = Math.floor(Date.now() / 1000);
  return [
    b64({ alg: 'RS256', kid: 'fake-key-1' }),
    b64({
      aud: ['https://kubernetes.default.svc.cluster.local'],
      exp: now + 3607,
      iat: now,
      iss: 'https://kubernetes.default.svc.cluster.local',
      jti: randomUUID(),
      'kubernetes.io': { namespace, pod: { name: 'self-0', uid: randomUUID() }, serviceaccount: { name: serviceAccount, uid: randomUUID() } },
      nbf: now,
      sub: `system:serviceaccount:${namespace}:${serviceAccount}`,
      serial,
    }),
    Buffer.from(`fake-signature-${serial}`).toString('base64url'),
  ].join('.');
}

// ---- realistic objects

type Json = Record<string, unknown>;

export interface EndpointSpec {
  ip: string | string[];
  /** `conditions.ready`; `null` leaves it unset (unknown, which means ready). Default true. */
  ready?: boolean | null;
  hostname?: string;
  podName?: string;
  nodeName?: string;
}

export interface SliceSpec {
  /** Default `<service>-<random>`. */
  name?: string;
  service: string;
  namespace?: string;
  addressType?: 'IPv4' | 'IPv6' | 'FQDN';
  endpoints: EndpointSpec[];
  /** Default `[{ name: 'mesh', port: 4000 }]`. `null` leaves `ports` null (a Service with no endpoints yet). */
  ports?: Array<{ name: string; port: number }> | null;
}

const created = '2025-01-15T10:20:30Z';
const rand = () => Math.random().toString(36).slice(2, 7);

export function endpointSlice(spec: SliceSpec): Json {
  const ns = spec.namespace ?? 'default';
  const name = spec.name ?? `${spec.service}-${rand()}`;
  return {
    metadata: {
      name,
      generateName: `${spec.service}-`,
      namespace: ns,
      uid: randomUUID(),
      resourceVersion: String(1000 + Math.floor(Math.random() * 1000)),
      generation: 3,
      creationTimestamp: created,
      labels: {
        'endpointslice.kubernetes.io/managed-by': 'endpointslice-controller.k8s.io',
        'kubernetes.io/service-name': spec.service,
        'app.kubernetes.io/name': spec.service,
      },
      annotations: { 'endpoints.kubernetes.io/last-change-trigger-time': created },
      ownerReferences: [{ apiVersion: 'v1', kind: 'Service', name: spec.service, uid: randomUUID(), controller: true, blockOwnerDeletion: true }],
    },
    addressType: spec.addressType ?? 'IPv4',
    endpoints: spec.endpoints.map((e, i) => {
      const podName = e.podName ?? `${spec.service}-7d9c5b6f4-${rand()}${i}`;
      const conditions: Json = e.ready === null ? {} : { ready: e.ready ?? true, serving: e.ready ?? true, terminating: false };
      return {
        addresses: Array.isArray(e.ip) ? e.ip : [e.ip],
        conditions,
        ...(e.hostname ? { hostname: e.hostname } : {}),
        targetRef: { kind: 'Pod', namespace: ns, name: podName, uid: podUid(ns, podName) },
        nodeName: e.nodeName ?? 'worker-1',
        zone: 'zone-a',
      };
    }),
    ports: spec.ports === null ? null : (spec.ports ?? [{ name: 'mesh', port: 4000 }]).map((p) => ({ name: p.name, protocol: 'TCP', port: p.port })),
  };
}

const podUids = new Map<string, string>();
/** A stable uid per pod, so a pod listed in two slices (dual-stack) carries the same targetRef uid. */
function podUid(ns: string, name: string): string {
  const key = `${ns}/${name}`;
  let uid = podUids.get(key);
  if (!uid) {
    uid = randomUUID();
    podUids.set(key, uid);
  }
  return uid;
}

export interface PodSpec {
  name: string;
  namespace?: string;
  labels?: Record<string, string>;
  /** Default `Running`. */
  phase?: 'Pending' | 'Running' | 'Succeeded' | 'Failed' | 'Unknown';
  /** Unset for a pod not yet scheduled / without a sandbox. */
  ip?: string;
  /** Ready condition status. Default true. */
  ready?: boolean;
  hostname?: string;
  subdomain?: string;
  /** Container ports. Default `[{ name: 'mesh', containerPort: 4000 }]`. */
  ports?: Array<{ name: string; containerPort: number }>;
}

export function pod(spec: PodSpec): Json {
  const ns = spec.namespace ?? 'default';
  const phase = spec.phase ?? 'Running';
  const ready = spec.ready ?? true;
  const running = phase === 'Running';
  const cond = (type: string, status: boolean) => ({ type, status: status ? 'True' : 'False', lastProbeTime: null, lastTransitionTime: created });
  return {
    metadata: {
      name: spec.name,
      generateName: `${spec.name.replace(/-[^-]+$/, '')}-`,
      namespace: ns,
      uid: podUid(ns, spec.name),
      resourceVersion: String(2000 + Math.floor(Math.random() * 1000)),
      creationTimestamp: created,
      labels: spec.labels ?? { app: 'app', 'pod-template-hash': '7d9c5b6f4' },
      ownerReferences: [{ apiVersion: 'apps/v1', kind: 'ReplicaSet', name: 'app-7d9c5b6f4', uid: randomUUID(), controller: true, blockOwnerDeletion: true }],
    },
    spec: {
      ...(spec.hostname ? { hostname: spec.hostname } : {}),
      ...(spec.subdomain ? { subdomain: spec.subdomain } : {}),
      containers: [
        {
          name: 'app',
          image: 'registry.example.com/app:1.4.2',
          ports: (spec.ports ?? [{ name: 'mesh', containerPort: 4000 }]).map((p) => ({ ...p, protocol: 'TCP' })),
          resources: {},
          terminationMessagePath: '/dev/termination-log',
          terminationMessagePolicy: 'File',
          imagePullPolicy: 'IfNotPresent',
        },
      ],
      restartPolicy: 'Always',
      terminationGracePeriodSeconds: 30,
      dnsPolicy: 'ClusterFirst',
      serviceAccountName: 'app',
      serviceAccount: 'app',
      nodeName: running ? 'worker-1' : undefined,
      schedulerName: 'default-scheduler',
    },
    status: {
      phase,
      conditions: [cond('Initialized', true), cond('Ready', running && ready), cond('ContainersReady', running && ready), cond('PodScheduled', true)],
      hostIP: '192.168.49.2',
      ...(spec.ip ? { podIP: spec.ip, podIPs: [{ ip: spec.ip }] } : {}),
      startTime: created,
      qosClass: 'BestEffort',
    },
  };
}

// ---- the server

/** How the server answers list requests. */
export type Behaviour =
  | 'ok'
  /** 403 Forbidden with the API server's RBAC Status. */
  | 'forbidden'
  /** 403 with an empty body (some proxies). */
  | 'forbidden-no-body'
  /** 500 InternalError Status. */
  | 'error500'
  /** Waits `delayMs`, then answers normally. */
  | 'slow'
  /** Accepts the request and never answers. */
  | 'hang'
  /** Sends the headers and a first byte, then one byte every 100 ms, forever. */
  | 'drip'
  /** 200 with truncated JSON. */
  | 'malformed'
  /** 200 with valid JSON that is not a list. */
  | 'not-a-list';

export interface RecordedRequest {
  path: string;
  labelSelector: string | null;
  limit: string | null;
  continue: string | null;
  authorization: string | undefined;
  accept: string | undefined;
}

export interface FakeKubeApi {
  /** `https://127.0.0.1:<port>`. */
  url: string;
  port: number;
  /** A service-account directory: `token`, `ca.crt`, `namespace`. */
  saDir: string;
  namespace: string;
  serviceAccount: string;
  /** Current behaviour of list requests. */
  behaviour: Behaviour;
  /** Apply `behaviour` only to requests carrying a continue token (page 2 and later). */
  onlyOnContinue: boolean;
  delayMs: number;
  /** Answer this many requests that carry a continue token with 410 Gone (expired), then serve again. */
  goneOnContinue: number;
  requests: RecordedRequest[];
  slices: Json[];
  pods: Json[];
  /** Writes a new token into `saDir/token`; the server then accepts only that one. */
  rotateToken(): string;
  token: string;
  /** Bumps the resourceVersion: call after mutating `slices` or `pods`. */
  touch(): void;
  close(): Promise<void>;
}

function status(code: number, reason: string, message: string, details?: Json): Json {
  return { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason, ...(details ? { details } : {}), code };
}

/** `a=b,c==d,e!=f,g` — the equality-based selectors the tests use. */
function matches(selector: string | null, labels: Record<string, string>): boolean | 'bad' {
  if (!selector) return true;
  for (const term of selector.split(',')) {
    const t = term.trim();
    const eq = /^([A-Za-z0-9./_-]+)\s*(==|=|!=)\s*([A-Za-z0-9._-]*)$/.exec(t);
    const exists = /^(!?)([A-Za-z0-9./_-]+)$/.exec(t);
    if (eq) {
      const [, k, op, v] = eq as unknown as [string, string, string, string];
      if (op === '!=' ? labels[k] === v : labels[k] !== v) return false;
    } else if (exists) {
      const has = (exists[2] as string) in labels;
      if (exists[1] ? has : !has) return false;
    } else return 'bad';
  }
  return true;
}

export async function startFakeKubeApi(opts: { namespace?: string; serviceAccount?: string } = {}): Promise<FakeKubeApi> {
  const { caPem, certPem, keyPem } = makeCertificates();
  const namespace = opts.namespace ?? 'default';
  const serviceAccount = opts.serviceAccount ?? 'app';
  const saDir = mkdtempSync(join(tmpdir(), 'fake-kube-sa-'));
  writeFileSync(join(saDir, 'ca.crt'), caPem);
  writeFileSync(join(saDir, 'namespace'), namespace);
  let serial = 0;
  let resourceVersion = 48213;
  // Snapshots a paginated listing reads from, by resourceVersion: pages of one list are consistent.
  const snapshots = new Map<string, Json[]>();
  const sockets = new Set<Socket>();

  const api: FakeKubeApi = {
    url: '',
    port: 0,
    saDir,
    namespace,
    serviceAccount,
    behaviour: 'ok',
    onlyOnContinue: false,
    delayMs: 0,
    goneOnContinue: 0,
    requests: [],
    slices: [],
    pods: [],
    token: '',
    rotateToken() {
      api.token = makeToken(namespace, serviceAccount, ++serial);
      writeFileSync(join(saDir, 'token'), api.token);
      return api.token;
    },
    touch() {
      resourceVersion++;
    },
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
      rmSync(saDir, { recursive: true, force: true });
    },
  };
  api.rotateToken();

  const send = (res: ServerResponse, code: number, body: unknown) => {
    const text = JSON.stringify(body);
    res.writeHead(code, {
      'Content-Type': 'application/json',
      'Content-Length': Buffer.byteLength(text),
      'Audit-Id': randomUUID(),
      'Cache-Control': 'no-cache, private',
    });
    res.end(text);
  };

  const handle = (req: IncomingMessage, res: ServerResponse) => {
    const url = new URL(req.url ?? '/', 'https://127.0.0.1');
    const q = url.searchParams;
    api.requests.push({
      path: url.pathname,
      labelSelector: q.get('labelSelector'),
      limit: q.get('limit'),
      continue: q.get('continue'),
      authorization: req.headers.authorization,
      accept: req.headers.accept,
    });
    if (req.headers.authorization !== `Bearer ${api.token}`) {
      send(res, 401, status(401, 'Unauthorized', 'Unauthorized'));
      return;
    }
    const slicesPath = /^\/apis\/discovery\.k8s\.io\/v1\/namespaces\/([^/]+)\/endpointslices$/.exec(url.pathname);
    const podsPath = /^\/api\/v1\/namespaces\/([^/]+)\/pods$/.exec(url.pathname);
    if (req.method !== 'GET' || !(slicesPath || podsPath)) {
      send(res, 404, status(404, 'NotFound', 'the server could not find the requested resource', {}));
      return;
    }
    const ns = (slicesPath ?? podsPath)?.[1] as string;
    const cont = q.get('continue');
    const user = `system:serviceaccount:${namespace}:${serviceAccount}`;
    const behaviour = api.onlyOnContinue && !cont ? 'ok' : api.behaviour;
    switch (behaviour) {
      case 'forbidden': {
        const [resource, group] = slicesPath ? ['endpointslices', 'discovery.k8s.io'] : ['pods', ''];
        const full = group ? `${resource}.${group}` : resource;
        send(
          res,
          403,
          status(403, 'Forbidden', `${full} is forbidden: User "${user}" cannot list resource "${resource}" in API group "${group}" in the namespace "${ns}"`, {
            ...(group ? { group } : {}),
            kind: resource,
          }),
        );
        return;
      }
      case 'forbidden-no-body':
        res.writeHead(403, { 'Content-Length': 0 });
        res.end();
        return;
      case 'error500':
        send(
          res,
          500,
          status(500, 'InternalError', 'Internal error occurred: etcdserver: request timed out', { causes: [{ message: 'etcdserver: request timed out' }] }),
        );
        return;
      case 'hang':
        return; // Never answer; the socket stays open until the client gives up or close().
      case 'drip': {
        res.writeHead(200, { 'Content-Type': 'application/json' });
        res.write('{');
        const t = setInterval(() => res.write(' '), 100);
        res.on('close', () => clearInterval(t));
        return;
      }
      case 'malformed':
        res.writeHead(200, { 'Content-Type': 'application/json' });
        res.end(
          `{"kind":"${slicesPath ? 'EndpointSliceList' : 'PodList'}","apiVersion":"v1","metadata":{"resourceVersion":"${resourceVersion}"},"items":[{"metadata":{"name":"x"`,
        );
        return;
      case 'not-a-list':
        send(res, 200, { kind: 'Service', apiVersion: 'v1', metadata: { name: 'app' }, spec: {} });
        return;
      default:
        break;
    }
    if (cont && api.goneOnContinue > 0) {
      api.goneOnContinue--;
      send(
        res,
        410,
        status(
          410,
          'Expired',
          'The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.',
        ),
      );
      return;
    }

    const serve = () => {
      // A continue token, like the API server's: base64 JSON of the snapshot's resourceVersion and where to start.
      let rv = String(resourceVersion);
      let start = 0;
      let items: Json[];
      if (cont) {
        let parsed: { rv?: string; start?: number };
        try {
          parsed = JSON.parse(Buffer.from(cont, 'base64').toString('utf8')) as { rv?: string; start?: number };
        } catch {
          send(res, 400, status(400, 'BadRequest', 'continue key is not valid: illegal base64 data'));
          return;
        }
        const snap = snapshots.get(String(parsed.rv));
        if (!snap || typeof parsed.start !== 'number') {
          send(res, 400, status(400, 'BadRequest', 'continue key is not valid: unknown snapshot'));
          return;
        }
        rv = String(parsed.rv);
        start = parsed.start;
        items = snap;
      } else {
        const source = slicesPath ? api.slices : api.pods;
        const selected: Json[] = [];
        for (const item of source) {
          const meta = item.metadata as { namespace?: string; labels?: Record<string, string> };
          if (meta.namespace !== ns) continue;
          const m = matches(q.get('labelSelector'), meta.labels ?? {});
          if (m === 'bad') {
            send(res, 400, status(400, 'BadRequest', `unable to parse requirement: invalid label selector "${q.get('labelSelector')}"`));
            return;
          }
          if (m) selected.push(item);
        }
        items = structuredClone(selected);
        snapshots.set(rv, items);
      }
      const limit = Number(q.get('limit') ?? 0);
      const end = limit > 0 ? Math.min(items.length, start + limit) : items.length;
      const metadata: Json = { resourceVersion: rv };
      if (end < items.length) {
        metadata.continue = Buffer.from(JSON.stringify({ v: 'meta.k8s.io/v1', rv, start: end })).toString('base64');
        metadata.remainingItemCount = items.length - end;
      }
      send(res, 200, {
        kind: slicesPath ? 'EndpointSliceList' : 'PodList',
        apiVersion: slicesPath ? 'discovery.k8s.io/v1' : 'v1',
        metadata,
        items: items.slice(start, end),
      });
    };
    if (behaviour === 'slow') {
      const t = setTimeout(serve, api.delayMs);
      res.on('close', () => clearTimeout(t));
    } else serve();
  };

  const server: Server = createServer({ cert: certPem, key: keyPem }, handle);
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const addr = server.address();
  api.port = typeof addr === 'object' && addr ? addr.port : 0;
  api.url = `https://127.0.0.1:${api.port}`;
  return api;
}
