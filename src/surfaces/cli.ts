#!/usr/bin/env node
/**
 * The `foundation` command line.
 *
 * - `foundation start`  runs one node until SIGINT/SIGTERM.
 * - `foundation status` prints the cluster as one node's admin server sees it.
 * - `foundation services` prints the service instances one node's admin server sees (`/services`).
 * - `foundation config get|set` reads the cluster-wide config (`/config`) and sets a path on every
 *   node by a two-phase commit, printing each node's vote (src/surfaces/cli-config.ts).
 * - `foundation demo`   runs a small local cluster of child processes on 127.0.0.1.
 *
 * Exit codes: 0 success, 1 runtime failure (node unreachable, start failed...),
 * 2 usage error (unknown command or flag, invalid value, invalid configuration).
 *
 * Output: `start` writes one "started" line to stdout and its logs to stderr. With
 * `FOUNDATION_EMIT_STARTED=1` or `--json-logs` the started line is machine-readable:
 * `{"event":"started","name":...,"address":...,"incarnation":...,"http":...,"pid":...}`
 * (and `{"event":"stopped",...}` on a clean stop).
 */
import { readFileSync, realpathSync } from 'node:fs';
import { request } from 'node:http';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { pino } from 'pino';
import type { FoundationNode } from '../api.js';
import { type HostPort, type HostPortRules, hostPortShape, parseHostPort as parseAddressText } from '../config/address.js';
import { ENV_CLUSTER_VALUES, optionsFromEnv } from '../config/env.js';
import type { FoundationOptions } from '../config/options.js';
import { ErrorCodes, FoundationError } from '../errors.js';
import type { Member } from '../mesh/types.js';
import { addClusterConfigCommands } from './cli-config.js';
import { DEMO_HOST, runDemo } from './cli-demo.js';
import type { ClusterJson, HealthJson, ServicesJson } from './http.js';

/** Loads `Foundation` lazily, so `foundation status` and `--help` never load the mesh. */
async function loadFoundation(): Promise<typeof import('../foundation.js').Foundation> {
  return (await import('../foundation.js')).Foundation;
}

// ---------------------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------------------

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
/** Levels accepted by `--log-level`. */
export type LogLevel = (typeof LOG_LEVELS)[number];

/** A usage error found after parsing (exit code 2). */
class UsageError extends Error {}

export type { HostPort };

function out(line: string): void {
  process.stdout.write(`${line}\n`);
}

function errLine(line: string): void {
  process.stderr.write(`${line}\n`);
}

function parsePortValue(value: string, min = 0): number {
  if (!/^\d{1,5}$/.test(value.trim())) throw new InvalidArgumentError(`Expected an integer from ${min} to 65535.`);
  const port = Number(value.trim());
  if (port < min || port > 65535) throw new InvalidArgumentError(`Expected an integer from ${min} to 65535.`);
  return port;
}

/** `--port`: 0..65535. */
export function parsePort(value: string): number {
  return parsePortValue(value, 0);
}

/**
 * `port`, `host:port`, `[v6]:port` (and `http://host:port` where allowed), with the parser
 * `Foundation.start({ http })` and FOUNDATION_HTTP use. The host is `undefined` for a bare port.
 */
export function parseHostPort(value: string, allowBarePort: boolean, minPort = 0, allowHttpUrl = false): HostPort {
  const rules: HostPortRules = { allowBarePort, minPort, allowHttpUrl };
  const parsed = parseAddressText(value, rules);
  if (!parsed) throw new InvalidArgumentError(`Expected ${hostPortShape(rules)}.`);
  return parsed;
}

function formatHostPort(host: string, port: number): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}

function parseStaticList(value: string): string[] {
  const entries = value
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s.length > 0);
  if (entries.length === 0) throw new InvalidArgumentError('Expected a comma-separated list of <host:port>.');
  return entries.map((entry) => {
    try {
      const { host, port } = parseHostPort(entry, false, 1);
      return formatHostPort(host ?? '', port);
    } catch (err) {
      throw new InvalidArgumentError(`"${entry}": ${(err as Error).message}`);
    }
  });
}

