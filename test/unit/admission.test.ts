/**
 * What an unauthenticated peer can make a node hold: handshake slots (total and per source
 * address, freed on close or when the handshake ends) and log lines (per source address, capped
 * overall). Real sockets on loopback; the last block runs real nodes (the built library).
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createServer as createTlsServer, connect as tlsConnect } from 'node:tls';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import type { Foundation as FoundationApi, FoundationNode } from '../../src/index.js';
import {
  FAILURE_LOG_INTERVAL_MS,
  FAILURE_LOG_LINES_PER_INTERVAL,
  HandshakeAdmission,
  isLoopback,
  OVER_CAPACITY,
  SourceRateLimitedLog,
  sourceAddress,
} from '../../src/mesh/admission.js';
import type { Logger } from '../../src/util/logger.js';

/** A logger that keeps its warn lines. */
function recordingLogger(): Logger & { warns: Array<{ obj: Record<string, unknown>; msg?: string }> } {
  const warns: Array<{ obj: Record<string, unknown>; msg?: string }> = [];
  const logger = {
    warns,
    debug() {},
    info() {},
    warn(obj: object, msg?: string) {
      warns.push({ obj: obj as Record<string, unknown>, msg });
    },
    error() {},
    child: () => logger,
  };
  return logger;
}

/** Counts failures by reason into `into`, as the mesh's stats do. */
const counter = (into: Record<string, number>) => (reason: string) => {
  into[reason] = (into[reason] ?? 0) + 1;
};

function until(pred: () => boolean, what: string, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  return new Promise((resolve, reject) => {
    const tick = () => {
      if (pred()) resolve();
      else if (Date.now() > deadline) reject(new Error(`timed out waiting for ${what}`));
      else setTimeout(tick, 5);
    };
    tick();
  });
}

describe('sourceAddress / isLoopback', () => {
  it('drops the IPv4-mapped prefix and knows loopback', () => {
    expect(sourceAddress('::ffff:10.1.2.3')).toBe('10.1.2.3');
    expect(sourceAddress('fe80::1')).toBe('fe80::1');
    expect(sourceAddress(undefined)).toBe('unknown');
    expect(isLoopback('127.0.0.1')).toBe(true);
    expect(isLoopback('127.9.9.9')).toBe(true);
    expect(isLoopback('::1')).toBe(true);
    expect(isLoopback(sourceAddress('::ffff:127.0.0.1'))).toBe(true);
    expect(isLoopback('10.0.0.1')).toBe(false);
  });
});

describe('HandshakeAdmission', () => {
  let server: Server | undefined;
  const clients: Socket[] = [];

  afterEach(async () => {
    for (const c of clients.splice(0)) c.destroy();
    if (server) await new Promise<void>((r) => (server as Server).close(() => r()));
    server = undefined;
  });

  /** A loopback server whose connections go through `admission`; returns its port and what it accepted. */
  async function listen(admission: HandshakeAdmission) {
    const accepted: Socket[] = [];
    let seen = 0;
    server = createServer((s) => {
      seen++;
      if (admission.accept(s)) accepted.push(s);
    });
    await new Promise<void>((r) => (server as Server).listen(0, '127.0.0.1', () => r()));
    const port = (server.address() as { port: number }).port;
    const open = async (n: number, localAddress = '127.0.0.1') => {
      const before = seen;
      const closed: boolean[] = [];
      for (let i = 0; i < n; i++) {
        const c = connect({ port, host: '127.0.0.1', localAddress });
        const idx = closed.push(false) - 1;
        c.on('error', () => {});
        c.on('close', () => (closed[idx] = true));
        clients.push(c);
      }
      await until(() => seen === before + n, `${n} connections`);
      return closed;
    };
    return { accepted, open };
  }

  it('caps handshakes in progress in total, closes the rest at once and counts them, and frees slots on close', async () => {
    const failures: Record<string, number> = {};
    const log = recordingLogger();
    const admission = new HandshakeAdmission(counter(failures), new SourceRateLimitedLog(log), { total: 4, perAddress: 100 });
    const { accepted, open } = await listen(admission);
    const closed = await open(6);
    expect(accepted).toHaveLength(4);
    expect(admission.inProgress).toBe(4);
    expect(failures[OVER_CAPACITY]).toBe(2);
    expect(admission.refused).toBe(2);
    // The refused ones are closed by the server at once (the first four stay open).
    await until(() => closed.filter(Boolean).length === 2, 'refused connections closed');
    expect(closed.slice(0, 4)).toEqual([false, false, false, false]);
    // One line for the refusals from this address, with the reason.
    expect(log.warns).toHaveLength(1);
    expect(log.warns[0]?.obj).toMatchObject({ source: '127.0.0.1', reason: OVER_CAPACITY });

    // Two peers hang up: their slots are free again.
    (accepted[0] as Socket).destroy();
    clients[1]?.destroy();
    await until(() => admission.inProgress === 2, 'slots freed on close');
    await open(2);
    expect(accepted).toHaveLength(6);
    expect(admission.inProgress).toBe(4);
    expect(failures[OVER_CAPACITY]).toBe(2);
  });

  it('frees the slot when the handshake ends, not only when the socket closes', async () => {
    const admission = new HandshakeAdmission(() => {}, new SourceRateLimitedLog(recordingLogger()), { total: 2 });
    const { accepted, open } = await listen(admission);
    await open(2);
    expect(admission.inProgress).toBe(2);
    admission.done(accepted[0] as Socket);
    admission.done(accepted[0] as Socket); // idempotent
    expect(admission.inProgress).toBe(1);
    (accepted[0] as Socket).destroy(); // its later close frees nothing more
    await open(1);
    expect(accepted).toHaveLength(3);
    expect(admission.inProgress).toBe(2);
  });

  it('caps each source address, leaving slots for the others', async () => {
    const failures: Record<string, number> = {};
    const admission = new HandshakeAdmission(counter(failures), new SourceRateLimitedLog(recordingLogger()), {
      total: 100,
      perAddress: 3,
      loopbackExempt: false,
    });
    const { accepted, open } = await listen(admission);
    await open(5, '127.0.0.1');
    expect(accepted).toHaveLength(3);
    expect(failures[OVER_CAPACITY]).toBe(2);
    await open(3, '127.0.0.2');
    expect(accepted).toHaveLength(6);
    expect(failures[OVER_CAPACITY]).toBe(2);
  });

  it('exempts loopback from the per-address cap by default (a cluster on one host), not from the total', async () => {
    const failures: Record<string, number> = {};
    const admission = new HandshakeAdmission(counter(failures), new SourceRateLimitedLog(recordingLogger()), { total: 6, perAddress: 2 });
    const { accepted, open } = await listen(admission);
    await open(8);
    expect(accepted).toHaveLength(6);
    expect(failures[OVER_CAPACITY]).toBe(2);
  });
});

