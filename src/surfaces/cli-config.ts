/**
 * `foundation config get|set`: the cluster-wide config (`node.config`) through one node's admin
 * server (`/config`, src/surfaces/config-route.ts). Next to `foundation config explain`, which
 * is about start options, not this.
 *
 * - `foundation config get [path] --http <addr>`: one value (redacted), or without a path every
 *   value, the version, and the transactions in doubt.
 * - `foundation config set <path> <value> --http <addr>`: a cluster-wide set (two-phase commit);
 *   prints each node's vote. `<value>` is JSON (`5`, `true`, `"text"`, `{"a":1}`); anything that
 *   does not parse as JSON is taken as a string. Exit code 1 when it aborted or is in doubt.
 */
import { request } from 'node:http';
import { type Command, Option } from 'commander';
import type { ConfigVote } from '../errors.js';
import type { ConfigJson } from './config-route.js';

/** What the `config` subcommands need from the CLI around them. */
export interface ConfigCliContext {
  /** A fresh mandatory `--http <addr>` option, parsed as the other commands parse it. */
  httpOption(): Option;
  /** Parses `--timeout`. */
  parseTimeout(v: string): number;
  out(line: string): void;
  errLine(line: string): void;
}

interface HttpAddress {
  host?: string | undefined;
  port: number;
}

function requestJson(http: HttpAddress, method: 'GET' | 'POST', path: string, body: unknown, timeoutMs: number): Promise<{ status: number; body: unknown }> {
  const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body), 'utf8');
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: http.host ?? '127.0.0.1',
        port: http.port,
        path,
        method,
        agent: false,
        timeout: timeoutMs,
        headers: { accept: 'application/json', ...(payload ? { 'content-type': 'application/json', 'content-length': String(payload.length) } : {}) },
      },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => {
          text += c;
        });
        res.on('end', () => {
          try {
            resolve({ status: res.statusCode ?? 0, body: JSON.parse(text) });
          } catch {
            reject(new Error(`${path} answered ${res.statusCode} with a body that is not JSON`));
          }
        });
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    req.on('error', (err: NodeJS.ErrnoException) => reject(new Error(err.code ?? err.message)));
    req.end(payload);
  });
}

function addressText(http: HttpAddress): string {
  const host = http.host ?? '127.0.0.1';
  return host.includes(':') ? `[${host}]:${http.port}` : `${host}:${http.port}`;
}

function show(v: unknown): string {
  return v === undefined ? 'undefined' : JSON.stringify(v);
}

function voteRows(votes: readonly ConfigVote[]): string {
  const rows = [
    ['NODE', 'VOTE', 'CODE', 'REASON'],
    ...[...votes].sort((a, b) => a.node.localeCompare(b.node)).map((v) => [v.node, v.vote, v.code ?? '-', v.reason ?? '-']),
  ];
  const widths = rows[0]?.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length))) ?? [];
  return rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i] ?? 0))).join('  ')).join('\n');
}

/** Parses a `config set` value: JSON when it parses, else the text itself. */
export function parseConfigValue(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

/** Adds `get` and `set` under the `config` command. */
export function addClusterConfigCommands(config: Command, ctx: ConfigCliContext): void {
  config
    .command('get')
    .description(
      "Print the cluster-wide config (node.config) as one node's admin server sees it: one path, or every value with the version (GET /config); secrets redacted",
    )
    .argument('[path]', 'dotted path, e.g. db.pool.size (omitted: every value)')
    .addOption(ctx.httpOption())
    .option('--json', 'print the raw JSON of /config')
    .addOption(new Option('--timeout <ms>', 'request timeout').argParser(ctx.parseTimeout).default(3000))
    .action(async (path: string | undefined, flags: { http: HttpAddress; json?: boolean; timeout: number }) => {
      const where = addressText(flags.http);
      let res: { status: number; body: unknown };
      try {
        res = await requestJson(flags.http, 'GET', path === undefined ? '/config' : `/config?path=${encodeURIComponent(path)}`, undefined, flags.timeout);
      } catch (err) {
        ctx.errLine(`foundation: cannot reach the admin server at http://${where} (${(err as Error).message}); is the node running with --http ${where}?`);
        process.exitCode = 1;
        return;
      }
      if (res.status !== 200) {
        ctx.errLine(`foundation: GET /config answered ${res.status}: ${JSON.stringify(res.body)}`);
        process.exitCode = res.status === 400 ? 2 : 1;
        return;
      }
      if (flags.json) {
        ctx.out(JSON.stringify(res.body, null, 2));
        return;
      }
      if (path !== undefined) {
        const b = res.body as { value: unknown; version: number };
        ctx.out(`${path} = ${show(b.value)}  (version ${b.version})`);
        return;
      }
      const b = res.body as ConfigJson;
      const entries = Object.entries(b.values);
      ctx.out(`node ${b.node}: cluster config version ${b.version}${b.synced ? '' : ' (not fetched from a peer yet)'}, ${entries.length} value(s)`);
      for (const [p, v] of entries) ctx.out(`  ${p} = ${show(v)}${b.overrides.some((o) => o === p || p.startsWith(`${o}.`)) ? '  (local override)' : ''}`);
      for (const d of b.inDoubt) {
        ctx.out(`in doubt: ${d.tx} (coordinator ${d.coordinator}, paths ${d.paths.join(', ')}), waiting for ${d.waitingFor.join(', ') || 'the coordinator'}`);
      }
    });

  config
    .command('set')
    .description('Set a path on every node by a two-phase commit (every node validates and may veto); prints each node vote (POST /config)')
    .argument('<path>', 'dotted path, e.g. db.pool.size')
    .argument('<value>', 'JSON (5, true, "text", {"a":1}); anything that is not JSON is a string')
    .addOption(ctx.httpOption())
    .addOption(new Option('--timeout <ms>', 'how long the transaction may take (votes, retries)').argParser(ctx.parseTimeout).default(5000))
    .option('--json', 'print the raw JSON answer')
    .action(async (path: string, valueText: string, flags: { http: HttpAddress; json?: boolean; timeout: number }) => {
      const where = addressText(flags.http);
      let res: { status: number; body: unknown };
      try {
        res = await requestJson(flags.http, 'POST', '/config', { path, value: parseConfigValue(valueText), timeoutMs: flags.timeout }, flags.timeout + 5000);
      } catch (err) {
        ctx.errLine(`foundation: cannot reach the admin server at http://${where} (${(err as Error).message}); is the node running with --http ${where}?`);
        process.exitCode = 1;
        return;
      }
      const b = res.body as {
        committed?: boolean;
        version?: number;
        tx?: string;
        votes?: ConfigVote[];
        acked?: string[];
        code?: string;
        message?: string;
        error?: string;
      };
      if (flags.json) ctx.out(JSON.stringify(b, null, 2));
      if (res.status === 200 && b.committed) {
        if (!flags.json) {
          ctx.out(`committed ${path} = ${show(parseConfigValue(valueText))}: version ${b.version}, transaction ${b.tx}`);
          ctx.out(voteRows(b.votes ?? []));
        }
        return;
      }
      if (res.status === 409) {
        if (!flags.json) {
          ctx.errLine(`foundation: not committed (${b.code}): ${b.message}`);
          ctx.out(voteRows(b.votes ?? []));
        }
        process.exitCode = 1;
        return;
      }
      ctx.errLine(`foundation: POST /config answered ${res.status}: ${b.error ?? b.message ?? JSON.stringify(b)}`);
      process.exitCode = res.status === 400 ? 2 : 1;
    });
}