function parseNonEmpty(value: string): string {
  const v = value.trim();
  if (v.length === 0) throw new InvalidArgumentError('Expected a non-empty value.');
  return v;
}

function parseIntRange(min: number, max: number) {
  return (value: string): number => {
    if (!/^\d+$/.test(value.trim())) throw new InvalidArgumentError(`Expected an integer from ${min} to ${max}.`);
    const n = Number(value.trim());
    if (n < min || n > max) throw new InvalidArgumentError(`Expected an integer from ${min} to ${max}.`);
    return n;
  };
}

function packageVersion(): string {
  try {
    // Same relative depth from src/surfaces/cli.ts and dist/surfaces/cli.js.
    const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version?: string };
    return pkg.version ?? '0.0.0';
  } catch {
    return '0.0.0';
  }
}

function fmtMs(ms: number | null | undefined): string {
  if (typeof ms !== 'number' || !Number.isFinite(ms)) return '-';
  return ms < 10 ? `${ms.toFixed(2)} ms` : `${ms.toFixed(1)} ms`;
}

function fmtAge(sinceMs: number, now = Date.now()): string {
  const s = Math.max(0, Math.round((now - sinceMs) / 1000));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${s % 60}s`;
  return `${Math.floor(s / 3600)}h${Math.floor((s % 3600) / 60)}m`;
}

function table(rows: string[][]): string {
  const widths: number[] = [];
  for (const row of rows) {
    for (const [i, cell] of row.entries()) widths[i] = Math.max(widths[i] ?? 0, cell.length);
  }
  return rows.map((row) => row.map((cell, i) => (i === row.length - 1 ? cell : cell.padEnd(widths[i] ?? 0))).join('  ')).join('\n');
}

// ---------------------------------------------------------------------------------------
// Logging
// ---------------------------------------------------------------------------------------

const LEVEL_NAMES: Record<number, string> = { 10: 'TRACE', 20: 'DEBUG', 30: 'INFO', 40: 'WARN', 50: 'ERROR', 60: 'FATAL' };
const HIDDEN_LOG_KEYS = new Set(['level', 'time', 'msg', 'pid', 'hostname', 'node']);

function fmtLogValue(value: unknown): string {
  if (typeof value === 'string') return /[\s="]/.test(value) ? JSON.stringify(value) : value;
  if (value && typeof value === 'object' && 'message' in value && typeof (value as { message: unknown }).message === 'string') {
    return JSON.stringify((value as { message: string }).message);
  }
  return JSON.stringify(value);
}

/** pino destination printing one short human line per record to stderr. */
function prettyDestination(): pino.DestinationStream {
  return {
    write(line: string) {
      let rec: Record<string, unknown>;
      try {
        rec = JSON.parse(line) as Record<string, unknown>;
      } catch {
        process.stderr.write(line);
        return;
      }
      const time = new Date(typeof rec.time === 'number' ? rec.time : Date.now()).toISOString().slice(11, 23);
      const level = (LEVEL_NAMES[rec.level as number] ?? String(rec.level)).padEnd(5);
      const fields = Object.entries(rec)
        .filter(([k]) => !HIDDEN_LOG_KEYS.has(k))
        .map(([k, v]) => `${k}=${fmtLogValue(v)}`)
        .join(' ');
      process.stderr.write(`${time} ${level} ${String(rec.msg ?? '')}${fields ? `  ${fields}` : ''}\n`);
    },
  };
}

/** Messages the mesh logs for every member change, which `start` reports with its own line instead. */
const MESH_MEMBER_MESSAGES = new Set(['member up', 'member down']);

/**
 * Drops the mesh's own info line for a member change (it carries `peer`; the CLI's carries
 * `member`), so each change is logged once, by the CLI, whose line leaves hidden nodes out. A
 * mesh that logs these at debug is never matched.
 */
const logOnceHooks: pino.LoggerOptions['hooks'] = {
  logMethod(args, method, level) {
    const [obj, msg] = args as unknown[];
    if (level === 30 && typeof msg === 'string' && MESH_MEMBER_MESSAGES.has(msg) && typeof obj === 'object' && obj !== null && 'peer' in obj) return;
    method.apply(this, args);
  },
};

/** The root logger. Foundation adds `node` itself (`logger.child({ node })`), so the base holds no name. */
function createLogger(json: boolean, level: LogLevel): pino.Logger {
  if (json) return pino({ level, base: { pid: process.pid }, hooks: logOnceHooks }, pino.destination({ fd: 2, sync: true }));
  return pino({ level, base: {}, hooks: logOnceHooks }, prettyDestination());
}

// ---------------------------------------------------------------------------------------
// start
// ---------------------------------------------------------------------------------------

/** Parsed flags of `foundation start` (each also settable from its environment variable). */
export interface StartFlags {
  /** `--name` / FOUNDATION_NAME: cluster-unique node name. Default `<hostname>-<pid>`. */
  name?: string;
  /** `--cluster` / FOUNDATION_CLUSTER: `true` (Mortal mode) or an Apprentice strategy name. */
  cluster?: string;
  /** `--port` / FOUNDATION_PORT: mesh TCP port, 0 = any free port. */
  port: number;
  /** `--host` / FOUNDATION_HOST: interface the mesh listens on. Default `127.0.0.1`. */
  host?: string;
  /** `--http` / FOUNDATION_HTTP: admin server; a bare port listens on `host`. Omitted = no admin server. */
  http?: HostPort;
  /** `--cookie` / FOUNDATION_SECRET: shared cluster secret. */
  cookie?: string;
  /** `--static` / FOUNDATION_STATIC: `host:port` mesh addresses to join. */
  static?: string[];
  /** `--cluster-name` / FOUNDATION_CLUSTER_NAME. */
  clusterName?: string;
  /** `--hidden`: connect as a hidden (tool) node. */
  hidden?: boolean;
  /** `--insecure`: allow no secret under NODE_ENV=production. */
  insecure?: boolean;
  /** `--json-logs`: JSON log lines and a JSON started line. */
  jsonLogs?: boolean;
  /** `--log-level` / FOUNDATION_LOG_LEVEL. Default `info`. */
  logLevel: LogLevel;
}

/** Builds the `Foundation.start()` options from the `start` flags. */
export function startOptionsFromFlags(flags: StartFlags, logger?: pino.Logger): FoundationOptions {
  const host = flags.host ?? '127.0.0.1';
  const options: FoundationOptions = { host, port: flags.port };
  if (flags.name !== undefined) options.name = flags.name;
  if (flags.cookie !== undefined) options.secret = flags.cookie;
  if (flags.clusterName !== undefined) options.clusterName = flags.clusterName;
  if (flags.hidden) options.hidden = true;
  if (flags.insecure) options.insecure = true;
  if (flags.http) options.http = { host: flags.http.host ?? host, port: flags.http.port };
  if (flags.cluster !== undefined) {
    // The shorthand's own keys (app name, query...) come from the environment, as for Foundation.start.
    options.cluster = optionsFromEnv({ ...process.env, FOUNDATION_CLUSTER: flags.cluster }).cluster;
  }
  if (flags.static && flags.static.length > 0) options.cluster = { strategy: 'static', hosts: flags.static };
  if (logger) options.logger = logger;
  return options;
}

async function runStart(flags: StartFlags): Promise<void> {
  const emitJson = process.env.FOUNDATION_EMIT_STARTED === '1' || flags.jsonLogs === true;
  const rootLogger = createLogger(flags.jsonLogs === true, flags.logLevel);
  const logger = rootLogger.child({ node: flags.name });

  let node: FoundationNode | undefined;
  let stopping = false;

  const shutdown = (why: string) => {
    if (stopping) {
      logger.warn({ signal: why }, 'second shutdown request: exiting now');
      process.exit(1);
    }
    stopping = true;
    if (!node) {
      logger.info({ signal: why }, 'shutdown requested while starting; will stop once started');
      return;
    }
    logger.info({ signal: why }, 'stopping');
    const n = node;
    n.stop().then(
      () => {
        if (emitJson) out(JSON.stringify({ event: 'stopped', name: n.id.name, pid: process.pid }));
        process.exit(0);
      },
      (err: unknown) => {
        logger.error({ err }, 'stop failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGINT', () => shutdown('SIGINT'));
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  // Internal (set by `foundation demo`): stop when the parent goes away and our stdin closes.
  if (process.env.FOUNDATION_EXIT_WITH_PARENT === '1') {
    process.stdin.on('end', () => shutdown('parent-exit'));
    process.stdin.on('error', () => shutdown('parent-exit'));
    process.stdin.resume();
  }

  const Foundation = await loadFoundation();
  node = await Foundation.start(startOptionsFromFlags(flags, rootLogger));

  const cluster = node.cluster;
  cluster.on('up', (m: Member) => logger.info({ member: m.name, address: m.address }, 'member up'));
  cluster.on('alive', (m: Member) => logger.info({ member: m.name }, 'member alive again'));
  cluster.on('suspect', (m: Member) => logger.warn({ member: m.name }, 'member suspect'));
  cluster.on('down', (m: Member, reason: unknown) => logger.warn({ member: m.name, reason }, 'member down'));

  const httpAddress = node.httpAddress;

  if (emitJson) {
    out(
      JSON.stringify({
        event: 'started',
        name: node.id.name,
        address: node.id.address,
        incarnation: node.id.incarnation,
        http: httpAddress ?? null,
        cluster: flags.clusterName ?? null,
        pid: process.pid,
      }),
    );
  } else {
    out(
      `foundation: node ${node.id.name} started, mesh ${node.id.address}` +
        (httpAddress ? `, admin http://${httpAddress}` : ', no admin server') +
        (flags.clusterName ? `, cluster "${flags.clusterName}"` : ''),
    );
  }
  if (stopping) {
    stopping = false;
    shutdown('signal-during-start');
  }
}

