/** Start options of the mesh (built by `Foundation.start` from the user's options). */
import type { Logger } from '../util/logger.js';
import type { BackoffOptions } from './dialer.js';
import type { HeartbeatConfig } from './heartbeat-protocol.js';
import type { OutboxOptions } from './lanes.js';

/** TLS for mesh links. With `requestCert`, both sides present certificates (mTLS). */
export interface MeshTlsOptions {
  /** PEM private key of this node. */
  key: string | Buffer;
  /** PEM certificate chain of this node. */
  cert: string | Buffer;
  /** PEM CA bundle that peers' certificates must chain to. */
  ca?: string | Buffer | Array<string | Buffer>;
  /** Require and verify a client certificate on inbound links (mutual TLS). Default false. */
  requestCert?: boolean;
  /** Reject peers whose certificate does not verify. Default true. */
  rejectUnauthorized?: boolean;
  /** Server name to verify in the peer's certificate, when node addresses are IPs the certificate does not list. */
  serverName?: string;
}

export interface MeshOptions {
  name: string;
  host: string;
  port: number;
  advertiseHost?: string;
  clusterName: string;
  secret: Buffer;
  hidden: boolean;
  tls?: MeshTlsOptions;
  maxFrameBytes: number;
  maxMessageBytes: number;
  handshakeTimeoutMs: number;
  connectTimeoutMs: number;
  reconnect: BackoffOptions;
  heartbeat: HeartbeatConfig;
  /** UDP port of the heartbeat worker; default: the mesh port, or any free port if that is taken. */
  heartbeatPort?: number;
  lanes: Partial<OutboxOptions>;
  logger: Logger;
  incarnation: number;
}
