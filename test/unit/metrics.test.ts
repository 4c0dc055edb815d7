import { spawnSync } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { describe, expect, it } from 'vitest';
import type { ClusterEvents, ClusterView, LaneCounters, LocalHealth, MeshMessaging, MeshStats } from '../../src/api.js';
import type { Member, NodeIdentity } from '../../src/mesh/types.js';
import { createMetrics, type MetricsNode } from '../../src/surfaces/metrics.js';
import { findTool, requireTools } from '../helpers/requires.js';

function lane(n: number): LaneCounters {
  return {
    messagesSent: n,
    bytesSent: n * 100,
    messagesReceived: n * 2,
    bytesReceived: n * 200,
    dropped: n === 3 ? 7 : 0,
    lost: n === 4 ? 4 : 0,
    possiblyLost: n === 2 ? 1 : 0,
    queuedBytes: n * 10,
  };
}

function fakeStats(): MeshStats {
  return {
    lanes: { control: lane(1), events: lane(2), telemetry: lane(3), bulk: lane(4) },
    handshakeFailures: { 'bad-secret': 2, timeout: 1 },
    framesRejected: 3,
    // A plain total (what the mesh reported before it counted drops per reason): reason="unknown".
    // Cast so that this fake compiles whichever of the two shapes MeshStats declares.
    heartbeatPacketsDropped: 4 as unknown as MeshStats['heartbeatPacketsDropped'],
    // Absent, as from a mesh that counts no reasons: the total above is reported under reason="unknown".
    heartbeatPacketsDroppedByReason: undefined as unknown as MeshStats['heartbeatPacketsDroppedByReason'],
    memberEvents: {
      up: 5,
      down: {
        'connection-closed': 1,
        'heartbeat-timeout': 2,
        left: 0,
        superseded: 0,
        disconnected: 0,
        'protocol-error': 0,
      },
    },
    linksOpened: 6,
    linksClosed: 2,
    linksReplaced: 1,
    largeBodies: { reused: 9, allocated: 2, pooledBytes: 3 * 1024 * 1024 },
  };
}

const self: NodeIdentity = { name: 'node-a', address: '127.0.0.1:4001', incarnation: 1_723_456_789_012_345 };

const members: Member[] = [
  { name: 'node-b', address: '127.0.0.1:4002', incarnation: 2, status: 'up', rttMs: 1.5, loopLagMs: 12, hidden: false, since: 1 },
  { name: 'node-c', address: '127.0.0.1:4003', incarnation: 3, status: 'suspect', rttMs: null, loopLagMs: 250, hidden: false, since: 2 },
  { name: 'node-d', address: '127.0.0.1:4004', incarnation: 4, status: 'down', rttMs: 9, loopLagMs: 1, hidden: false, since: 3 },
];

function fakeNode(stats: () => MeshStats = fakeStats): MetricsNode {
  const cluster = Object.assign(new EventEmitter<ClusterEvents>(), {
    self,
    members: (opts?: { includeDown?: boolean }) => (opts?.includeDown ? members : members.filter((m) => m.status !== 'down')),
    member: (name: string) => members.find((m) => m.name === name),
    isReady: () => true,
  }) satisfies ClusterView;
  const mesh: MeshMessaging = {
    send: () => true,
    request: async () => {
      throw new Error('not in this fake');
    },
    handle: () => () => {},
    drained: async () => {},
    stats,
  };
  const health = (): LocalHealth => ({ status: 'degraded', loopLag: { p50Ms: 2, p99Ms: 150, maxMs: 400 } });
  return { id: self, cluster, mesh, health };
}

async function metricValue(registry: ReturnType<typeof createMetrics>, name: string, labels: Record<string, string> = {}) {
  const metric = registry.getSingleMetric(name);
  if (!metric) throw new Error(`metric ${name} is not registered`);
  const { values, type } = await metric.get();
  const found = values.find((v) => Object.entries(labels).every(([k, l]) => String(v.labels[k]) === l));
  return { type, value: found?.value };
}

