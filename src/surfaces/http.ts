/**
 * The admin HTTP server of a node: liveness, readiness, Prometheus metrics and the
 * cluster view. Plain `node:http`, JSON bodies, no framework.
 *
 * Routes (GET and HEAD, and POST on `/config`; another method on a known route is 405 with `Allow`):
 * - `GET /health`  200 `{ status: 'ok' | 'degraded' | 'name-taken', name, loopLag: { p50Ms, p99Ms, maxMs } }`.
 *   Liveness: 200 even when degraded (degraded is information, not death), and when another live
 *   node took this node's name (a liveness restart would take the name back from it and the two
 *   would push each other out in turn; `/ready` is 503 instead, and the process should be stopped).
 * - `GET /ready`   200 `{ ready: true }` when `cluster.isReady()`, else 503 `{ ready: false }`.
 * - `GET /metrics` Prometheus text exposition of the node's registry.
 * - `GET /cluster` `{ self: { name, address, incarnation }, members: [{ name, address, incarnation,
 *   status, rttMs, loopLagMs, since }] }`, down members included while the view lists them.
 * - `GET /processes` `{ node, workers: ProcessInfo[], stats }`: what runs where (from the registry,
 *   as this node sees it) and this node's worker counters.
 * - `GET /services` `{ node, instances: ServiceRecord[] }`: every service instance this node sees
 *   (`node.services.list()`, all health states), ordered by service then id; 404 on a node without services.
 * - `GET /config`, `GET /config?path=`, `POST /config`: `node.config`, secrets redacted, and
 *   cluster-wide changes (src/surfaces/config-route.ts says what each answers); 404 on a node without config.
 * - anything else: 404 `{ error: 'not found' }`.
 *
 * A handler never throws out: a failure answers 500 `{ error }` and logs one line.
 *
 * The `Host` header is checked before any route (DNS rebinding: a web page on an attacker's
 * name that later resolves to 127.0.0.1 could otherwise read `/cluster` from a browser on this
 * machine). Accepted: an IP literal (a rebinding page cannot use one, its origin would then be
 * this server itself), `localhost`, the host the server is bound to, and the names in
 * `allowedHosts`; the port is not checked (port mappings change it, and it does not stop
 * rebinding). Anything else is 403 `{ error: 'host not allowed', host, hint }`, logged at
 * most once per 10 s with a count of what was held back.
 *
 * Slow clients: headers must arrive within {@link HEADERS_TIMEOUT_MS} of the first byte (or of
 * the connection, for a client that sends nothing), the whole request within
 * {@link REQUEST_TIMEOUT_MS}. Node enforces both from a periodic sweep, so the sweep runs every
 * {@link CONNECTIONS_CHECK_INTERVAL_MS}: a slow client is closed at most that much after its
 * deadline (Node's default sweep of 30 s let a slow-header client stay 21 to 30 s).
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { type AddressInfo, isIP, type Socket } from 'node:net';
import type { FoundationNode, LocalHealth } from '../api.js';
import type { ProcessesStats, ProcessInfo } from '../processes/types.js';
import type { ServiceRecord } from '../services/service-mesh/records.js';
import { type Logger, RateLimitedLog } from '../util/logger.js';
import { configGet, configJsonReplacer, configPost } from './config-route.js';

/** The part of a node the admin server reads. */
export type AdminNode = Pick<FoundationNode, 'id' | 'cluster' | 'health' | 'metrics'> & Partial<Pick<FoundationNode, 'services' | 'config' | 'processes'>>;

