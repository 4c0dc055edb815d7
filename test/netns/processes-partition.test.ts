/**
 * Singletons across hosts (network namespaces), partition 2|1 (iptables, test/helpers/netns.ts):
 * - `'available'`: each side runs one during the partition; within 2 s of the heal exactly one
 *   remains, and the other stopped with `name_conflict`;
 * - `'quorum'`: only the majority side ever runs it, and fencing tokens only increase.
 */
import { fileURLToPath } from 'node:url';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { isDown, type NodeEvent, type NodeProc } from '../helpers/cluster.js';
import { startLabCluster } from '../helpers/lab-cluster.js';
import { createHosts, type NetLab, netnsGate } from '../helpers/netns.js';

const PROC = fileURLToPath(new URL('../helpers/processes-proc.mjs', import.meta.url));
const gate = netnsGate({ what: 'processes partition tests (network namespaces)' });
const PORT = 7420;

type ProcEvent = { type: string; name: string; reason?: string; fencingToken?: number };
const procEvent = (e: NodeEvent) => (e.event === 'proc' ? (e.e as ProcEvent) : undefined);
const started = (name: string) => (e: NodeEvent) => procEvent(e)?.type === 'started' && procEvent(e)?.name === name;

async function ask(p: NodeProc, cmd: Record<string, unknown>, event: string, timeoutMs = 10_000): Promise<NodeEvent> {
  const next = p.waitForNext((e) => e.event === event || e.event === 'command-error', timeoutMs, event);
  p.send(cmd);
  const e = await next;
  if (e.event === 'command-error') throw new Error(`${p.label}: ${cmd.cmd} failed: ${e.message}`);
  return e;
}

const runs = async (p: NodeProc, name: string) => ((await ask(p, { cmd: 'running' }, 'running')).local as string[]).includes(name);

async function hostsOf(procs: NodeProc[], name: string): Promise<NodeProc[]> {
  const out: NodeProc[] = [];
  for (const p of procs) if (await runs(p, name)) out.push(p);
  return out;
}