// ---------------------------------------------------------------------------------------
// status
// ---------------------------------------------------------------------------------------

class UnreachableError extends Error {}

function getJson<T>(address: string, path: string, timeoutMs: number): Promise<{ status: number; body: T }> {
  const { host, port } = parseHostPort(address, true, 0, true);
  return new Promise((resolve, reject) => {
    const req = request(
      { host: host ?? '127.0.0.1', port, path, method: 'GET', agent: false, timeout: timeoutMs, headers: { accept: 'application/json' } },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => {
          text += c;
        });
        res.on('end', () => {
          try {
            resolve({ status: res.statusCode ?? 0, body: JSON.parse(text) as T });
          } catch {
            reject(new UnreachableError(`${path} answered ${res.statusCode} with a body that is not JSON`));
          }
        });
        res.on('error', (err) => reject(new UnreachableError(err.message)));
      },
    );
    req.on('timeout', () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    req.on('error', (err: NodeJS.ErrnoException) => reject(new UnreachableError(err.code ?? err.message)));
    req.end();
  });
}

async function fetchClusterStatus(address: string, timeoutMs: number): Promise<{ cluster: ClusterJson; health: HealthJson }> {
  const [cluster, health] = await Promise.all([getJson<ClusterJson>(address, '/cluster', timeoutMs), getJson<HealthJson>(address, '/health', timeoutMs)]);
  if (cluster.status !== 200) throw new UnreachableError(`/cluster answered ${cluster.status}`);
  if (health.status !== 200) throw new UnreachableError(`/health answered ${health.status}`);
  return { cluster: cluster.body, health: health.body };
}

