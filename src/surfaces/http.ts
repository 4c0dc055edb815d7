/**
 * The admin HTTP server of a node: liveness, readiness, Prometheus metrics and the
 * cluster view. Plain `node:http`, JSON bodies, no framework.
 *
 * Routes (GET and HEAD only; another method on a known route is 405 with `Allow`):
 * - `GET /health`  200 `{ status: 'ok' | 'degraded', name, loopLag: { p50Ms, p99Ms, maxMs } }`.
 *   Liveness: 200 even when degraded (degraded is information, not death).
 * - `GET /ready`   200 `{ ready: true }` when `cluster.isReady()`, else 503 `{ ready: false }`.
 * - `GET /metrics` Prometheus text exposition of the node's registry.
 * - `GET /cluster` `{ self: { name, address, incarnation }, members: [{ name, address, incarnation,
 *   status, rttMs, loopLagMs, since }] }`, down members included while the view lists them.
 * - anything else: 404 `{ error: 'not found' }`.
 *
 * A handler never throws out: a failure answers 500 `{ error }` and logs one line.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import type { FoundationNode } from '../api.js';

/** The part of a node the admin server reads. */
export type AdminNode = Pick<FoundationNode, 'id' | 'cluster' | 'health' | 'metrics'>;

/** Minimal logger the admin server writes to; a pino logger fits. */
export interface AdminLogger {
  error(obj: object, msg?: string): void;
  debug(obj: object, msg?: string): void;
}

/** Options of {@link startAdminServer}. */
export interface AdminServerOptions {
  /** Interface to listen on, e.g. `127.0.0.1` (loopback only) or `0.0.0.0`. */
  host: string;
  /** TCP port; `0` picks a free one (read it back from {@link AdminServer.address}). */
  port: number;
  /** Where handler failures and server errors are logged. Default: nothing is logged. */
  logger?: AdminLogger;
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

/** Body of `GET /health`. */
export interface HealthJson {
  status: 'ok' | 'degraded';
  name: string;
  loopLag: { p50Ms: number; p99Ms: number; maxMs: number };
}

const ALLOW = 'GET, HEAD';
const noopLogger: AdminLogger = { error() {}, debug() {} };

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

const routes: Record<string, (node: AdminNode) => Reply | Promise<Reply>> = {
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

async function handle(node: AdminNode, logger: AdminLogger, req: IncomingMessage, res: ServerResponse): Promise<void> {
  let path = '/';
  try {
    path = new URL(req.url ?? '/', 'http://admin.invalid').pathname;
    const route = Object.hasOwn(routes, path) ? routes[path] : undefined;
    if (!route) {
      send(req, res, json(404, { error: 'not found', path }));
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      send(req, res, json(405, { error: 'method not allowed', method: req.method, allow: ALLOW }), { allow: ALLOW });
      return;
    }
    send(req, res, await route(node));
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
  const server: Server = createServer((req, res) => {
    // Drain any request body so the connection stays reusable for keep-alive.
    req.resume();
    handle(node, logger, req, res).catch((err: unknown) => {
      logger.error({ err }, 'admin HTTP handler failed');
      res.destroy();
    });
  });
  server.keepAliveTimeout = 5_000;
  server.headersTimeout = 10_000;
  server.requestTimeout = 30_000;

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
