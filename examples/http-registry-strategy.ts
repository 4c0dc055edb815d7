/**
 * HttpRegistryStrategy: a custom discovery strategy that polls an HTTP endpoint answering
 *
 *     200 {"nodes": ["10.0.0.7:4369", "10.0.0.8:4369", ...]}
 *
 * (a service registry, a config server, a sidecar). It follows the four rules of
 * docs/guides/custom-strategy.md:
 *
 * 1. Only a complete, successful answer becomes `setPeers(...)`, and it is always the full set.
 * 2. Anything else (connection refused, timeout, non-2xx, bad JSON, a malformed entry) is
 *    `lookupFailed(...)`: the topology keeps the peers it has ("unknown", never "no nodes").
 * 3. This node's own address is left out.
 * 4. After `stop()` (or the topology's abort signal) it makes no call at all.
 *
 * Bad configuration throws a `ConfigError` naming the key, so `Foundation.start` fails fast with
 * `topologies.<name>.config.<key>`.
 *
 * Use it in Wizard mode:
 *
 *     await Foundation.start({
 *       topologies: {
 *         registry: { strategy: HttpRegistryStrategy, config: { url: 'http://registry.internal:8080/nodes' } },
 *       },
 *     });
 *
 * This file lives in the Foundation repository and imports the source tree so that it is
 * type-checked and tested with it (test/unit/custom-strategy.compliance.test.ts). In your own
 * project, import from the package instead:
 *
 *     import { ConfigError, ErrorCodes, FoundationError, type Strategy, type StrategyContext } from 'foundation-cluster';
 */
import { ConfigError, ErrorCodes, FoundationError, type Strategy, type StrategyContext } from '../src/index.js';

/** Configuration of {@link HttpRegistryStrategy} (the topology's `config`). */
export interface HttpRegistryStrategyConfig {
  /** `http:` or `https:` URL answering `{"nodes": ["host:port", ...]}`. Required. */
  url: string;
  /** Pause between the end of one poll and the start of the next, in ms. Integer ≥ 100. Default 5000. */
  intervalMs?: number;
  /** Deadline of one poll (connect, headers and body), in ms. Integer ≥ 1. Default 2000. */
  timeoutMs?: number;
  /** Extra request headers, e.g. `{ authorization: 'Bearer …' }`. Default: none. */
  headers?: Record<string, string>;
  /** Largest response body accepted, in bytes. Integer ≥ 2. Default 1 MiB. */
  maxResponseBytes?: number;
}

/** `host:port` or `[v6]:port`, port 1..65535: the address format topologies accept. */
function isHostPort(value: string): boolean {
  const m = /^\[([^\]]+)\]:(\d{1,5})$/.exec(value) ?? /^([^:[\]\s]+):(\d{1,5})$/.exec(value);
  if (!m) return false;
  const port = Number(m[2]);
  return port >= 1 && port <= 65535;
}

function integerOption(config: object, key: string, fallback: number, min: number): number {
  const value = (config as Record<string, unknown>)[key] ?? fallback;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min) {
    throw new ConfigError(key, `expected an integer >= ${min}, got ${JSON.stringify(value)}`);
  }
  return value;
}

/** Reads the body as text, giving up (and freeing the connection) past `max` bytes. */
async function readCapped(res: Response, max: number): Promise<string> {
  const declared = Number(res.headers.get('content-length') ?? 0);
  if (declared > max) {
    await res.body?.cancel();
    throw new Error(`the answer is ${declared} bytes, over maxResponseBytes (${max})`);
  }
  if (!res.body) return '';
  const reader = res.body.getReader();
  const chunks: Uint8Array[] = [];
  let total = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    total += value.byteLength;
    if (total > max) {
      await reader.cancel();
      throw new Error(`the answer is over maxResponseBytes (${max})`);
    }
    chunks.push(value);
  }
  return Buffer.concat(chunks).toString('utf8');
}

/** The `host:port` list of an answer, or an error if any part of it is not what we expect. */
function parseNodes(body: unknown): string[] {
  const nodes = typeof body === 'object' && body !== null ? (body as { nodes?: unknown }).nodes : undefined;
  if (!Array.isArray(nodes)) throw new Error('expected a JSON object {"nodes": ["host:port", ...]}');
  nodes.forEach((n, i) => {
    // One bad entry makes the whole answer unreadable: a partial list would drop real peers.
    if (typeof n !== 'string' || !isHostPort(n)) throw new Error(`nodes[${i}] is not a "host:port" string: ${JSON.stringify(n)}`);
  });
  return [...new Set(nodes as string[])];
}

