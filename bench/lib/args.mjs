// Command-line options of the benches, parsed by node:util's parseArgs: each bench declares its
// options once (type, default) and keeps its own range checks.
import { parseArgs } from 'node:util';

/**
 * Parses `argv` against `spec`: option name (kebab-case, without the dashes) → `{ type, default,
 * short? }`, where `type` is `number`, `string`, `boolean`, `list` (comma-separated strings) or
 * `numbers` (comma-separated numbers). Returns the values under camelCase keys (`--runs-large` →
 * `runsLarge`; `key` names another), defaults filled in. `-h`/`--help` prints `usage` and exits; an unknown option, a
 * missing value or a stray argument throws.
 */
export function benchArgs(argv, usage, spec) {
  const options = { help: { type: 'boolean', short: 'h' } };
  for (const [name, o] of Object.entries(spec)) options[name] = { type: o.type === 'boolean' ? 'boolean' : 'string', ...(o.short ? { short: o.short } : {}) };
  let values;
  try {
    ({ values } = parseArgs({ args: argv, options, strict: true, allowPositionals: false }));
  } catch (err) {
    throw new Error(`${err.message}\n${usage}`);
  }
  if (values.help) {
    console.log(usage);
    process.exit(0);
  }
  const out = {};
  for (const [name, o] of Object.entries(spec)) {
    const key = o.key ?? name.replace(/-([a-z])/g, (_, c) => c.toUpperCase());
    const raw = values[name];
    if (raw === undefined) out[key] = o.default;
    else if (o.type === 'boolean') out[key] = raw;
    else if (o.type === 'number') out[key] = Number(raw);
    else if (o.type === 'list') out[key] = splitList(raw);
    else if (o.type === 'numbers') out[key] = splitList(raw).map(Number);
    else out[key] = raw;
  }
  return out;
}

const splitList = (s) =>
  s
    .split(',')
    .map((x) => x.trim())
    .filter(Boolean);