describe('createMetrics', () => {
  it('uses a fresh registry per node, never the global one', async () => {
    const { register: globalRegistry } = await import('prom-client');
    const a = createMetrics(fakeNode());
    const b = createMetrics(fakeNode());
    expect(a).not.toBe(b);
    expect(a).not.toBe(globalRegistry);
    expect(globalRegistry.getSingleMetric('foundation_members')).toBeUndefined();
    expect(await a.metrics()).toContain('foundation_process_');
  });

  it('reports node info, membership and loop lag', async () => {
    const r = createMetrics(fakeNode(), { processMetrics: false });
    expect(await metricValue(r, 'foundation_node_info', { name: 'node-a', address: '127.0.0.1:4001', incarnation: '1723456789012345' })).toEqual({
      type: 'gauge',
      value: 1,
    });
    expect((await metricValue(r, 'foundation_members', { status: 'up' })).value).toBe(1);
    expect((await metricValue(r, 'foundation_members', { status: 'suspect' })).value).toBe(1);
    expect((await metricValue(r, 'foundation_members', { status: 'down' })).value).toBe(1);
    expect((await metricValue(r, 'foundation_member_rtt_seconds', { peer: 'node-b' })).value).toBeCloseTo(0.0015);
    // No RTT measured yet, and down members are not reported per peer.
    expect((await metricValue(r, 'foundation_member_rtt_seconds', { peer: 'node-c' })).value).toBeUndefined();
    expect((await metricValue(r, 'foundation_member_rtt_seconds', { peer: 'node-d' })).value).toBeUndefined();
    expect((await metricValue(r, 'foundation_member_loop_lag_seconds', { peer: 'node-c' })).value).toBeCloseTo(0.25);
    expect((await metricValue(r, 'foundation_event_loop_lag_p50_seconds')).value).toBeCloseTo(0.002);
    expect((await metricValue(r, 'foundation_event_loop_lag_p99_seconds')).value).toBeCloseTo(0.15);
    expect((await metricValue(r, 'foundation_event_loop_lag_max_seconds')).value).toBeCloseTo(0.4);
  });

  it('exposes mesh counters as counters with the absolute values, stable over repeated scrapes', async () => {
    const r = createMetrics(fakeNode(), { processMetrics: false });
    for (let scrape = 0; scrape < 3; scrape++) {
      await r.metrics();
      expect(await metricValue(r, 'foundation_lane_messages_sent_total', { lane: 'events' })).toEqual({ type: 'counter', value: 2 });
      expect((await metricValue(r, 'foundation_lane_bytes_sent_total', { lane: 'bulk' })).value).toBe(400);
      expect((await metricValue(r, 'foundation_lane_messages_received_total', { lane: 'control' })).value).toBe(2);
      expect((await metricValue(r, 'foundation_lane_bytes_received_total', { lane: 'telemetry' })).value).toBe(600);
      expect((await metricValue(r, 'foundation_lane_dropped_total', { lane: 'telemetry' })).value).toBe(7);
      expect((await metricValue(r, 'foundation_lane_dropped_total', { lane: 'control' })).value).toBe(0);
      expect(await metricValue(r, 'foundation_lane_queued_bytes', { lane: 'bulk' })).toEqual({ type: 'gauge', value: 40 });
      expect((await metricValue(r, 'foundation_handshake_failures_total', { reason: 'bad-secret' })).value).toBe(2);
      expect((await metricValue(r, 'foundation_handshake_failures_total', { reason: 'cluster-mismatch' })).value).toBe(0);
      expect((await metricValue(r, 'foundation_frames_rejected_total')).value).toBe(3);
      expect((await metricValue(r, 'foundation_large_message_bodies_total', { source: 'reused' })).value).toBe(9);
      expect((await metricValue(r, 'foundation_large_message_bodies_total', { source: 'allocated' })).value).toBe(2);
      expect(await metricValue(r, 'foundation_large_message_pool_bytes')).toEqual({ type: 'gauge', value: 3 * 1024 * 1024 });
      // The mesh reports one total here: it goes under reason="unknown".
      expect((await metricValue(r, 'foundation_heartbeat_packets_dropped_total', { reason: 'unknown' })).value).toBe(4);
      expect((await metricValue(r, 'foundation_lane_lost_total', { lane: 'bulk' })).value).toBe(4);
      expect((await metricValue(r, 'foundation_lane_possibly_lost_total', { lane: 'events' })).value).toBe(1);
      expect((await metricValue(r, 'foundation_links_replaced_total')).value).toBe(1);
      expect((await metricValue(r, 'foundation_member_up_total')).value).toBe(5);
      expect((await metricValue(r, 'foundation_member_down_total', { reason: 'heartbeat-timeout' })).value).toBe(2);
      expect((await metricValue(r, 'foundation_member_down_total', { reason: 'left' })).value).toBe(0);
      expect((await metricValue(r, 'foundation_links_opened_total')).value).toBe(6);
      expect((await metricValue(r, 'foundation_links_closed_total')).value).toBe(2);
    }
  });

  it('labels heartbeat drops by reason when the mesh counts them per reason', async () => {
    // MeshStats.heartbeatPacketsDropped as a record per reason (what heartbeat.dropped() returns).
    const perReason = { malformed: 0, 'unknown-link': 2, 'bad-mac': 3, replay: 1, reflected: 0, 'peer-down': 0 };
    const r = createMetrics(
      fakeNode(() => ({ ...fakeStats(), heartbeatPacketsDropped: perReason as unknown as MeshStats['heartbeatPacketsDropped'] })),
      { processMetrics: false },
    );
    const text = await r.metrics();
    expect(text).toMatch(/^foundation_heartbeat_packets_dropped_total\{reason="bad-mac"\} 3$/m);
    expect(text).toMatch(/^foundation_heartbeat_packets_dropped_total\{reason="unknown-link"\} 2$/m);
    expect(text).toMatch(/^foundation_heartbeat_packets_dropped_total\{reason="reflected"\} 0$/m);
    expect(text).not.toMatch(/reason="unknown"/);
  });

  it('prefers heartbeatPacketsDroppedByReason when the mesh stats carry it next to the total', async () => {
    const byReason = { malformed: 1, 'unknown-link': 0, 'bad-mac': 0, replay: 0, reflected: 5, 'peer-down': 0 };
    const r = createMetrics(
      fakeNode(() => ({ ...fakeStats(), heartbeatPacketsDroppedByReason: byReason }) as MeshStats),
      { processMetrics: false },
    );
    const text = await r.metrics();
    expect(text).toMatch(/^foundation_heartbeat_packets_dropped_total\{reason="reflected"\} 5$/m);
    expect(text).toMatch(/^foundation_heartbeat_packets_dropped_total\{reason="malformed"\} 1$/m);
    expect(text).not.toMatch(/reason="unknown"/);
  });

  it('follows the mesh counters as they grow', async () => {
    let opened = 1;
    const r = createMetrics(
      fakeNode(() => ({ ...fakeStats(), linksOpened: opened })),
      { processMetrics: false },
    );
    expect(await r.metrics()).toMatch(/^foundation_links_opened_total 1$/m);
    opened = 10;
    await new Promise((resolve) => setImmediate(resolve));
    expect(await r.metrics()).toMatch(/^foundation_links_opened_total 10$/m);
  });

  it('keeps serving the last values when the node cannot be read', async () => {
    let broken = false;
    const r = createMetrics(
      fakeNode(() => {
        if (broken) throw new Error('stopped');
        return fakeStats();
      }),
      { processMetrics: false },
    );
    await r.metrics();
    broken = true;
    await new Promise((resolve) => setImmediate(resolve));
    expect(await r.metrics()).toMatch(/^foundation_links_opened_total 6$/m);
  });

  it('prints valid Prometheus text (promtool check metrics)', async (ctx) => {
    const why = requireTools(['promtool'], 'promtool check of the metrics exposition');
    if (why) return ctx.skip(why);
    const promtool = findTool('promtool') as string;
    const text = await createMetrics(fakeNode()).metrics();
    for (const name of [
      'foundation_members',
      'foundation_member_rtt_seconds',
      'foundation_member_loop_lag_seconds',
      'foundation_event_loop_lag_p50_seconds',
      'foundation_event_loop_lag_p99_seconds',
      'foundation_event_loop_lag_max_seconds',
      'foundation_lane_messages_sent_total',
      'foundation_lane_bytes_sent_total',
      'foundation_lane_messages_received_total',
      'foundation_lane_bytes_received_total',
      'foundation_lane_dropped_total',
      'foundation_lane_queued_bytes',
      'foundation_handshake_failures_total',
      'foundation_frames_rejected_total',
      'foundation_large_message_bodies_total',
      'foundation_large_message_pool_bytes',
      'foundation_heartbeat_packets_dropped_total',
      'foundation_member_up_total',
      'foundation_member_down_total',
      'foundation_links_opened_total',
      'foundation_links_closed_total',
      'foundation_node_info',
    ]) {
      expect(text).toContain(`# TYPE ${name} `);
    }
    const result = spawnSync(promtool, ['check', 'metrics'], { input: text, encoding: 'utf8' });
    expect({ status: result.status, stdout: result.stdout, stderr: result.stderr }).toEqual({ status: 0, stdout: '', stderr: '' });
  });
});

