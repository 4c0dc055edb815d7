/**
 * The redaction rule of the admin surfaces (`GET /config`, `foundation config get`): a value is
 * replaced by {@link REDACTED} when any segment of its path, or any key on the way to it inside
 * an object value, matches {@link SECRET_KEY} (`secret`, `password`, `token` or `key`, in any
 * case, anywhere in the segment: `db.password`, `apiKey`, `auth.tokens.github`,
 * `{ stripe: { secretKey } }`). The rule errs on the side of hiding (`monkey` matches too). The
 * API itself (`config.get`) never redacts.
 */

/** What a segment must match to be hidden. */
export const SECRET_KEY = /secret|password|passwd|token|key/i;
/** What a hidden value is shown as. */
export const REDACTED = '[redacted]';

/** True when some segment of the dotted `path` names a secret. */
export function isSecretPath(path: string): boolean {
  return path.split('.').some((seg) => SECRET_KEY.test(seg));
}

/** `value` with every property whose key names a secret replaced, at any depth (arrays, Maps and plain objects). */
export function redactValue(value: unknown, depth = 0): unknown {
  if (depth > 64 || typeof value !== 'object' || value === null) return value;
  if (Array.isArray(value)) return value.map((v) => redactValue(v, depth + 1));
  if (value instanceof Map) {
    return new Map([...value].map(([k, v]) => [k, typeof k === 'string' && SECRET_KEY.test(k) ? REDACTED : redactValue(v, depth + 1)]));
  }
  if (Object.getPrototypeOf(value) !== Object.prototype) return value;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) out[k] = SECRET_KEY.test(k) ? REDACTED : redactValue(v, depth + 1);
  return out;
}

/** The value at `path`, redacted by the rule above. */
export function redactAt(path: string, value: unknown): unknown {
  return isSecretPath(path) ? REDACTED : redactValue(value);
}