/** Why a poll failed, in one short phrase (fetch hides the system error in `cause`). */
function describeFailure(err: unknown, signal: AbortSignal): string {
  if (signal.aborted && signal.reason instanceof Error) return signal.reason.message;
  const e = err as { message?: unknown; cause?: { code?: unknown; message?: unknown } } | undefined;
  const cause = e?.cause?.code ?? e?.cause?.message;
  return typeof cause === 'string' ? cause : typeof e?.message === 'string' ? e.message : String(err);
}

/** Discovers peers by polling an HTTP registry. */
export class HttpRegistryStrategy implements Strategy {
  readonly name = 'http-registry';
  private readonly url: string;
  private readonly intervalMs: number;
  private readonly timeoutMs: number;
  private readonly headers: Record<string, string>;
  private readonly maxResponseBytes: number;
  private ctx?: StrategyContext;
  private stopped = false;
  private timer?: NodeJS.Timeout;
  /** The request in flight, aborted by `stop()`. */
  private inflight?: AbortController;
  /** The poll in flight, awaited by `stop()` so that nothing is reported after it. */
  private polling: Promise<void> = Promise.resolve();

  constructor(config: HttpRegistryStrategyConfig) {
    if (typeof config !== 'object' || config === null) throw new ConfigError('url', 'expected a config object with a `url`');
    let url: URL;
    try {
      url = new URL(String(config.url));
    } catch {
      throw new ConfigError('url', `expected an http(s) URL, got ${JSON.stringify(config.url)}`);
    }
    if (typeof config.url !== 'string' || (url.protocol !== 'http:' && url.protocol !== 'https:')) {
      throw new ConfigError('url', `expected an http(s) URL, got ${JSON.stringify(config.url)}`);
    }
    this.url = url.href;
    this.intervalMs = integerOption(config, 'intervalMs', 5000, 100);
    this.timeoutMs = integerOption(config, 'timeoutMs', 2000, 1);
    this.maxResponseBytes = integerOption(config, 'maxResponseBytes', 1024 * 1024, 2);
    const headers = config.headers ?? {};
    if (typeof headers !== 'object' || headers === null || Array.isArray(headers) || Object.values(headers).some((v) => typeof v !== 'string')) {
      throw new ConfigError('headers', 'expected an object of string header values');
    }
    this.headers = { ...headers };
  }

  /**
   * Runs the first lookup before resolving (bounded by `timeoutMs`, never throws), so that
   * `Foundation.start()` already knows which peers it is joining; then polls every `intervalMs`.
   */
  async start(ctx: StrategyContext): Promise<void> {
    this.ctx = ctx;
    // The topology aborts this signal before it calls stop(): honour either.
    ctx.signal.addEventListener('abort', () => this.halt(), { once: true });
    if (ctx.signal.aborted) this.halt();
    this.polling = this.poll();
    await this.polling;
    this.schedule();
  }

  /** Stops polling, aborts the request in flight and resolves once nothing more can be reported. */
  async stop(): Promise<void> {
    this.halt();
    await this.polling;
  }

  private halt(): void {
    this.stopped = true;
    clearTimeout(this.timer);
    this.timer = undefined;
    this.inflight?.abort(new Error('strategy stopped'));
  }

  private schedule(): void {
    if (this.stopped) return;
    // A chain of timeouts, not an interval: polls never overlap, however slow the registry is.
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.polling = this.poll().then(() => this.schedule());
    }, this.intervalMs);
    this.timer.unref();
  }

  private async poll(): Promise<void> {
    const ctx = this.ctx;
    if (!ctx || this.stopped) return;
    const request = new AbortController();
    this.inflight = request;
    const deadline = setTimeout(() => request.abort(new Error(`no answer within ${this.timeoutMs} ms`)), this.timeoutMs);
    try {
      const nodes = await this.lookup(request.signal);
      if (this.stopped) return;
      // Rule 1 and 3: the full set, without this node.
      ctx.setPeers(nodes.filter((address) => address !== ctx.self.address));
    } catch (err) {
      if (this.stopped) return;
      // Rule 2: a failed lookup keeps the peers as they are.
      ctx.lookupFailed(new FoundationError(ErrorCodes.DISCOVERY_LOOKUP_FAILED, `GET ${this.url} failed: ${describeFailure(err, request.signal)}`, { cause: err }));
    } finally {
      clearTimeout(deadline);
      if (this.inflight === request) this.inflight = undefined;
    }
  }

  private async lookup(signal: AbortSignal): Promise<string[]> {
    const res = await fetch(this.url, { headers: { accept: 'application/json', ...this.headers }, signal, redirect: 'error' });
    if (!res.ok) {
      await res.body?.cancel();
      throw new Error(`HTTP ${res.status}`);
    }
    const text = await readCapped(res, this.maxResponseBytes);
    let body: unknown;
    try {
      body = JSON.parse(text);
    } catch {
      throw new Error('the answer is not JSON');
    }
    return parseNodes(body);
  }
}