async function runStatus(flags: { http: HostPort; json?: boolean; timeout: number }): Promise<void> {
  const address = formatHostPort(flags.http.host ?? '127.0.0.1', flags.http.port);
  let result: { cluster: ClusterJson; health: HealthJson };
  try {
    result = await fetchClusterStatus(address, flags.timeout);
  } catch (err) {
    errLine(`foundation: cannot reach the admin server at http://${address} (${(err as Error).message}); is the node running with --http ${address}?`);
    process.exitCode = 1;
    return;
  }
  if (flags.json) {
    out(JSON.stringify(result, null, 2));
    return;
  }
  const { cluster, health } = result;
  const counts = { up: 0, suspect: 0, down: 0 };
  for (const m of cluster.members) counts[m.status] = (counts[m.status] ?? 0) + 1;
  out(
    `node ${cluster.self.name} (${cluster.self.address}), health ${health.status}; ` +
      `${cluster.members.length} member(s): ${counts.up} up, ${counts.suspect} suspect, ${counts.down} down`,
  );
  const rows = [['NAME', 'ADDRESS', 'STATUS', 'RTT', 'LOOP LAG', 'SINCE']];
  rows.push([`${cluster.self.name} (self)`, cluster.self.address, 'self', '-', fmtMs(health.loopLag.p99Ms), '-']);
  for (const m of [...cluster.members].sort((a, b) => a.name.localeCompare(b.name))) {
    rows.push([m.name, m.address, m.status, fmtMs(m.rttMs), fmtMs(m.loopLagMs), fmtAge(m.since)]);
  }
  out(table(rows));
}

