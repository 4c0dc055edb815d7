/**
 * External tools a test needs (ping, nft, dnsmasq, avahi-browse, promtool, openssl...), checked
 * before the test runs, so that a machine without them skips with the reason printed instead of
 * failing half-way with ENOENT.
 *
 *   const skip = requireTools(['dnsmasq', 'setpriv'], 'dns strategy tests');
 *   describe.skipIf(skip !== undefined)('dns strategy', () => { ... });
 *
 *   it('passes promtool', (ctx) => {
 *     const why = requireTools(['promtool'], 'promtool check');
 *     if (why) return ctx.skip(why);
 *     ...
 *   });
 *
 * `requireBuild(what)` does the same for tests that run `dist/`.
 *
 * A missing tool is a skip (printed to stderr, with the Debian package that provides it) on a
 * developer machine, and a failure (the call throws) where the tools are required:
 * FOUNDATION_REQUIRE_NETNS=1, which `.ci/run` sets after installing them. A tool the CI machine
 * cannot get (today: promtool, only when Debian stops shipping prometheus) is listed by `.ci/run`
 * in FOUNDATION_OPTIONAL_TOOLS (comma or space separated) and skips even there.
 */
import { accessSync, constants, existsSync } from 'node:fs';
import { delimiter, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** Debian package that provides each tool the tests use (for the skip message). */
const PACKAGES: Record<string, string> = {
  ip: 'iproute2',
  iptables: 'iptables',
  'iptables-restore': 'iptables',
  nft: 'nftables',
  ping: 'iputils-ping',
  sysctl: 'procps',
  unshare: 'util-linux',
  setpriv: 'util-linux',
  taskset: 'util-linux',
  'nats-server': 'nats-server',
  'redis-server': 'redis-server',
  dnsmasq: 'dnsmasq-base',
  'avahi-daemon': 'avahi-daemon',
  'avahi-browse': 'avahi-utils',
  'avahi-publish': 'avahi-utils',
  'dbus-daemon': 'dbus',
  promtool: 'prometheus',
  openssl: 'openssl',
};

/** Directories searched after PATH: sbin is often missing from a non-root PATH. */
const EXTRA_DIRS = ['/usr/local/sbin', '/usr/local/bin', '/usr/sbin', '/usr/bin', '/sbin', '/bin'];

const found = new Map<string, string | undefined>();

/** Absolute path of an executable `name` on PATH (or in the sbin/bin directories), or undefined. */
export function findTool(name: string): string | undefined {
  if (found.has(name)) return found.get(name);
  let path: string | undefined;
  for (const dir of [...(process.env.PATH ?? '').split(delimiter), ...EXTRA_DIRS]) {
    if (!dir) continue;
    try {
      accessSync(join(dir, name), constants.X_OK);
      path = join(dir, name);
      break;
    } catch {}
  }
  found.set(name, path);
  return path;
}

/** The tools of `tools` that are not installed, in the given order. */
export function missingTools(tools: readonly string[]): string[] {
  return tools.filter((t) => findTool(t) === undefined);
}

/** True when FOUNDATION_REQUIRE_NETNS=1 (set by `.ci/run`): missing tools and namespaces fail instead of skipping. */
export function toolsRequired(): boolean {
  return process.env.FOUNDATION_REQUIRE_NETNS === '1';
}

/** Tools `.ci/run` could not install (FOUNDATION_OPTIONAL_TOOLS): these skip even when tools are required. */
export function optionalTools(): Set<string> {
  return new Set((process.env.FOUNDATION_OPTIONAL_TOOLS ?? '').split(/[\s,]+/).filter(Boolean));
}

/** `ping (apt-get install iputils-ping), ip (apt-get install iproute2)` */
export function describeMissing(missing: readonly string[]): string {
  return missing.map((t) => (PACKAGES[t] ? `${t} (apt-get install ${PACKAGES[t]})` : t)).join(', ');
}

/** Why a skip message is printed only once per process and subject. */
const printed = new Set<string>();

/**
 * Checks that every tool of `tools` is installed. Returns undefined when they all are; otherwise
 * prints `!!! SKIPPING <what>: ...` to stderr (once per `what`) and returns that reason, for
 * `describe.skipIf(reason !== undefined)` or `ctx.skip(reason)`. When tools are required
 * (FOUNDATION_REQUIRE_NETNS=1) and a missing tool is not in FOUNDATION_OPTIONAL_TOOLS, it throws
 * instead: at the top of a test file that fails the file, inside a test it fails the test.
 */
export function requireTools(tools: readonly string[], what: string): string | undefined {
  const missing = missingTools(tools);
  if (missing.length === 0) return undefined;
  const reason = `needs ${describeMissing(missing)}, not installed`;
  if (toolsRequired()) {
    const optional = optionalTools();
    const mandatory = missing.filter((t) => !optional.has(t));
    if (mandatory.length > 0) {
      throw new Error(
        `${what} ${reason}; FOUNDATION_REQUIRE_NETNS=1 makes a missing tool a failure (list it in FOUNDATION_OPTIONAL_TOOLS if this machine cannot have it)`,
      );
    }
  }
  const key = `${what}\0${missing.join(',')}`;
  if (!printed.has(key)) {
    printed.add(key);
    process.stderr.write(`\n!!! SKIPPING ${what}: ${reason}\n`);
  }
  return reason;
}

/** The build that multi-process tests run (`npm test` and `npm run test:unit` build it first). */
const DIST_ENTRY = fileURLToPath(new URL('../../dist/foundation.js', import.meta.url));

/**
 * For a test that runs `dist/` (child processes, the CLI): undefined when it is built; otherwise
 * prints `!!! SKIPPING <what>: dist/ is not built ...` and returns that reason (or throws when
 * FOUNDATION_REQUIRE_NETNS=1), like `requireTools`. Only a bare `npx vitest run <file>` can get
 * here: the npm scripts build first.
 */
export function requireBuild(what: string): string | undefined {
  if (existsSync(DIST_ENTRY)) return undefined;
  const reason = 'dist/ is not built (run npm run build; npm test and npm run test:unit build first)';
  if (toolsRequired()) throw new Error(`${what}: ${reason}`);
  const key = `${what}\0dist`;
  if (!printed.has(key)) {
    printed.add(key);
    process.stderr.write(`\n!!! SKIPPING ${what}: ${reason}\n`);
  }
  return reason;
}