async function until(what: string, timeoutMs: number, pred: () => Promise<boolean>): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await pred())) {
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe.skipIf(gate.skip)('singletons across hosts (network namespaces)', () => {
  let lab: NetLab;
  const procs: NodeProc[] = [];

  beforeAll(async () => {
    lab = await createHosts(3);
    procs.push(
      ...(await startLabCluster(lab, { script: PROC, port: PORT, secret: 'lab-processes-secret-0123456789abcdef', env: { FOUNDATION_LOG_LEVEL: 'warn' } })),
    );
  });

  afterAll(async () => {
    await lab?.teardown();
  });

  // A test that fails half-way must not leave its partition to the next one.
  afterEach(async () => {
    await lab?.healAll();
  });

  /** Partitions the host that runs `name` away from the two others; returns [minority, majority...]. */
  async function isolate(hostProc: NodeProc): Promise<{ minority: NodeProc; majority: NodeProc[] }> {
    const i = procs.indexOf(hostProc);
    const majority = procs.filter((p) => p !== hostProc);
    await new Promise((r) => setTimeout(r, 600)); // heartbeat history
    const downs = majority.map((p) => p.waitForNext(isDown(hostProc.label), 8000, `${hostProc.label} down on ${p.label}`));
    await lab.partition(lab.hosts[i] as never);
    await Promise.all(downs);
    return { minority: hostProc, majority };
  }

  it("'available': each side runs one during a 2|1 partition; within 2 s of the heal exactly one remains, the other got name_conflict", async () => {
    for (const p of procs) await ask(p, { cmd: 'singleton', name: 'sched' }, 'declared');
    await until('one host runs sched', 10_000, async () => (await hostsOf(procs, 'sched')).length === 1);
    const [host] = await hostsOf(procs, 'sched');
    const { minority, majority } = await isolate(host as NodeProc);
    // The majority side starts its own; the minority keeps its own. Asked, not awaited as an
    // event: the majority member that saw the partition first may start it before the other one
    // has seen it too, so before isolate() returns.
    await until('sched on the majority side', 5000, async () => (await hostsOf(majority, 'sched')).length === 1);
    expect(await runs(minority, 'sched')).toBe(true);
    expect((await hostsOf(majority, 'sched')).length).toBe(1);
    const conflict = Promise.race(
      procs.map((p) => p.waitForNext((e) => procEvent(e)?.type === 'conflict' && procEvent(e)?.name === 'sched', 10_000, 'name_conflict')),
    );
    const healAt = Date.now();
    await lab.heal(lab.hosts[procs.indexOf(minority)] as never);
    await conflict;
    // Converged: one node runs it, and every host's registry names that node.
    let survivor: NodeProc | undefined;
    await until('exactly one sched after the heal, named alike on every host', 5000, async () => {
      const hosts = await hostsOf(procs, 'sched');
      if (hosts.length !== 1) return false;
      survivor = hosts[0];
      for (const p of procs) {
        const owner = (await ask(p, { cmd: 'lookup', name: 'sched' }, 'lookup')).owner as { node: string } | null;
        if (owner?.node !== survivor?.label) return false;
      }
      return true;
    });
    console.log(`[processes] available singleton: one instance, agreed everywhere, ${Date.now() - healAt} ms after the heal`);
    expect(Date.now() - healAt).toBeLessThan(2000 + 500); // the poll above adds up to one round of questions
    const loser = procs.find((p) => p.events.some((e) => e.at >= healAt && procEvent(e)?.type === 'stopped' && procEvent(e)?.reason === 'name_conflict'));
    expect(loser, 'one node stopped its instance with name_conflict').toBeDefined();
    // And it stays so.
    await new Promise((r) => setTimeout(r, 500));
    expect((await hostsOf(procs, 'sched')).map((p) => p.label)).toEqual([survivor?.label]);
  });

  it("'quorum': only the majority side runs it during a 2|1 partition, and fencing tokens only increase", async () => {
    const leaseMs = 1000;
    for (const p of procs) await ask(p, { cmd: 'singleton', name: 'ledger', consistency: 'quorum', clusterSize: 3, leaseMs }, 'declared');
    await until('one holder runs ledger', 10_000, async () => (await hostsOf(procs, 'ledger')).length === 1);
    const [host] = await hostsOf(procs, 'ledger');
    const first = (await ask(host as NodeProc, { cmd: 'call', id: 1, name: 'ledger', msg: 'get', timeoutMs: 3000 }, 'reply')).value as { token: number };
    const { minority, majority } = await isolate(host as NodeProc);
    // The isolated holder cannot renew with a majority: it stops within its lease; the majority takes over.
    await minority.waitFor(
      (e) => procEvent(e)?.type === 'stopped' && procEvent(e)?.name === 'ledger' && procEvent(e)?.reason === 'lost_quorum',
      leaseMs + 3000,
      'lost_quorum',
    );
    await until('the majority runs ledger', 10_000, async () => (await hostsOf(majority, 'ledger')).length === 1);
    const [newHost] = await hostsOf(majority, 'ledger');
    const second = (await ask(newHost as NodeProc, { cmd: 'call', id: 2, name: 'ledger', msg: 'get', timeoutMs: 3000 }, 'reply')).value as { token: number };
    expect(second.token).toBeGreaterThan(first.token);
    // For the rest of the partition the minority never starts it.
    await new Promise((r) => setTimeout(r, 2 * leaseMs));
    expect(await runs(minority, 'ledger')).toBe(false);
    const minorityStarts = minority.events.filter((e) => started('ledger')(e));
    expect(minorityStarts.length, 'the minority started it once (before the partition), never during it').toBeLessThanOrEqual(1);
    await lab.heal(lab.hosts[procs.indexOf(minority)] as never);
    await new Promise((r) => setTimeout(r, 2 * leaseMs));
    const holders = await hostsOf(procs, 'ledger');
    expect(holders).toHaveLength(1);
    const third = (await ask(holders[0] as NodeProc, { cmd: 'call', id: 3, name: 'ledger', msg: 'get', timeoutMs: 3000 }, 'reply')).value as { token: number };
    expect(third.token).toBeGreaterThanOrEqual(second.token);
    // The tokens of every activation, in the order they started, only increase.
    const tokens = procs
      .flatMap((p) => p.events.filter((e) => started('ledger')(e)).map((e) => ({ at: e.at, token: procEvent(e)?.fencingToken as number })))
      .sort((a, b) => a.at - b.at)
      .map((s) => s.token);
    expect(tokens.length).toBeGreaterThanOrEqual(2);
    for (let i = 1; i < tokens.length; i++) expect(tokens[i] as number, `activation ${i}`).toBeGreaterThan(tokens[i - 1] as number);
  });
});
