/**
 * The member table: who is up, suspect or down, since when, and why. It turns link and
 * detector facts into the node-up/node-down events the rest of Foundation builds on.
 */
import { EventEmitter } from 'node:events';
import { publish, TelemetryChannels } from '../util/telemetry.js';
import type { DownReason, Member, NodeIdentity } from './types.js';

export interface MembershipEvents {
  up: [member: Member];
  down: [member: Member, reason: DownReason];
  suspect: [member: Member];
  alive: [member: Member];
}

/** Down members are kept this long (ms) so tools can show them, then forgotten. */
const FORGET_DOWN_AFTER_MS = 5 * 60_000;

export class Membership extends EventEmitter<MembershipEvents> {
  private readonly table = new Map<string, Member>();

  constructor(readonly self: NodeIdentity) {
    super();
  }

  get(name: string): Member | undefined {
    return this.table.get(name);
  }

  list(opts: { includeHidden?: boolean; includeDown?: boolean } = {}): Member[] {
    const now = Date.now();
    const out: Member[] = [];
    for (const [name, m] of this.table) {
      if (m.status === 'down' && now - m.since > FORGET_DOWN_AFTER_MS) {
        this.table.delete(name);
        continue;
      }
      if (m.hidden && !opts.includeHidden) continue;
      if (m.status === 'down' && !opts.includeDown) continue;
      out.push({ ...m });
    }
    return out.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  /** Up members' names, excluding hidden nodes. */
  upNames(): string[] {
    const out: string[] = [];
    for (const m of this.table.values()) if (m.status !== 'down' && !m.hidden) out.push(m.name);
    return out;
  }

  markUp(id: NodeIdentity, hidden: boolean): Member {
    const m: Member = { name: id.name, address: id.address, incarnation: id.incarnation, status: 'up', rttMs: null, loopLagMs: 0, hidden, since: Date.now() };
    this.table.set(id.name, m);
    publish(TelemetryChannels.memberUp, { node: this.self.name, member: { ...m } });
    this.emit('up', { ...m });
    return m;
  }

  markDown(name: string, reason: DownReason): void {
    const m = this.table.get(name);
    if (!m || m.status === 'down') return;
    m.status = 'down';
    m.since = Date.now();
    m.rttMs = null;
    publish(TelemetryChannels.memberDown, { node: this.self.name, member: { ...m }, reason });
    this.emit('down', { ...m }, reason);
  }

  markSuspect(name: string, phi: number): void {
    const m = this.table.get(name);
    if (m?.status !== 'up') return;
    m.status = 'suspect';
    m.since = Date.now();
    publish(TelemetryChannels.memberSuspect, { node: this.self.name, member: { ...m }, phi });
    this.emit('suspect', { ...m });
  }

  markAlive(name: string): void {
    const m = this.table.get(name);
    if (m?.status !== 'suspect') return;
    m.status = 'up';
    m.since = Date.now();
    publish(TelemetryChannels.memberAlive, { node: this.self.name, member: { ...m } });
    this.emit('alive', { ...m });
  }

  updateStats(name: string, rttMs: number | null, loopLagMs: number): void {
    const m = this.table.get(name);
    if (!m || m.status === 'down') return;
    if (rttMs !== null) m.rttMs = rttMs;
    m.loopLagMs = loopLagMs;
  }
}