// ---------------------------------------------------------------------------------------
// services
// ---------------------------------------------------------------------------------------

async function runServices(flags: { http: HostPort; name?: string; json?: boolean; timeout: number }): Promise<void> {
  const address = formatHostPort(flags.http.host ?? '127.0.0.1', flags.http.port);
  let body: ServicesJson;
  try {
    const res = await getJson<ServicesJson>(address, '/services', flags.timeout);
    if (res.status !== 200) throw new UnreachableError(`/services answered ${res.status}`);
    body = res.body;
  } catch (err) {
    errLine(
      `foundation: cannot read services from the admin server at http://${address} (${(err as Error).message}); is the node running with --http ${address}?`,
    );
    process.exitCode = 1;
    return;
  }
  const instances = flags.name === undefined ? body.instances : body.instances.filter((r) => r.name === flags.name);
  if (flags.json) {
    out(JSON.stringify({ node: body.node, instances }, null, 2));
    return;
  }
  const counts = { passing: 0, warning: 0, critical: 0 };
  for (const r of instances) counts[r.health] = (counts[r.health] ?? 0) + 1;
  const services = new Set(instances.map((r) => r.name)).size;
  out(
    `node ${body.node} sees ${instances.length} instance(s) of ${services} service(s)${flags.name === undefined ? '' : ` named ${flags.name}`}: ` +
      `${counts.passing} passing, ${counts.warning} warning, ${counts.critical} critical`,
  );
  if (instances.length === 0) return;
  const rows = [['SERVICE', 'ID', 'NODE', 'VERSION', 'HEALTH', 'CHECKED', 'RTT', 'ENDPOINT', 'TAGS']];
  for (const r of instances) {
    const health = r.output ? `${r.health} (${r.output})` : r.health;
    rows.push([
      r.name,
      r.id,
      r.node,
      r.version ?? '-',
      health,
      r.checkedAt === null ? '-' : `${fmtAge(r.checkedAt)} ago`,
      fmtMs(r.rttMs),
      r.endpoint ?? '-',
      r.tags.join(',') || '-',
    ]);
  }
  out(table(rows));
}

// ---------------------------------------------------------------------------------------
// Program
// ---------------------------------------------------------------------------------------

/**
 * Builds the `foundation` commander program. Errors are thrown as `CommanderError`
 * (`exitOverride`), never exit the process: {@link main} maps them to exit code 2.
 */
