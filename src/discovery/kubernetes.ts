/**
 * `kubernetes`: peers are the other pods of the same application, listed from the Kubernetes API
 * with the pod's own service account — libcluster's Kubernetes strategy, with its sharp edges
 * filed off:
 *
 * - EndpointSlices by default (what the Service itself routes to), or pods by label selector;
 * - every listing is paginated (`limit` + `continue`) to the end, and only a complete listing
 *   replaces the peer set: a failed or partial one (network error, timeout, hanging server,
 *   non-2xx, malformed JSON) is reported with `lookupFailed` and the peers are kept;
 * - so is a listing that holds other pods but yields no peer (every other endpoint not Ready,
 *   during a rollout or while a readiness probe fails): only an empty listing, or one holding
 *   nothing but this pod, empties the peer set (scaled down);
 * - a 403 names the missing RBAC rule, a 401 names the token;
 * - the token is re-read on every poll (bound service-account tokens rotate);
 * - plain `node:https`, no client library: one GET per page, a hard deadline and a size cap.
 */

import { readFileSync } from 'node:fs';
import type { IncomingMessage } from 'node:http';
import { Agent, request } from 'node:https';
import { isIP } from 'node:net';
import { networkInterfaces } from 'node:os';
import { join } from 'node:path';
import { ConfigError, ErrorCodes, FoundationError } from '../errors.js';
import { formatAddress, parseAddress } from '../mesh/identity.js';
import { LogOnce } from '../util/logger.js';
import { rejectUnknownKeys, type Strategy, type StrategyContext, startConfigError } from './strategy.js';
import { intOption, oneOfOption } from './strategy-config.js';

/** Configuration of the `kubernetes` strategy. */
export interface KubernetesStrategyConfig {
  /**
   * What to list. `endpointslices` (default): the EndpointSlices of `service`
   * (`discovery.k8s.io/v1`, Kubernetes >= 1.21), i.e. exactly what the Service routes to.
   * `pods`: the pods matching `selector`, keeping those Running, with an IP, and Ready.
   */
  mode?: 'endpointslices' | 'pods';
  /**
   * Name of the Service whose EndpointSlices are listed (selected by the
   * `kubernetes.io/service-name` label). Required in mode `endpointslices`. In mode `pods` it is
   * only used as the DNS subdomain for `addressMode: 'hostname'` when a pod has no `spec.subdomain`.
   * No default.
   */
  service?: string;
  /** Label selector of the peer pods in mode `pods`, e.g. `app=my-app,tier=backend`. Required in mode `pods`; not allowed in mode `endpointslices`. No default. */
  selector?: string;
  /** Namespace to list in. Default: this pod's namespace, read from `<serviceAccountPath>/namespace`. */
  namespace?: string;
  /**
   * The peers' mesh port. Default: the port of this node's own mesh address (every replica of a
   * Deployment or StatefulSet listens on the same port). Mutually exclusive with `portName`.
   */
  port?: number;
  /**
   * Take the mesh port by name instead: from the EndpointSlice's `ports` (the Service port's
   * name) in mode `endpointslices`, from the pod's `spec.containers[].ports[].name` in mode
   * `pods`. Mutually exclusive with `port`. No default.
   */
  portName?: string;
  /**
   * How a peer's host is written. `ip` (default): the pod IP. `dns`: the pod A record
   * `<ip-with-dashes>.<namespace>.pod.<clusterDomain>`. `hostname`:
   * `<hostname>.<subdomain>.<namespace>.svc.<clusterDomain>` — the stable name of a StatefulSet
   * pod behind a headless Service (endpoint `hostname` and `service`; pod `spec.hostname` or
   * name, and `spec.subdomain` or `service`). Peers that have no such name are skipped.
   */
  addressMode?: 'ip' | 'dns' | 'hostname';
  /** Cluster DNS domain, for `addressMode` `dns` and `hostname`. Default `cluster.local`. */
  clusterDomain?: string;
  /** Also list endpoints/pods that are not Ready (EndpointSlice `conditions.ready: false`; pods without a True Ready condition). Default false. */
  includeNotReady?: boolean;
  /** Time between two listings, in ms (the first one runs at start). Default 5000. */
  pollIntervalMs?: number;
  /** Deadline of one API request, in ms: connection, headers and the whole body. A slow or hanging server fails the listing. Default 5000. */
  timeoutMs?: number;
  /** Items per page (`limit`); `metadata.continue` is followed until the listing is complete. Default 500. */
  pageSize?: number;
  /** Largest accepted response body, in bytes. Default 33554432 (32 MiB). */
  maxResponseBytes?: number;
  /** Directory holding the service account's `token`, `ca.crt` and `namespace`. Default `/var/run/secrets/kubernetes.io/serviceaccount`. */
  serviceAccountPath?: string;
  /** API server base URL, `https://host[:port][/prefix]`. Default: `https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT`. */
  apiServer?: string;
}