const HAS_OPENSSL = (() => {
  try {
    execFileSync('openssl', ['version'], { stdio: 'pipe' });
    return true;
  } catch {
    return false;
  }
})();

describe.skipIf(!HAS_OPENSSL)(`HandshakeAdmission on a TLS server${HAS_OPENSSL ? '' : ' (skipped: no openssl to make a certificate)'}`, () => {
  it('counts TLS handshakes against the cap, and knows the hang-up of a refused socket is no TLS failure', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'foundation-admission-'));
    try {
      execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'k.pem', '-out', 'c.pem', '-days', '1', '-subj', '/CN=localhost'], {
        cwd: dir,
        stdio: 'pipe',
      });
      const failures: Record<string, number> = {};
      const admission = new HandshakeAdmission(counter(failures), new SourceRateLimitedLog(recordingLogger()), { total: 1 });
      const server = createTlsServer({ key: readFileSync(join(dir, 'k.pem')), cert: readFileSync(join(dir, 'c.pem')) });
      const tlsErrors: boolean[] = [];
      server.on('connection', (raw: Socket) => admission.accept(raw));
      server.on('tlsClientError', (_err, socket) => tlsErrors.push(admission.wasRefused(socket)));
      await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
      const port = (server.address() as { port: number }).port;
      // A plain-TCP client that never starts TLS holds the only slot...
      const holder = connect({ port, host: '127.0.0.1' });
      holder.on('error', () => {});
      await until(() => admission.inProgress === 1, 'the first connection admitted');
      // ...so a TLS client is refused before its TLS handshake.
      const refused = tlsConnect({ port, host: '127.0.0.1', rejectUnauthorized: false });
      refused.on('error', () => {});
      await until(() => tlsErrors.length === 1, 'the refused socket reported by the TLS server');
      expect(tlsErrors).toEqual([true]);
      expect(failures[OVER_CAPACITY]).toBe(1);
      holder.destroy();
      refused.destroy();
      await until(() => admission.inProgress === 0, 'slot freed');
      await new Promise<void>((r) => server.close(() => r()));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('SourceRateLimitedLog', () => {
  it('logs one line per source address per interval, whatever the port, counting the rest', () => {
    const log = recordingLogger();
    let now = 1_000_000;
    const limited = new SourceRateLimitedLog(log, FAILURE_LOG_INTERVAL_MS, FAILURE_LOG_LINES_PER_INTERVAL, () => now);
    for (let i = 0; i < 1000; i++) {
      limited.warn('10.0.0.7', { remote: `10.0.0.7:${40000 + i}` }, 'handshake failed');
      now += 1; // 1,000 failures within one second
    }
    expect(log.warns).toHaveLength(1);
    now += FAILURE_LOG_INTERVAL_MS;
    limited.warn('10.0.0.7', {}, 'handshake failed');
    expect(log.warns).toHaveLength(2);
    expect(log.warns[1]?.obj).toMatchObject({ source: '10.0.0.7', suppressedSinceLast: 999 });
  });

  it('logs at most FAILURE_LOG_LINES_PER_INTERVAL lines per interval for failures from 200 addresses, and says how many it dropped', () => {
    const log = recordingLogger();
    let now = 1_000_000;
    const limited = new SourceRateLimitedLog(log, FAILURE_LOG_INTERVAL_MS, FAILURE_LOG_LINES_PER_INTERVAL, () => now);
    for (let round = 0; round < 5; round++) {
      for (let a = 0; a < 200; a++) limited.warn(`10.0.${a >> 8}.${a & 255}`, {}, 'handshake failed');
      now += 100;
    }
    expect(log.warns).toHaveLength(FAILURE_LOG_LINES_PER_INTERVAL);
    now += FAILURE_LOG_INTERVAL_MS;
    limited.warn('10.9.9.9', {}, 'handshake failed');
    expect(log.warns).toHaveLength(FAILURE_LOG_LINES_PER_INTERVAL + 1);
    // 200 sources logged or dropped in the first round; only the 180 the cap dropped count here
    // (the 20 logged sources' repeats are counted on their own next lines).
    expect(log.warns.at(-1)?.obj).toMatchObject({ suppressedOverall: 180 * 5 });
  });

  it('stays bounded when more sources than it remembers keep failing', () => {
    const log = recordingLogger();
    let now = 0;
    const limited = new SourceRateLimitedLog(log, 1000, 5, () => now);
    for (let i = 0; i < 50_000; i++) {
      limited.warn(`s${i}`, {}, 'x');
      if (i % 1000 === 0) now += 100; // 50 intervals of 1 s
    }
    expect(log.warns.length).toBeLessThanOrEqual(5 * 6);
  });
});