export function buildProgram(): Command {
  const program = new Command('foundation');
  program
    .description('Run and inspect Foundation cluster nodes')
    .version(packageVersion(), '-V, --version')
    .exitOverride()
    .showHelpAfterError('(run "foundation <command> --help" for usage)');

  program
    .command('start')
    .description('Run one node until SIGINT/SIGTERM. Logs go to stderr; one "started" line goes to stdout.')
    .addOption(new Option('--name <name>', 'cluster-unique node name (default <hostname>-<pid>)').env('FOUNDATION_NAME').argParser(parseNonEmpty))
    .addOption(new Option('--port <port>', 'mesh TCP port (0 = pick a free one)').env('FOUNDATION_PORT').argParser(parsePort).default(0))
    .addOption(
      new Option('--cluster <mode>', `discovery: ${ENV_CLUSTER_VALUES.join(' | ')} (true = Mortal mode); a strategy's keys come from FOUNDATION_* variables`)
        .env('FOUNDATION_CLUSTER')
        // Checked (case-insensitively, with a did-you-mean) by the same code as FOUNDATION_CLUSTER.
        .argParser(parseNonEmpty),
    )
    .addOption(
      new Option('--http <port|host:port>', 'admin HTTP server (/health /ready /metrics /cluster); a bare port uses --host')
        .env('FOUNDATION_HTTP')
        .argParser((v: string) => parseHostPort(v, true)),
    )
    .addOption(new Option('--host <host>', 'interface the mesh listens on').env('FOUNDATION_HOST').default('127.0.0.1').argParser(parseNonEmpty))
    .addOption(new Option('--cookie <secret>', 'shared cluster secret (prefer FOUNDATION_SECRET: flags show in ps)').env('FOUNDATION_SECRET'))
    .addOption(new Option('--static <host:port,...>', 'mesh addresses of nodes to join').env('FOUNDATION_STATIC').argParser(parseStaticList))
    .addOption(new Option('--cluster-name <name>', 'cluster name; nodes of other clusters are refused').env('FOUNDATION_CLUSTER_NAME').argParser(parseNonEmpty))
    .option('--hidden', 'join as a hidden node (tooling): connected but not a member')
    .option('--insecure', 'allow running without a secret when NODE_ENV=production')
    .option('--json-logs', 'JSON log lines (and a JSON started line) instead of short human lines')
    .addOption(new Option('--log-level <level>', 'log level').choices(LOG_LEVELS).env('FOUNDATION_LOG_LEVEL').default('info'))
    .action(async (flags: StartFlags) => {
      await runStart(flags);
    });

  program
    .command('status')
    .description("Print the cluster as one node's admin server sees it")
    .addOption(
      new Option('--http <url|host:port>', "the node's admin server: http://host:port, host:port, or a port on 127.0.0.1")
        .env('FOUNDATION_HTTP')
        .argParser((v: string) => parseHostPort(v, true, 1, true))
        .makeOptionMandatory(),
    )
    .option('--json', 'print the raw JSON of /cluster and /health')
    .addOption(new Option('--timeout <ms>', 'per-request timeout').argParser(parseIntRange(1, 600_000)).default(3000))
    .action(async (flags: { http: HostPort; json?: boolean; timeout: number }) => {
      await runStatus(flags);
    });

  program
    .command('services')
    .description("Print the service instances one node's admin server sees (GET /services), with their health")
    .addOption(
      new Option('--http <url|host:port>', "the node's admin server: http://host:port, host:port, or a port on 127.0.0.1")
        .env('FOUNDATION_HTTP')
        .argParser((v: string) => parseHostPort(v, true, 1, true))
        .makeOptionMandatory(),
    )
    .addOption(new Option('--name <service>', 'only the instances of this service').argParser(parseNonEmpty))
    .option('--json', 'print the raw JSON of /services')
    .addOption(new Option('--timeout <ms>', 'request timeout').argParser(parseIntRange(1, 600_000)).default(3000))
    .action(async (flags: { http: HostPort; name?: string; json?: boolean; timeout: number }) => {
      await runServices(flags);
    });

  const config = program.command('config').description('Inspect the start options (explain) and the cluster-wide config (get, set)');
  config
    .command('explain')
    .description('Print the topologies the current flags and FOUNDATION_* environment resolve to, as start would run them')
    .addOption(new Option('--port <port>', 'mesh TCP port').env('FOUNDATION_PORT').argParser(parsePort))
    .addOption(new Option('--host <host>', 'interface the mesh listens on').env('FOUNDATION_HOST').argParser(parseNonEmpty))
    .addOption(new Option('--cluster <mode>', `${ENV_CLUSTER_VALUES.join(' | ')} (true = Mortal mode)`).env('FOUNDATION_CLUSTER').argParser(parseNonEmpty))
    .addOption(new Option('--static <host:port,...>', 'mesh addresses of nodes to join').env('FOUNDATION_STATIC').argParser(parseStaticList))
    .addOption(new Option('--cluster-name <name>', 'cluster name').env('FOUNDATION_CLUSTER_NAME').argParser(parseNonEmpty))
    .option('--json', 'print JSON')
    .action(async (flags: { port?: number; host?: string; cluster?: string; static?: string[]; clusterName?: string; json?: boolean }) => {
      const { explainConfig, formatExplanation } = await import('../config/explain.js');
      const options: FoundationOptions = {};
      if (flags.port !== undefined) options.port = flags.port;
      if (flags.host !== undefined) options.host = flags.host;
      if (flags.clusterName !== undefined) options.clusterName = flags.clusterName;
      if (flags.cluster !== undefined) options.cluster = optionsFromEnv({ ...process.env, FOUNDATION_CLUSTER: flags.cluster }).cluster;
      if (flags.static && flags.static.length > 0) options.cluster = { strategy: 'static', hosts: flags.static };
      const e = await explainConfig(options);
      out(flags.json ? JSON.stringify(e, null, 2) : formatExplanation(e));
    });
  // The cluster-wide config (node.config), through a node's admin server.
  addClusterConfigCommands(config, {
    httpOption: () =>
      new Option('--http <url|host:port>', "the node's admin server: http://host:port, host:port, or a port on 127.0.0.1")
        .env('FOUNDATION_HTTP')
        .argParser((v: string) => parseHostPort(v, true, 1, true))
        .makeOptionMandatory(),
    parseTimeout: parseIntRange(1, 600_000),
    out,
    errLine,
  });

  program
    .command('demo')
    .description(`Run a local cluster of child processes on ${DEMO_HOST} until Ctrl-C`)
    .addOption(new Option('--nodes <n>', 'number of nodes').argParser(parseIntRange(1, 32)).default(3))
    .addOption(
      new Option('--base-port <port>', 'first port: meshes use base..base+n-1, admin servers base+n..base+2n-1 (0 = free ports)')
        .argParser(parsePort)
        .default(0),
    )
    .option('--verbose', "show the nodes' info logs")
    .action(async (flags: { nodes: number; basePort: number; verbose?: boolean }) => {
      if (flags.basePort > 0 && flags.basePort + 2 * flags.nodes - 1 > 65535) {
        throw new UsageError(`--base-port ${flags.basePort} leaves no room for ${2 * flags.nodes} ports below 65536`);
      }
      await runDemo(flags, { cliPath: fileURLToPath(import.meta.url), out, errLine, getJson });
      // Every child is gone; do not wait for leftover pipes or timers.
      process.exit(process.exitCode ?? 0);
    });

  return program;
}

/** Runs the CLI with `argv` (default `process.argv`); sets the exit code. */
export async function main(argv: readonly string[] = process.argv): Promise<void> {
  const program = buildProgram();
  try {
    await program.parseAsync([...argv]);
  } catch (err) {
    if (err instanceof CommanderError) {
      // commander already printed the message.
      process.exit(err.exitCode === 0 ? 0 : 2);
    }
    const usage = err instanceof UsageError || (err instanceof FoundationError && err.code === ErrorCodes.CONFIG_INVALID);
    errLine(`foundation: ${err instanceof Error ? err.message : String(err)}`);
    process.exit(usage ? 2 : 1);
  }
}

function isEntryPoint(): boolean {
  const entry = process.argv[1];
  if (!entry) return false;
  try {
    return pathToFileURL(realpathSync(entry)).href === import.meta.url;
  } catch {
    return false;
  }
}

if (isEntryPoint()) void main();