/** Default mount of a pod's service-account credentials. */
export const DEFAULT_SERVICE_ACCOUNT_PATH = '/var/run/secrets/kubernetes.io/serviceaccount';

/** A failed Kubernetes API listing. `status` is the HTTP status when the server answered. */
export class KubernetesApiError extends FoundationError {
  /** HTTP status code, when the server answered. */
  readonly status?: number;
  /** The Status object's `reason` (e.g. `Forbidden`, `Expired`), when present. */
  readonly reason?: string;
  constructor(message: string, options?: { status?: number; reason?: string; cause?: unknown }) {
    super(ErrorCodes.DISCOVERY_LOOKUP_FAILED, message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'KubernetesApiError';
    if (options?.status !== undefined) this.status = options.status;
    if (options?.reason !== undefined) this.reason = options.reason;
  }
}

const MODES = ['endpointslices', 'pods'] as const;
const ADDRESS_MODES = ['ip', 'dns', 'hostname'] as const;
const KNOWN_KEYS: readonly (keyof KubernetesStrategyConfig)[] = [
  'mode',
  'service',
  'selector',
  'namespace',
  'port',
  'portName',
  'addressMode',
  'clusterDomain',
  'includeNotReady',
  'pollIntervalMs',
  'timeoutMs',
  'pageSize',
  'maxResponseBytes',
  'serviceAccountPath',
  'apiServer',
];
/** RFC 1123 label: namespaces, DNS subdomains. */
const DNS_LABEL = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;
/** RFC 1035 label: Service names. */
const SERVICE_NAME = /^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$/;
const DNS_NAME = /^(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
/** Characters of a label selector (`a=b,c!=d,e in (f,g),!h`). */
const SELECTOR_CHARS = /^[A-Za-z0-9._/\-=!,() ]+$/;
const MAX_PAGES = 10_000;

// Minimal shapes of the Kubernetes objects read here. Everything is checked at run time: the
// JSON comes from the network.
interface ListMeta {
  resourceVersion?: string;
  continue?: string;
}
interface ObjectMeta {
  name?: string;
  namespace?: string;
  uid?: string;
}
interface EndpointSlice {
  metadata?: ObjectMeta;
  addressType?: string;
  endpoints?: Endpoint[] | null;
  ports?: Array<{ name?: string; port?: number; protocol?: string }> | null;
}
interface Endpoint {
  addresses?: string[];
  conditions?: { ready?: boolean | null; serving?: boolean | null; terminating?: boolean | null };
  hostname?: string;
  targetRef?: { kind?: string; name?: string; namespace?: string; uid?: string };
}
interface Pod {
  metadata?: ObjectMeta;
  spec?: { hostname?: string; subdomain?: string; containers?: Array<{ name?: string; ports?: Array<{ name?: string; containerPort?: number }> | null }> };
  status?: { phase?: string; podIP?: string; conditions?: Array<{ type?: string; status?: string }> | null };
}
/** A metav1.Status, as the API server sends with errors. */
interface Status {
  kind?: string;
  message?: string;
  reason?: string;
  code?: number;
}

/** The other pods of a listing, and why those that yield no peer were left out. */
class Unusable {
  private readonly listed = new Set<string>();
  private readonly reasons = new Map<string, 'notReady' | 'notRunning' | 'noName'>();
  list(pod: string): void {
    this.listed.add(pod);
  }
  leftOut(pod: string, reason: 'notReady' | 'notRunning' | 'noName'): void {
    if (!this.reasons.has(pod)) this.reasons.set(pod, reason);
  }
  get size(): number {
    return this.listed.size;
  }
  counts(): { notReady: number; notRunning: number; noName: number } {
    const out = { notReady: 0, notRunning: 0, noName: 0 };
    for (const r of this.reasons.values()) out[r]++;
    return out;
  }
}

/** A peer as listed, before its address is written. */
interface Candidate {
  ip: string;
  port: number;
  host: string;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return isObj(v);
}

/** Like isObject, without narrowing (for values already typed by the shapes above). */
function isObj(v: unknown): boolean {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** `system:serviceaccount:<ns>:<name>` from a service-account JWT, without verifying it (only for error messages). */
function tokenSubject(token: string): string | undefined {
  try {
    const payload = token.split('.')[1];
    if (!payload) return undefined;
    const claims = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8')) as unknown;
    return isObject(claims) && typeof claims.sub === 'string' ? claims.sub : undefined;
  } catch {
    return undefined;
  }
}

function parseStatus(body: Buffer): Status | undefined {
  try {
    const v = JSON.parse(body.toString('utf8')) as unknown;
    return isObject(v) && v.kind === 'Status' ? (v as Status) : undefined;
  } catch {
    return undefined;
  }
}

/** What one listing reads: the resource, where, and the RBAC rule it needs. */
interface Resource {
  /** `endpointslices.discovery.k8s.io` or `pods`, as in RBAC error messages. */
  display: string;
  apiGroup: string;
  resource: string;
  listKind: string;
  path: string;
  labelSelector: string;
}

/**
 * Finds the other pods of this application through the Kubernetes API (EndpointSlices of a
 * Service, or pods by label selector), polling every `pollIntervalMs`. A failed or incomplete
 * listing is reported with `lookupFailed` and never shrinks the peer set.
 */
export class KubernetesStrategy implements Strategy {
  readonly name = 'kubernetes';
  /** Every node reads the same shared medium, so discovery is mutual (see `Strategy.mutual`). */
  readonly mutual = true;
  private readonly mode: 'endpointslices' | 'pods';
  private readonly service?: string;
  private readonly selector?: string;
  private readonly configuredNamespace?: string;
  private readonly port?: number;
  private readonly portName?: string;
  private readonly addressMode: 'ip' | 'dns' | 'hostname';
  private readonly clusterDomain: string;
  private readonly includeNotReady: boolean;
  private readonly pollIntervalMs: number;
  private readonly timeoutMs: number;
  private readonly pageSize: number;
  private readonly maxResponseBytes: number;
  private readonly saPath: string;
  private readonly apiServer?: URL;

  private ctx?: StrategyContext;
  private abort = new AbortController();
  private timer?: NodeJS.Timeout;
  private inFlight?: Promise<void>;
  private base?: URL;
  private namespace = '';
  private selfPort = 0;
  private selfHosts = new Set<string>();
  private readonly warned = new LogOnce();

  constructor(config: KubernetesStrategyConfig) {
    const c = (config ?? {}) as unknown;
    if (!isObject(c)) throw new ConfigError('config', 'expected an object');
    rejectUnknownKeys(c, KNOWN_KEYS);
    this.mode = oneOfOption('mode', c.mode, MODES, 'endpointslices');

    if (c.service !== undefined) {
      if (typeof c.service !== 'string' || !SERVICE_NAME.test(c.service)) {
        throw new ConfigError(
          'service',
          `expected a Service name (lowercase letters, digits and '-', starting with a letter, at most 63), got ${JSON.stringify(c.service)}`,
        );
      }
      this.service = c.service;
    }
    if (c.selector !== undefined) {
      if (this.mode !== 'pods') throw new ConfigError('selector', "applies to mode 'pods' only; in mode 'endpointslices' set `service`");
      if (typeof c.selector !== 'string' || c.selector.trim() === '' || !SELECTOR_CHARS.test(c.selector)) {
        const hint = typeof c.selector === 'string' && c.selector.includes(':') ? " (use '=', not ':': app=my-app)" : '';
        throw new ConfigError('selector', `expected a label selector such as "app=my-app", got ${JSON.stringify(c.selector)}${hint}`);
      }
      this.selector = c.selector.trim();
    }
    if (this.mode === 'endpointslices' && this.service === undefined) {
      throw new ConfigError('service', "required in mode 'endpointslices': the name of the Service whose EndpointSlices list the peers");
    }
    if (this.mode === 'pods' && this.selector === undefined) {
      throw new ConfigError('selector', 'required in mode \'pods\': a label selector of the peer pods, e.g. "app=my-app"');
    }

    if (c.namespace !== undefined) {
      if (typeof c.namespace !== 'string' || !DNS_LABEL.test(c.namespace)) {
        throw new ConfigError('namespace', `expected a namespace name (lowercase letters, digits and '-', at most 63), got ${JSON.stringify(c.namespace)}`);
      }
      this.configuredNamespace = c.namespace;
    }
    if (c.port !== undefined) this.port = intOption('port', c.port, 0, 1, 65535);
    if (c.portName !== undefined) {
      if (this.port !== undefined) throw new ConfigError('portName', 'set either `port` or `portName`, not both');
      if (typeof c.portName !== 'string' || !/^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/.test(c.portName)) {
        throw new ConfigError('portName', `expected a port name (lowercase letters, digits and '-'), got ${JSON.stringify(c.portName)}`);
      }
      this.portName = c.portName;
    }
    this.addressMode = oneOfOption('addressMode', c.addressMode, ADDRESS_MODES, 'ip');
    const domain = c.clusterDomain ?? 'cluster.local';
    if (typeof domain !== 'string' || !DNS_NAME.test(domain)) {
      throw new ConfigError('clusterDomain', `expected a DNS domain such as "cluster.local" (no leading or trailing dot), got ${JSON.stringify(domain)}`);
    }
    this.clusterDomain = domain;
    const inr = c.includeNotReady ?? false;
    if (typeof inr !== 'boolean') throw new ConfigError('includeNotReady', `expected true or false, got ${JSON.stringify(inr)}`);
    this.includeNotReady = inr;
    this.pollIntervalMs = intOption('pollIntervalMs', c.pollIntervalMs, 5000, 50, 3_600_000);
    this.timeoutMs = intOption('timeoutMs', c.timeoutMs, 5000, 50, 600_000);
    this.pageSize = intOption('pageSize', c.pageSize, 500, 1, 10_000);
    this.maxResponseBytes = intOption('maxResponseBytes', c.maxResponseBytes, 32 * 1024 * 1024, 1024, 1024 * 1024 * 1024);
    const sa = c.serviceAccountPath ?? DEFAULT_SERVICE_ACCOUNT_PATH;
    if (typeof sa !== 'string' || sa.length === 0) throw new ConfigError('serviceAccountPath', 'expected a non-empty directory path');
    this.saPath = sa;
    if (c.apiServer !== undefined) {
      let url: URL | undefined;
      try {
        url = typeof c.apiServer === 'string' ? new URL(c.apiServer) : undefined;
      } catch {
        url = undefined;
      }
      if (url?.protocol !== 'https:' || url.search || url.hash || url.username || url.password) {
        throw new ConfigError(
          'apiServer',
          `expected an https:// URL such as "https://10.96.0.1:443" (no query, fragment or credentials), got ${JSON.stringify(c.apiServer)}`,
        );
      }
      this.apiServer = url;
    }
  }

  start(ctx: StrategyContext): void {
    this.ctx = ctx;
    this.abort = new AbortController();
    if (ctx.signal.aborted) this.abort.abort();
    else ctx.signal.addEventListener('abort', () => this.abort.abort(), { once: true });

    this.base = this.apiServer ?? this.apiServerFromEnv(ctx);
    this.namespace = this.configuredNamespace ?? this.mountedNamespace(ctx);
    const self = parseAddress(ctx.self.address);
    this.selfPort = self?.port ?? 0;
    this.selfHosts = this.ownHosts(self?.host);
    if (this.port === undefined && this.portName === undefined && !this.selfPort) {
      throw startConfigError(ctx, 'port', `not set, and this node's address "${ctx.self.address}" has no port to default to`);
    }
    this.tick();
  }

  async stop(): Promise<void> {
    this.abort.abort();
    clearTimeout(this.timer);
    this.timer = undefined;
    await this.inFlight;
  }

  private apiServerFromEnv(ctx: StrategyContext): URL {
    const host = process.env.KUBERNETES_SERVICE_HOST;
    const port = Number(process.env.KUBERNETES_SERVICE_PORT || 443);
    if (!host) {
      throw startConfigError(
        ctx,
        'apiServer',
        'not set, and KUBERNETES_SERVICE_HOST is not in the environment: is this running inside a Kubernetes pod? Set `apiServer` to reach the API server from elsewhere',
      );
    }
    if (!Number.isInteger(port) || port < 1 || port > 65535) {
      throw startConfigError(ctx, 'apiServer', `not set, and KUBERNETES_SERVICE_PORT=${JSON.stringify(process.env.KUBERNETES_SERVICE_PORT)} is not a port`);
    }
    return new URL(`https://${formatAddress(host, port)}`);
  }

  private mountedNamespace(ctx: StrategyContext): string {
    const file = join(this.saPath, 'namespace');
    let ns: string;
    try {
      ns = readFileSync(file, 'utf8').trim();
    } catch (err) {
      throw startConfigError(
        ctx,
        'namespace',
        `not set, and ${file} cannot be read (${(err as Error).message}): set \`namespace\`, or mount the service account`,
      );
    }
    if (!DNS_LABEL.test(ns)) throw startConfigError(ctx, 'namespace', `not set, and ${file} holds ${JSON.stringify(ns)}, not a namespace name`);
    return ns;
  }

  /** The hosts that mean "this node": its address's host, or every local IP when that host is a wildcard or a name. */
  private ownHosts(host: string | undefined): Set<string> {
    const out = new Set<string>();
    if (!host) return out;
    out.add(host);
    if (isIP(host) && host !== '0.0.0.0' && host !== '::') return out;
    for (const addrs of Object.values(networkInterfaces())) for (const a of addrs ?? []) out.add(a.address);
    return out;
  }

  private tick(): void {
    if (this.abort.signal.aborted) return;
    this.inFlight = this.poll().finally(() => {
      this.inFlight = undefined;
      if (this.abort.signal.aborted) return;
      this.timer = setTimeout(() => this.tick(), this.pollIntervalMs);
      this.timer.unref();
    });
  }

  private async poll(): Promise<void> {
    const ctx = this.ctx;
    if (!ctx) return;
    try {
      const peers = this.mode === 'pods' ? await this.listPods() : await this.listEndpointSlices();
      if (this.abort.signal.aborted) return;
      ctx.setPeers(peers);
    } catch (err) {
      if (this.abort.signal.aborted) return;
      ctx.lookupFailed(err instanceof Error ? err : new Error(String(err)));
    }
  }

  // ---- listings -> peers

  private async listEndpointSlices(): Promise<string[]> {
    const ns = this.namespace;
    const service = this.service as string;
    const slices = (await this.listAll({
      display: 'endpointslices.discovery.k8s.io',
      apiGroup: 'discovery.k8s.io',
      resource: 'endpointslices',
      listKind: 'EndpointSliceList',
      path: `/apis/discovery.k8s.io/v1/namespaces/${ns}/endpointslices`,
      labelSelector: `kubernetes.io/service-name=${service}`,
    })) as EndpointSlice[];

    // Dual-stack Services have one slice family per IP family, listing each pod twice: keep one
    // address per pod, of this node's own family.
    const preferred = this.selfHosts.size > 0 && [...this.selfHosts][0]?.includes(':') ? 'IPv6' : 'IPv4';
    const ordered = [...slices].sort((a, b) => Number(b.addressType === preferred) - Number(a.addressType === preferred));
    const seenPods = new Set<string>();
    const candidates: Candidate[] = [];
    // Every other pod the listing holds, whatever its state, and why those left out were left out.
    const others = new Unusable();
    const selfPods = new Set<string>();
    let endpointsWithoutPort = 0;
    const portNames = new Set<string>();
    for (const slice of ordered) {
      if (!isObj(slice)) throw new KubernetesApiError(`Kubernetes API sent a malformed EndpointSlice for service "${service}" in namespace "${ns}"`);
      const endpoints = Array.isArray(slice.endpoints) ? slice.endpoints : [];
      let port = this.port ?? this.selfPort;
      if (this.portName !== undefined) {
        const ports = Array.isArray(slice.ports) ? slice.ports : [];
        for (const p of ports) if (isObj(p) && typeof p.name === 'string') portNames.add(p.name || '(unnamed)');
        const found = ports.find((p) => isObj(p) && p.name === this.portName && typeof p.port === 'number');
        if (!found) {
          endpointsWithoutPort += endpoints.length;
          continue;
        }
        port = found.port as number;
      }
      for (const ep of endpoints) {
        if (!isObj(ep)) continue;
        const ref = ep.targetRef;
        const podKey = ref && isObj(ref) && (ref.uid || ref.name) ? `${ref.kind ?? ''}/${ref.namespace ?? ns}/${ref.uid ?? ref.name}` : undefined;
        const addresses = Array.isArray(ep.addresses) ? ep.addresses.filter((a): a is string => typeof a === 'string' && a.length > 0) : [];
        if (addresses.length === 0) continue;
        // This pod, recognised by its address in the preferred family (sorted first), then by pod.
        const isSelf = (port === this.selfPort && addresses.some((a) => this.selfHosts.has(a))) || (podKey !== undefined && selfPods.has(podKey));
        if (isSelf && podKey) selfPods.add(podKey);
        const other = isSelf ? undefined : (podKey ?? `${String(slice.addressType)}/${addresses.join(',')}`);
        if (other) others.list(other);
        if (!this.includeNotReady && ep.conditions?.ready === false) {
          if (other) others.leftOut(other, 'notReady');
          continue;
        }
        if (podKey && seenPods.has(podKey)) continue;
        if (podKey) seenPods.add(podKey);
        for (const ip of addresses) {
          let host: string | undefined;
          if (slice.addressType === 'FQDN' || this.addressMode === 'ip') host = ip;
          else if (this.addressMode === 'dns') host = this.podDnsName(ip, ns);
          else if (typeof ep.hostname === 'string' && ep.hostname) host = `${ep.hostname}.${service}.${ns}.svc.${this.clusterDomain}`;
          else {
            this.warnOnce(
              'no-hostname',
              { peer: ip, pod: ref?.name },
              "addressMode 'hostname': an endpoint has no hostname (pods need spec.hostname and spec.subdomain matching a headless Service, as StatefulSet pods have): such peers are skipped (logged once)",
            );
            if (other) others.leftOut(other, 'noName');
            continue;
          }
          candidates.push({ ip, port, host });
        }
      }
    }
    if (this.portName !== undefined && candidates.length === 0 && endpointsWithoutPort > 0) {
      const known = portNames.size ? [...portNames].join(', ') : 'none';
      throw new KubernetesApiError(
        `the EndpointSlices of service "${service}" in namespace "${ns}" have no port named "${this.portName}" (ports: ${known}): check \`portName\``,
      );
    }
    return this.peersOf(candidates, others, `the EndpointSlices of service "${service}" in namespace "${ns}" list`, 'endpoint');
  }

  private async listPods(): Promise<string[]> {
    const ns = this.namespace;
    const pods = (await this.listAll({
      display: 'pods',
      apiGroup: '',
      resource: 'pods',
      listKind: 'PodList',
      path: `/api/v1/namespaces/${ns}/pods`,
      labelSelector: this.selector as string,
    })) as Pod[];
    const candidates: Candidate[] = [];
    // Every other live pod the listing holds, whatever its state, and why those left out were left out.
    const others = new Unusable();
    let withoutPort = 0;
    for (const [i, pod] of pods.entries()) {
      if (!isObj(pod)) throw new KubernetesApiError(`Kubernetes API sent a malformed Pod for selector "${this.selector}" in namespace "${ns}"`);
      const status: NonNullable<Pod['status']> = isObj(pod.status) ? (pod.status as NonNullable<Pod['status']>) : {};
      const podIP = typeof status.podIP === 'string' && status.podIP ? status.podIP : undefined;
      // Succeeded and Failed (e.g. evicted) pods never come back: they are not "other pods".
      const finished = status.phase === 'Succeeded' || status.phase === 'Failed';
      const other = finished || (podIP !== undefined && this.selfHosts.has(podIP)) ? undefined : (pod.metadata?.uid ?? pod.metadata?.name ?? `#${i}`);
      if (other) others.list(other);
      if (status.phase !== 'Running' || !podIP) {
        if (other) others.leftOut(other, 'notRunning');
        continue;
      }
      if (!this.includeNotReady) {
        const conditions = Array.isArray(status.conditions) ? status.conditions : [];
        if (!conditions.some((c) => isObj(c) && c.type === 'Ready' && c.status === 'True')) {
          if (other) others.leftOut(other, 'notReady');
          continue;
        }
      }
      const ip = podIP;
      let port = this.port ?? this.selfPort;
      if (this.portName !== undefined) {
        const containers = Array.isArray(pod.spec?.containers) ? pod.spec.containers : [];
        const found = containers
          .flatMap((ct) => (isObj(ct) && Array.isArray(ct.ports) ? ct.ports : []))
          .find((p) => isObj(p) && p.name === this.portName && typeof p.containerPort === 'number');
        if (!found) {
          withoutPort++;
          continue;
        }
        port = found.containerPort as number;
      }
      let host: string;
      if (this.addressMode === 'ip') host = ip;
      else if (this.addressMode === 'dns') host = this.podDnsName(ip, ns);
      else {
        const hostname = pod.spec?.hostname || pod.metadata?.name;
        const subdomain = pod.spec?.subdomain || this.service;
        if (!hostname || !subdomain) {
          this.warnOnce(
            'no-subdomain',
            { peer: ip, pod: pod.metadata?.name },
            "addressMode 'hostname': a pod has no spec.subdomain and no `service` is configured to stand in for it: such peers are skipped (logged once)",
          );
          if (other) others.leftOut(other, 'noName');
          continue;
        }
        host = `${hostname}.${subdomain}.${ns}.svc.${this.clusterDomain}`;
      }
      candidates.push({ ip, port, host });
    }
    if (this.portName !== undefined && candidates.length === 0 && withoutPort > 0) {
      throw new KubernetesApiError(
        `the pods matching "${this.selector}" in namespace "${ns}" have no container port named "${this.portName}": check \`portName\``,
      );
    }
    return this.peersOf(candidates, others, `the pods matching "${this.selector}" in namespace "${ns}" include`, 'pod');
  }

  /**
   * The peers of a complete listing. A listing that holds other pods but yields no peer (every
   * other endpoint not Ready, say) is "unknown", not "no nodes": a rollout, a failing readiness
   * probe or a slow start must not disconnect a healthy cluster. Only an empty listing, or one
   * holding nothing but this node, is a legitimate empty set (scaled down).
   */
  private peersOf(candidates: Candidate[], others: Unusable, what: string, noun: string): string[] {
    const peers = this.addresses(candidates);
    if (peers.length > 0 || others.size === 0) return peers;
    const { notReady, notRunning, noName } = others.counts();
    const why: string[] = [];
    if (notReady > 0) why.push(`${notReady} not Ready`);
    if (notRunning > 0) why.push(`${notRunning} not Running or without an IP yet`);
    if (noName > 0) why.push(`${noName} without a name in addressMode 'hostname'`);
    const count = `${others.size} other ${noun}${others.size === 1 ? '' : 's'}`;
    const situation = notReady === others.size ? `${count}, none of them Ready` : `${count} but no usable peer (${why.join(', ') || 'none usable'})`;
    const advice =
      notReady > 0 ? ' If peers should connect before they are Ready (readiness that depends on the cluster having formed), set `includeNotReady: true`.' : '';
    throw new KubernetesApiError(
      `${what} ${situation}: treated as unknown (a rollout or a failing readiness probe, not "no nodes"), the current peers are kept.${advice}`,
    );
  }

  /** `10-244-1-7.<ns>.pod.<domain>`; for IPv6 the colons become dashes too. */
  private podDnsName(ip: string, ns: string): string {
    return `${ip.replace(/[.:]/g, '-')}.${ns}.pod.${this.clusterDomain}`;
  }

  /** Writes the addresses, without this node. */
  private addresses(candidates: Candidate[]): string[] {
    const self = this.ctx?.self.address;
    const out = new Set<string>();
    for (const c of candidates) {
      const address = formatAddress(c.host, c.port);
      if (address === self) continue;
      if (c.port === this.selfPort && (this.selfHosts.has(c.ip) || this.selfHosts.has(c.host))) continue;
      out.add(address);
    }
    return [...out];
  }

  private warnOnce(key: string, obj: object, msg: string): void {
    if (!this.warned.first(key)) return;
    this.ctx?.logger.warn(obj, msg);
  }

  // ---- the API

  /** Every item of a listing, all pages. A 410 Gone on a continue token (expired) restarts it once. */
  private async listAll(res: Resource): Promise<unknown[]> {
    const { token, ca } = this.credentials();
    // One keep-alive connection for the pages of this listing, closed when it ends.
    const agent = new Agent({ keepAlive: true, maxSockets: 1, ca });
    try {
      for (let restarted = false; ; restarted = true) {
        const items: unknown[] = [];
        let cont: string | undefined;
        try {
          for (let page = 0; ; page++) {
            if (page >= MAX_PAGES) throw new KubernetesApiError(`Kubernetes API listing of ${res.display} did not end after ${MAX_PAGES} pages`);
            const list = await this.getList(res, token, agent, cont);
            items.push(...list.items);
            const next = list.metadata?.continue;
            if (!next) return items;
            if (next === cont) throw new KubernetesApiError(`Kubernetes API returned the same continue token twice listing ${res.display}`);
            cont = next;
          }
        } catch (err) {
          if (!restarted && cont !== undefined && err instanceof KubernetesApiError && err.status === 410) continue;
          throw err;
        }
      }
    } finally {
      agent.destroy();
    }
  }

  private credentials(): { token: string; ca: Buffer } {
    const tokenFile = join(this.saPath, 'token');
    const caFile = join(this.saPath, 'ca.crt');
    let token: string;
    try {
      token = readFileSync(tokenFile, 'utf8').trim();
    } catch (err) {
      throw new KubernetesApiError(
        `cannot read the service-account token ${tokenFile} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message}): is automountServiceAccountToken false for this pod?`,
        { cause: err },
      );
    }
    if (!token) throw new KubernetesApiError(`the service-account token ${tokenFile} is empty`);
    let ca: Buffer;
    try {
      ca = readFileSync(caFile);
    } catch (err) {
      throw new KubernetesApiError(`cannot read the API server CA ${caFile} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`, {
        cause: err,
      });
    }
    return { token, ca };
  }

  private async getList(res: Resource, token: string, agent: Agent, cont: string | undefined): Promise<{ metadata?: ListMeta; items: unknown[] }> {
    const base = this.base as URL;
    const url = new URL(base.href);
    url.pathname = base.pathname.replace(/\/+$/, '') + res.path;
    url.searchParams.set('labelSelector', res.labelSelector);
    url.searchParams.set('limit', String(this.pageSize));
    if (cont !== undefined) url.searchParams.set('continue', cont);
    // Errors name the request without its continue token, so one failure logs one line.
    const what = `GET ${url.origin}${url.pathname}?labelSelector=${res.labelSelector}`;

    const { status, body } = await this.get(url, token, agent, what);
    if (status < 200 || status > 299) throw this.statusError(res, status, body, token, what);
    let parsed: unknown;
    try {
      parsed = JSON.parse(body.toString('utf8'));
    } catch (err) {
      throw new KubernetesApiError(`Kubernetes API ${what} answered ${status} with malformed JSON (${(err as Error).message})`, { status, cause: err });
    }
    if (!isObject(parsed) || (parsed.items !== null && !Array.isArray(parsed.items)) || (parsed.kind !== undefined && parsed.kind !== res.listKind)) {
      const kind = isObject(parsed) && typeof parsed.kind === 'string' ? parsed.kind : typeof parsed;
      throw new KubernetesApiError(`Kubernetes API ${what} answered ${status} with a ${kind}, not a ${res.listKind}`, { status });
    }
    const metadata = isObject(parsed.metadata) ? (parsed.metadata as ListMeta) : undefined;
    if (metadata?.continue !== undefined && typeof metadata.continue !== 'string') {
      throw new KubernetesApiError(`Kubernetes API ${what} answered with a non-string continue token`, { status });
    }
    return { metadata, items: (parsed.items as unknown[] | null) ?? [] };
  }

  private statusError(res: Resource, status: number, body: Buffer, token: string, what: string): KubernetesApiError {
    const st = parseStatus(body);
    const said = st?.message ? ` (server said: ${st.message})` : '';
    const reason = st?.reason;
    if (status === 403) {
      const user = /User "([^"]+)"/.exec(st?.message ?? '')?.[1] ?? tokenSubject(token);
      const who = user ? `the service account "${user}"` : "this pod's service account";
      const groups = JSON.stringify([res.apiGroup]);
      return new KubernetesApiError(
        `Kubernetes API refused (403): ${who} cannot list ${res.display} in namespace "${this.namespace}" — grant a Role with { apiGroups: ${groups}, resources: ["${res.resource}"], verbs: ["list"] } and bind it to the service account with a RoleBinding${said}`,
        { status, reason },
      );
    }
    if (status === 401) {
      return new KubernetesApiError(
        `Kubernetes API refused (401): the service-account token in ${join(this.saPath, 'token')} was not accepted — it is invalid, expired or its service account was deleted${said}`,
        { status, reason },
      );
    }
    if (status === 404 && res.apiGroup === 'discovery.k8s.io') {
      // A list in a namespace that does not exist is an empty 200: a 404 means the resource type is unknown here.
      return new KubernetesApiError(
        `Kubernetes API ${what} answered 404: this API server does not serve discovery.k8s.io/v1 EndpointSlices (Kubernetes >= 1.21 does; use mode 'pods' on older clusters), or \`apiServer\` has a wrong path${said}`,
        { status, reason },
      );
    }
    return new KubernetesApiError(`Kubernetes API ${what} answered ${status}${reason ? ` ${reason}` : ''}${said}`, { status, reason });
  }

  /** One GET with a hard deadline on the whole exchange, an idle-socket timeout and a body size cap. */
  private get(url: URL, token: string, agent: Agent, what: string): Promise<{ status: number; body: Buffer }> {
    const timeoutMs = this.timeoutMs;
    const max = this.maxResponseBytes;
    return new Promise((resolve, reject) => {
      let settled = false;
      // The first failure wins: destroying the request makes more errors (ECONNRESET, "aborted").
      let reason: Error | undefined;
      const settle = (err: Error | undefined, value?: { status: number; body: Buffer }) => {
        if (settled) return;
        settled = true;
        clearTimeout(deadline);
        if (err) reject(reason ?? err);
        else resolve(value as { status: number; body: Buffer });
      };
      const fail = (err: Error) => {
        reason ??= err;
        req.destroy(err);
        settle(err);
      };
      const req = request(url, {
        method: 'GET',
        agent,
        signal: this.abort.signal,
        headers: { Authorization: `Bearer ${token}`, Accept: 'application/json', 'User-Agent': 'foundation-cluster/kubernetes-strategy' },
      });
      const deadline = setTimeout(() => fail(new KubernetesApiError(`Kubernetes API ${what} did not answer within ${timeoutMs} ms (timeoutMs)`)), timeoutMs);
      req.setTimeout(timeoutMs, () => fail(new KubernetesApiError(`Kubernetes API ${what}: the connection was idle for ${timeoutMs} ms (timeoutMs)`)));
      req.on('error', (err) => {
        if (reason || this.abort.signal.aborted) return settle(err);
        settle(new KubernetesApiError(`Kubernetes API ${what} failed: ${err.message}`, { cause: err }));
      });
      req.on('response', (res: IncomingMessage) => {
        const declared = Number(res.headers['content-length']);
        if (Number.isFinite(declared) && declared > max) {
          fail(new KubernetesApiError(`Kubernetes API ${what} answered ${declared} bytes, more than maxResponseBytes (${max})`, { status: res.statusCode }));
          return;
        }
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (chunk: Buffer) => {
          size += chunk.length;
          if (size > max) {
            fail(new KubernetesApiError(`Kubernetes API ${what} answered more than maxResponseBytes (${max}) bytes`, { status: res.statusCode }));
            return;
          }
          chunks.push(chunk);
        });
        res.on('end', () => settle(undefined, { status: res.statusCode ?? 0, body: Buffer.concat(chunks) }));
        res.on('error', (err) => settle(new KubernetesApiError(`Kubernetes API ${what} failed while reading the response: ${err.message}`, { cause: err })));
        res.on('close', () => {
          if (!res.complete) settle(new KubernetesApiError(`Kubernetes API ${what}: the connection closed before the response was complete`));
        });
      });
      req.end();
    });
  }
}