describe('pubsub metrics', () => {
  it('reports per-prefix pubsub counters from a real engine, with bounded prefixes', async () => {
    const { Hub, settle } = await import('../helpers/pubsub-hub.js');
    const hub = new Hub();
    const ps = await hub.node('node-a');
    ps.subscribe('rooms.*', () => {});
    ps.subscribe('jobs', () => {
      throw new Error('boom');
    });
    for (let i = 0; i < 3; i++) ps.localBroadcast('rooms.1', i);
    ps.localBroadcast('jobs', 1);
    for (let i = 0; i < 100; i++) ps.localBroadcast(`t${i}`, i); // more prefixes than the bound
    await settle();
    const r = createMetrics({ ...fakeNode(), pubsub: ps }, { processMetrics: false });
    const text = await r.metrics();
    expect(text).toContain('foundation_pubsub_published_total{prefix="rooms"} 3');
    expect(text).toContain('foundation_pubsub_delivered_total{prefix="rooms"} 3');
    expect(text).toContain('foundation_pubsub_handler_errors_total{prefix="jobs"} 1');
    expect(text).toContain('foundation_pubsub_subscriptions 2');
    const prefixes = new Set([...text.matchAll(/foundation_pubsub_published_total\{prefix="([^"]+)"\}/g)].map((m) => m[1]));
    expect(prefixes.size).toBeLessThanOrEqual(65);
    expect(prefixes.has('other')).toBe(true);
    await ps.stop();
  });
});