const DIST_FOUNDATION = fileURLToPath(new URL('../../dist/foundation.js', import.meta.url));
const BUILT = existsSync(DIST_FOUNDATION);

describe.skipIf(!BUILT)(`a node flooded with junk connections${BUILT ? '' : ' (skipped: run npm run build)'}`, () => {
  let node: FoundationNode | undefined;
  afterEach(async () => {
    await node?.stop();
    node = undefined;
  });

  /** Opens `n` connections from `localAddress(i)`, each sending a bad frame header, and waits for all to be closed by the node. */
  async function junk(port: number, n: number, localAddress: (i: number) => string): Promise<void> {
    let closed = 0;
    for (let i = 0; i < n; i++) {
      const c = connect({ port, host: '127.0.0.1', localAddress: localAddress(i) });
      c.on('error', () => {});
      c.on('connect', () => c.write(Buffer.from([0xff, 0xff, 0xff, 0xff, 0x01])));
      c.on('close', () => closed++);
      // A few at a time: the point is the count of log lines, not the cap.
      if (i % 50 === 49) await until(() => closed === i + 1, 'junk connections closed', 10_000);
    }
    await until(() => closed === n, 'junk connections closed', 10_000);
  }

  async function start(log: Logger): Promise<FoundationNode> {
    const { Foundation } = (await import(DIST_FOUNDATION)) as { Foundation: typeof FoundationApi };
    return Foundation.start({ name: 'flooded', host: '127.0.0.1', port: 0, secret: 'admission-test-secret', logger: log });
  }

  const handshakeLines = (log: ReturnType<typeof recordingLogger>) => log.warns.filter((w) => typeof w.msg === 'string' && /handshake|refused/.test(w.msg));

  it('logs one line for 1,000 failed handshakes from one address, and counts every one', async () => {
    const log = recordingLogger();
    node = await start(log);
    const port = Number(node.id.address.split(':').pop());
    await junk(port, 1000, () => '127.0.0.1');
    expect(handshakeLines(log)).toHaveLength(1);
    const failures = node.mesh.stats().handshakeFailures;
    expect((failures.protocol ?? 0) + (failures[OVER_CAPACITY] ?? 0)).toBe(1000);
  }, 30_000);

  it(`logs at most ${FAILURE_LOG_LINES_PER_INTERVAL} lines for failed handshakes from 200 addresses`, async () => {
    const log = recordingLogger();
    node = await start(log);
    const port = Number(node.id.address.split(':').pop());
    await junk(port, 1000, (i) => `127.0.${1 + ((i % 200) >> 8)}.${1 + ((i % 200) & 255)}`);
    const lines = handshakeLines(log);
    expect(lines.length).toBeGreaterThan(1);
    expect(lines.length).toBeLessThanOrEqual(FAILURE_LOG_LINES_PER_INTERVAL);
  }, 30_000);
});
