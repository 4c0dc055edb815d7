// A HeartbeatService in a child process, driven over IPC by test/process/heartbeat.test.ts.
// Runs the COMPILED service (dist/), like production does.
//
// parent → child: { cmd: 'start', config } | { cmd: 'add', peer } (sessionKey as hex)
//                 | { cmd: 'remove', peer } | { cmd: 'busy', ms } | { cmd: 'stop' }
// child → parent: { evt: 'started', port } | { evt: <service event>, data } | { evt: 'busy-done', loopLag }

import { HeartbeatService } from '../../dist/mesh/heartbeat.js';

/** @type {HeartbeatService | undefined} */
let svc;

const send = (msg) => {
  if (process.connected) process.send(msg);
};

// If the test runner dies, do not linger.
process.on('disconnect', () => process.exit(0));

process.on('message', async (m) => {
  try {
    switch (m.cmd) {
      case 'start': {
        svc = await HeartbeatService.start({ host: '127.0.0.1', port: 0, config: m.config });
        for (const evt of ['suspect', 'alive', 'down', 'self-pause', 'dropped', 'error']) {
          svc.on(evt, (data) => send({ evt, data: evt === 'error' ? { message: data.message } : data }));
        }
        svc.on('stats', (map) => send({ evt: 'stats', data: Object.fromEntries(map) }));
        send({ evt: 'started', port: svc.port });
        break;
      }
      case 'add':
        svc.addPeer({ ...m.peer, sessionKey: Buffer.from(m.peer.sessionKey, 'hex') });
        break;
      case 'remove':
        svc.removePeer(m.peer);
        break;
      case 'busy': {
        // Block the main thread, like a CPU-heavy handler would.
        const end = Date.now() + m.ms;
        while (Date.now() < end) {
          // spin
        }
        // Let the event-loop monitor record the stall before reporting it.
        setTimeout(() => send({ evt: 'busy-done', loopLag: svc.loopLag() }), 100);
        break;
      }
      case 'stop':
        await svc?.stop();
        process.exit(0);
    }
  } catch (err) {
    send({ evt: 'fatal', data: { message: String(err?.stack ?? err) } });
  }
});

send({ evt: 'ready' });
