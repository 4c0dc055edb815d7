/**
 * The defaults of every start option, in one place. `resolveOptions` (src/config/resolve.ts)
 * applies them; nothing else in `Foundation.start` or `config explain` has a default of its own.
 * Values the mesh also needs when it is used on its own (lane bounds, heartbeat tuning) are
 * declared next to the code that uses them and referenced here, so each number exists once.
 */
import { DEFAULT_BACKOFF } from '../mesh/dialer.js';
import { DEFAULT_ACCEPTABLE_PAUSE_MS, DEFAULT_HEARTBEAT_INTERVAL_MS, DEFAULT_MIN_STD_DEV_MS, DEFAULT_PHI_THRESHOLD } from '../mesh/failure-detector.js';
import { DEFAULT_MAX_MAIN_STALL_MS, DEFAULT_SUSPECT_PHI } from '../mesh/heartbeat-protocol.js';
import { DEFAULT_MAX_MESSAGE_BYTES } from '../mesh/inbox.js';
import { DEFAULT_WINDOW_BYTES } from '../mesh/lanes.js';
import { DEFAULT_FRAGMENT_BYTES } from '../mesh/message.js';

/** Defaults of `Foundation.start` options (documented in docs/guides/configuration.md). `name` defaults to `<hostname>-<pid>`. */
export const DEFAULTS = Object.freeze({
  host: '127.0.0.1',
  port: 0,
  clusterName: 'foundation',
  hidden: false,
  insecure: false,
  /** Host of the admin server when `http` gives only a port. */
  httpHost: '127.0.0.1',
  maxFrameBytes: 1024 * 1024,
  maxMessageBytes: DEFAULT_MAX_MESSAGE_BYTES,
  fragmentBytes: DEFAULT_FRAGMENT_BYTES,
  windowBytes: DEFAULT_WINDOW_BYTES,
  laneMode: 'priority' as const,
  handshakeTimeoutMs: 5000,
  connectTimeoutMs: 1500,
  reconnect: Object.freeze({ ...DEFAULT_BACKOFF }),
  degradedLoopLagMs: 200,
  /** Transport under pubsub. */
  pubsubAdapter: 'mesh' as 'mesh' | 'redis',
  failureDetector: Object.freeze({
    heartbeatIntervalMs: DEFAULT_HEARTBEAT_INTERVAL_MS,
    phiThreshold: DEFAULT_PHI_THRESHOLD,
    suspectPhi: DEFAULT_SUSPECT_PHI,
    acceptablePauseMs: DEFAULT_ACCEPTABLE_PAUSE_MS,
    minStdDevMs: DEFAULT_MIN_STD_DEV_MS,
    maxMainStallMs: DEFAULT_MAX_MAIN_STALL_MS,
  }),
  /** Bytes by which `maxFrameBytes` must exceed `fragmentBytes` (frame and message headers). */
  frameHeadroomBytes: 1024,
});
