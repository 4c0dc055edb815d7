// Top functions of a V8 .cpuprofile (from `node bench/mesh.mjs --cpu-prof`), by self time and
// by inclusive time.   node bench/lib/profile-top.mjs FILE.cpuprofile [N=25]
import { readFileSync } from 'node:fs';
import { relative } from 'node:path';

const [file, nArg] = process.argv.slice(2);
if (!file) {
  console.error('usage: node bench/lib/profile-top.mjs FILE.cpuprofile [N]');
  process.exit(2);
}
const N = Number(nArg ?? 25);
const prof = JSON.parse(readFileSync(file, 'utf8'));
const byId = new Map(prof.nodes.map((n) => [n.id, n]));
const parent = new Map();
for (const n of prof.nodes) for (const c of n.children ?? []) parent.set(c, n.id);

// Sample counts per node, weighted by the time deltas.
const selfUs = new Map();
for (let i = 0; i < prof.samples.length; i++) {
  const id = prof.samples[i];
  selfUs.set(id, (selfUs.get(id) ?? 0) + (prof.timeDeltas[i] ?? 0));
}
const total = [...selfUs.values()].reduce((a, b) => a + b, 0);

const label = (n) => {
  const f = n.callFrame;
  const url = f.url ? relative(process.cwd(), f.url.replace(/^file:\/\//, '')) : '';
  return `${f.functionName || '(anonymous)'} ${url ? `${url}:${f.lineNumber + 1}` : ''}`.trim();
};

const self = new Map();
const incl = new Map();
for (const [id, us] of selfUs) {
  const n = byId.get(id);
  const key = label(n);
  self.set(key, (self.get(key) ?? 0) + us);
  // Inclusive: once per distinct function on the stack.
  const seen = new Set();
  for (let cur = id; cur !== undefined; cur = parent.get(cur)) {
    const k = label(byId.get(cur));
    if (seen.has(k)) continue;
    seen.add(k);
    incl.set(k, (incl.get(k) ?? 0) + us);
  }
}

const pct = (us) => `${((us / total) * 100).toFixed(1).padStart(5)}%`;
const top = (m) =>
  [...m]
    .sort((a, b) => b[1] - a[1])
    .slice(0, N)
    .map(([k, us]) => `${pct(us)}  ${(us / 1000).toFixed(0).padStart(7)} ms  ${k}`)
    .join('\n');
console.log(`${file}: ${(total / 1e6).toFixed(2)} s sampled\n\nself time:\n${top(self)}\n\ninclusive time:\n${top(incl)}`);
