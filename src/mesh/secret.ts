import { randomBytes } from 'node:crypto';
import { chmodSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { ConfigError, SecretRequiredError } from '../errors.js';

/** Where the development cookie lives, like Erlang's ~/.erlang.cookie. */
export function defaultCookiePath(): string {
  return process.env.FOUNDATION_COOKIE_FILE ?? join(homedir(), '.foundation-cookie');
}

export interface ResolvedSecret {
  /** The key material used by the handshake; empty when insecure. */
  secret: Buffer;
  source: 'option' | 'cookie-file' | 'insecure';
  /** A warning to log, if any. */
  warning?: string;
}

/**
 * Fewest bytes of a secret without a warning. The handshake lets a peer test guesses offline, so
 * only entropy protects the secret: 32 random bytes (256 bits), as docs/guides/security.md says.
 */
export const MIN_SECRET_BYTES = 32;

/**
 * Decides which shared secret authenticates links.
 * - An explicit secret always wins.
 * - In production (NODE_ENV=production) no secret is an error unless `insecure`.
 * - In development a per-user cookie file is created once (mode 0600) and reused,
 *   so every node a user starts on this machine shares it, and a warning says so. With
 *   `createCookie: false` (for `config explain`) a missing cookie file is not created: the secret
 *   is then empty and the warning says the file would be created.
 */
export function resolveSecret(opts: {
  secret?: string | Uint8Array;
  insecure?: boolean;
  cookieFile?: string;
  env?: string;
  createCookie?: boolean;
}): ResolvedSecret {
  if (opts.secret !== undefined && opts.secret.length > 0) {
    const secret = Buffer.from(opts.secret as string);
    // The handshake lets a peer test guesses offline, as Erlang's cookie does: only entropy protects it.
    const warning =
      secret.length < MIN_SECRET_BYTES
        ? `the secret is only ${secret.length} bytes: use at least ${MIN_SECRET_BYTES} random bytes (a short secret can be guessed offline)`
        : undefined;
    return warning ? { secret, source: 'option', warning } : { secret, source: 'option' };
  }
  if (opts.insecure) {
    return {
      secret: Buffer.alloc(0),
      source: 'insecure',
      warning: 'insecure: true: links are NOT authenticated; any process that can reach the port can join',
    };
  }
  if ((opts.env ?? process.env.NODE_ENV) === 'production') throw new SecretRequiredError();
  const file = opts.cookieFile ?? defaultCookiePath();
  try {
    const existing = readFileSync(file, 'utf8').trim();
    if (existing.length === 0) throw new ConfigError('cookieFile', `${file} is empty: delete it to have a new cookie generated, or write a secret into it`);
    const mode = statSync(file).mode & 0o077;
    const loose = mode !== 0 ? ` (warning: ${file} is readable by other users; chmod 600 it)` : '';
    return {
      secret: Buffer.from(existing),
      source: 'cookie-file',
      warning: `no secret configured: using the development cookie in ${file} (set \`secret\` or FOUNDATION_SECRET in production)${loose}`,
    };
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  if (opts.createCookie === false) {
    return {
      secret: Buffer.alloc(0),
      source: 'cookie-file',
      warning: `no secret configured: start would create a development cookie in ${file} (set \`secret\` or FOUNDATION_SECRET in production)`,
    };
  }
  const cookie = randomBytes(32).toString('base64url');
  mkdirSync(dirname(file), { recursive: true });
  // 'wx' makes two nodes starting at once agree: the loser reads the winner's file.
  try {
    writeFileSync(file, `${cookie}\n`, { mode: 0o600, flag: 'wx' });
    chmodSync(file, 0o600);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    return resolveSecret(opts);
  }
  return {
    secret: Buffer.from(cookie),
    source: 'cookie-file',
    warning: `no secret configured: created a development cookie in ${file} (set \`secret\` or FOUNDATION_SECRET in production)`,
  };
}