/** Minimal logger the admin server writes to; a pino logger fits. */
export interface AdminLogger {
  error(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  debug(obj: object, msg?: string): void;
}

/** Idle keep-alive connections are closed after this long. */
export const KEEP_ALIVE_TIMEOUT_MS = 5_000;
/** A request's headers must be complete this long after its first byte (or after the connection opened). */
export const HEADERS_TIMEOUT_MS = 10_000;
/** A whole request must be received within this long. */
export const REQUEST_TIMEOUT_MS = 30_000;
/**
 * How often Node sweeps connections for the two timeouts above: the most a slow client
 * outlives its deadline. Node's default is 30 s.
 */
export const CONNECTIONS_CHECK_INTERVAL_MS = 1_000;

/** Options of {@link startAdminServer}. */
export interface AdminServerOptions {
  /** Interface to listen on, e.g. `127.0.0.1` (loopback only) or `0.0.0.0`. */
  host: string;
  /** TCP port; `0` picks a free one (read it back from {@link AdminServer.address}). */
  port: number;
  /** Where handler failures and server errors are logged. Default: nothing is logged. */
  logger?: AdminLogger;
  /**
   * Host names (without port) accepted in the `Host` header besides IP literals, `localhost` and
   * `host`: the names clients use to reach this server, e.g. the DNS name in a Prometheus
   * scrape target. Case-insensitive; a leading `*.` accepts every subdomain (`*.pods.internal`).
   * Default none.
   */
  allowedHosts?: readonly string[];
}

/** A running admin server. */
export interface AdminServer {
  /** Actual `host:port` the server listens on (IPv6 hosts in brackets). */
  readonly address: string;
  /** Stops listening and closes every connection, idle keep-alive ones included. Idempotent. */
  close(): Promise<void>;
}

/** Shape of one member in `GET /cluster`. */
export interface ClusterMemberJson {
  name: string;
  address: string;
  incarnation: number;
  status: 'up' | 'suspect' | 'down';
  rttMs: number | null;
  loopLagMs: number;
  since: number;
}

/** Body of `GET /cluster`. */
export interface ClusterJson {
  self: { name: string; address: string; incarnation: number };
  members: ClusterMemberJson[];
}

/** Body of `GET /services`. */
export interface ServicesJson {
  /** The node that answered (records are its view). */
  node: string;
  instances: ServiceRecord[];
}

/** Body of `GET /health`. */
export interface HealthJson {
  status: LocalHealth['status'];
  name: string;
  loopLag: { p50Ms: number; p99Ms: number; maxMs: number };
}

const ALLOW = 'GET, HEAD';
/** Body of a refused `Host` (403). */
export const HOST_HINT = 'address this server by IP address or localhost, or list the name in http.allowedHosts';
const noopLogger: AdminLogger = { error() {}, warn() {}, debug() {} };

/** Lower case, no trailing dot, IPv6 without brackets. */
function normalizeHostName(name: string): string {
  let n = name.trim().toLowerCase();
  if (n.endsWith('.')) n = n.slice(0, -1);
  if (n.startsWith('[') && n.endsWith(']')) n = n.slice(1, -1);
  return n;
}

/** The host name of a `Host` header value (`name`, `name:port`, `[v6]:port`), normalized; undefined when malformed. */
export function hostHeaderName(value: string): string | undefined {
  if (value.length === 0 || value.length > 300 || /[\s/\\?#@]/.test(value)) return undefined;
  try {
    const url = new URL(`http://${value}`);
    if (url.username || url.password || url.pathname !== '/') return undefined;
    return normalizeHostName(url.hostname);
  } catch {
    return undefined;
  }
}

/**
 * The `Host` check described in the file comment: returns whether a header value names this
 * server. `bound` is the host the server listens on; `allowed` the extra names.
 */
export function makeHostCheck(bound: string, allowed: readonly string[] = []): (hostHeader: string | undefined) => boolean {
  const exact = new Set(['localhost', normalizeHostName(bound), ...allowed.filter((a) => !a.startsWith('*.')).map(normalizeHostName)]);
  const suffixes = allowed.filter((a) => a.startsWith('*.')).map((a) => `.${normalizeHostName(a.slice(2))}`);
  return (hostHeader) => {
    // HTTP/1.1 requests without Host are refused by node:http itself; an HTTP/1.0 one has none,
    // and no browser sends such a request, so it cannot be a rebinding page.
    if (hostHeader === undefined) return true;
    const name = hostHeaderName(hostHeader);
    if (name === undefined) return false;
    if (isIP(name) !== 0 || exact.has(name)) return true;
    return suffixes.some((s) => name.endsWith(s) && name.length > s.length);
  };
}

/** Body of `GET /processes`: every worker running in the cluster as this node sees it, and this node's counters. */
export interface ProcessesJson {
  node: string;
  workers: ProcessInfo[];
  stats: ProcessesStats;
}

type Reply = { status: number; body: string; contentType: string };

function json(status: number, value: unknown): Reply {
  return { status, body: `${JSON.stringify(value)}\n`, contentType: 'application/json; charset=utf-8' };
}

function clusterJson(node: AdminNode): ClusterJson {
  const self = node.id;
  return {
    self: { name: self.name, address: self.address, incarnation: self.incarnation },
    members: node.cluster.members({ includeDown: true }).map((m) => ({
      name: m.name,
      address: m.address,
      incarnation: m.incarnation,
      status: m.status,
      rttMs: m.rttMs,
      loopLagMs: m.loopLagMs,
      since: m.since,
    })),
  };
}

const routes: Record<string, (node: AdminNode, url: URL) => Reply | Promise<Reply>> = {
  '/health': (node) => {
    const h = node.health();
    const body: HealthJson = {
      status: h.status,
      name: node.id.name,
      loopLag: { p50Ms: h.loopLag.p50Ms, p99Ms: h.loopLag.p99Ms, maxMs: h.loopLag.maxMs },
    };
    return json(200, body);
  },
  '/ready': (node) => (node.cluster.isReady() ? json(200, { ready: true }) : json(503, { ready: false })),
  '/metrics': async (node) => ({
    status: 200,
    body: await node.metrics.metrics(),
    contentType: node.metrics.contentType,
  }),
  '/cluster': (node) => json(200, clusterJson(node)),
  '/processes': (node) => {
    if (!node.processes) return json(404, { error: 'not found', path: '/processes' });
    const body: ProcessesJson = { node: node.id.name, workers: node.processes.list(), stats: node.processes.stats() };
    return json(200, body);
  },
  '/services': (node) => {
    if (!node.services) return json(404, { error: 'not found', path: '/services' });
    const body: ServicesJson = { node: node.id.name, instances: node.services.list() };
    return json(200, body);
  },
  '/config': (node, url) => {
    if (!node.config) return json(404, { error: 'not found', path: '/config' });
    const r = configGet({ id: node.id, config: node.config }, url);
    return { status: r.status, body: `${JSON.stringify(r.value, configJsonReplacer)}\n`, contentType: 'application/json; charset=utf-8' };
  },
};

/** Routes that also take POST (their handler reads the body), and what `Allow` says for them. */
const postRoutes: Record<string, { allow: string; handle: (node: AdminNode, req: IncomingMessage) => Promise<Reply> }> = {
  '/config': {
    allow: 'GET, HEAD, POST',
    handle: async (node, req) => {
      if (!node.config) {
        req.resume();
        return json(404, { error: 'not found', path: '/config' });
      }
      const r = await configPost({ id: node.id, config: node.config }, req);
      return { status: r.status, body: `${JSON.stringify(r.value, configJsonReplacer)}\n`, contentType: 'application/json; charset=utf-8' };
    },
  },
};

function send(req: IncomingMessage, res: ServerResponse, reply: Reply, extraHeaders: Record<string, string> = {}): void {
  const body = Buffer.from(reply.body, 'utf8');
  res.writeHead(reply.status, {
    'content-type': reply.contentType,
    'content-length': String(body.length),
    'cache-control': 'no-store',
    ...extraHeaders,
  });
  // Node drops the body of a HEAD response by itself; skip the copy anyway.
  res.end(req.method === 'HEAD' ? undefined : body);
}

/** What the server needs to answer one request. */
interface Handling {
  node: AdminNode;
  logger: AdminLogger;
  hostAllowed: (hostHeader: string | undefined) => boolean;
  refusedLog: RateLimitedLog;
}

async function handle(h: Handling, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const { node, logger } = h;
  let path = '/';
  try {
    if (!h.hostAllowed(req.headers.host)) {
      req.resume();
      const host = req.headers.host ?? '';
      h.refusedLog.warn('host', { host: host.slice(0, 100), remote: req.socket.remoteAddress }, 'admin HTTP request refused: Host header names another server');
      // The configured names are not listed: a rebinding page can read this body.
      send(req, res, json(403, { error: 'host not allowed', host: host.slice(0, 100), hint: HOST_HINT }));
      return;
    }
    const url = new URL(req.url ?? '/', 'http://admin.invalid');
    path = url.pathname;
    const route = Object.hasOwn(routes, path) ? routes[path] : undefined;
    const post = Object.hasOwn(postRoutes, path) ? postRoutes[path] : undefined;
    if (req.method === 'POST' && post) {
      send(req, res, await post.handle(node, req));
      return;
    }
    req.resume();
    if (!route) {
      send(req, res, json(404, { error: 'not found', path }));
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      const allow = post?.allow ?? ALLOW;
      send(req, res, json(405, { error: 'method not allowed', method: req.method, allow }), { allow });
      return;
    }
    send(req, res, await route(node, url));
  } catch (err) {
    logger.error({ err, method: req.method, path }, 'admin HTTP handler failed');
    if (res.headersSent) {
      res.destroy();
      return;
    }
    try {
      send(req, res, json(500, { error: 'internal error', message: err instanceof Error ? err.message : String(err) }));
    } catch {
      res.destroy();
    }
  }
}

function formatAddress(info: AddressInfo): string {
  return info.family === 'IPv6' || info.address.includes(':') ? `[${info.address}]:${info.port}` : `${info.address}:${info.port}`;
}

/**
 * Starts the admin HTTP server of `node` and resolves once it listens.
 * Rejects (with the listen error's `code`, e.g. `EADDRINUSE`) when it cannot listen.
 */
export async function startAdminServer(node: AdminNode, opts: AdminServerOptions): Promise<AdminServer> {
  const logger = opts.logger ?? noopLogger;
  const allowed = opts.allowedHosts ?? [];
  // RateLimitedLog takes a full Logger; it only ever calls warn.
  const asLogger: Logger = {
    debug: (o, m) => logger.debug(o, m),
    info: (o, m) => logger.debug(o, m),
    warn: (o, m) => logger.warn(o, m),
    error: (o, m) => logger.error(o, m),
    child: () => asLogger,
  };
  const handling: Handling = {
    node,
    logger,
    hostAllowed: makeHostCheck(opts.host, allowed),
    refusedLog: new RateLimitedLog(asLogger),
  };
  const server: Server = createServer(
    {
      headersTimeout: HEADERS_TIMEOUT_MS,
      requestTimeout: REQUEST_TIMEOUT_MS,
      // Only settable at creation: see the file comment.
      connectionsCheckingInterval: CONNECTIONS_CHECK_INTERVAL_MS,
    },
    (req, res) => {
      // Drain any request body so the connection stays reusable for keep-alive (a POST is
      // drained in `handle`, once it knows whether a route reads the body).
      if (req.method !== 'POST') req.resume();
      handle(handling, req, res).catch((err: unknown) => {
        logger.error({ err }, 'admin HTTP handler failed');
        res.destroy();
      });
    },
  );

  // Not a createServer option on every Node version this package supports.
  server.keepAliveTimeout = KEEP_ALIVE_TIMEOUT_MS;

  const sockets = new Set<Socket>();
  server.on('connection', (socket: Socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
  });

  await new Promise<void>((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException) => {
      const wrapped = Object.assign(new Error(`Admin HTTP server cannot listen on ${opts.host}:${opts.port}: ${err.message}`, { cause: err }), {
        code: err.code,
      });
      reject(wrapped);
    };
    server.once('error', onError);
    server.listen(opts.port, opts.host, () => {
      server.off('error', onError);
      resolve();
    });
  });
  server.on('error', (err) => logger.error({ err }, 'admin HTTP server error'));

  const address = formatAddress(server.address() as AddressInfo);
  let closing: Promise<void> | undefined;

  return {
    address,
    close() {
      closing ??= new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
        for (const socket of sockets) socket.destroy();
      });
      return closing;
    },
  };
}
