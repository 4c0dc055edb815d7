/**
 * Foundation's error classes. Every error thrown or emitted by Foundation is a
 * `FoundationError` (or subclass) with a stable `code`. The registry below is the
 * single source of truth; `docs/errors.md` documents each code.
 */

/** Stable error codes, documented in docs/errors.md. */
export const ErrorCodes = {
  /** A configuration value is missing, of the wrong type, or not among the allowed values. */
  CONFIG_INVALID: 'FOUNDATION_CONFIG_INVALID',
  /** Production start refused: no shared secret and `insecure` was not set. */
  SECRET_REQUIRED: 'FOUNDATION_SECRET_REQUIRED',
  /** A value cannot be encoded by the wire codec (function, symbol, class instance with no codec...). */
  NOT_SERIALIZABLE: 'FOUNDATION_NOT_SERIALIZABLE',
  /** A frame on the wire is malformed or larger than `maxFrameBytes`. Closes only that link. */
  FRAME_INVALID: 'FOUNDATION_FRAME_INVALID',
  /** A reassembled message exceeds `maxMessageBytes`. Closes only that link. */
  MESSAGE_TOO_LARGE: 'FOUNDATION_MESSAGE_TOO_LARGE',
  /** The link handshake failed: wrong secret, replayed challenge, protocol version or cluster mismatch. */
  HANDSHAKE_FAILED: 'FOUNDATION_HANDSHAKE_FAILED',
  /** A lane's queue passed its hard limit; the message was not queued. */
  LANE_OVERFLOW: 'FOUNDATION_LANE_OVERFLOW',
  /** The destination node is not a connected member. */
  NODE_UNREACHABLE: 'FOUNDATION_NODE_UNREACHABLE',
  /** A request got no reply within its timeout. */
  REQUEST_TIMEOUT: 'FOUNDATION_REQUEST_TIMEOUT',
  /** The remote handler of a request threw; `cause` carries the remote error. */
  REMOTE_ERROR: 'FOUNDATION_REMOTE_ERROR',
  /** No handler is registered on the remote node for the request's topic. */
  NO_HANDLER: 'FOUNDATION_NO_HANDLER',
  /** The link closed while a request was waiting for its reply. */
  LINK_CLOSED: 'FOUNDATION_LINK_CLOSED',
  /** The node is stopped (or stopping) and cannot do the requested operation. */
  NODE_STOPPED: 'FOUNDATION_NODE_STOPPED',
  /** A discovery strategy failed a lookup; the cluster is kept as it is. */
  DISCOVERY_LOOKUP_FAILED: 'FOUNDATION_DISCOVERY_LOOKUP_FAILED',
  /** `registry.register` for a name another node (or this one) already owns. */
  NAME_REGISTERED: 'FOUNDATION_NAME_REGISTERED',
  /** `registry.awaitRegistered` saw no registration of the name within its timeout. */
  REGISTRY_TIMEOUT: 'FOUNDATION_REGISTRY_TIMEOUT',
  /** A worker call got no reply within its timeout. */
  CALL_TIMEOUT: 'FOUNDATION_CALL_TIMEOUT',
  /** The worker is not running (stopped, or stopped while the call waited). */
  WORKER_STOPPED: 'FOUNDATION_WORKER_STOPPED',
  /** The worker crashed handling the message (its handler threw); `cause` is what it threw. */
  WORKER_CRASHED: 'FOUNDATION_WORKER_CRASHED',
  /** `processes.call`/`cast`/`stopChild` for a name that no node runs or is about to run (no registration, no singleton, child or replicated spec). */
  NO_SUCH_WORKER: 'FOUNDATION_NO_SUCH_WORKER',
  /** A worker type that `processes.define` did not declare (on this node, or, for placement, on any live node). */
  WORKER_TYPE_UNKNOWN: 'FOUNDATION_WORKER_TYPE_UNKNOWN',
  /** A pubsub topic or pattern is empty, too long, has an empty token, or misplaces a wildcard (a publish topic may hold none). */
  TOPIC_INVALID: 'FOUNDATION_TOPIC_INVALID',
  /** A subscriber with the `disconnect` overflow policy fell behind its queue bound and was unsubscribed. */
  SUBSCRIBER_OVERFLOW: 'FOUNDATION_SUBSCRIBER_OVERFLOW',
  /** A handler for that topic is already registered on this node (unregister the first one, or use another topic). */
  HANDLER_EXISTS: 'FOUNDATION_HANDLER_EXISTS',
  /** Another live node started with this node's name and a newer incarnation: this node is no longer a member. */
  NAME_TAKEN: 'FOUNDATION_NAME_TAKEN',
  /** The heartbeat worker failed: it did not start in time, exited, or reported an error; peers may see this node down. */
  HEARTBEAT_FAILED: 'FOUNDATION_HEARTBEAT_FAILED',
  /** `presence.track` for a key this node already tracks on that topic (use `update`). */
  PRESENCE_TRACKED: 'FOUNDATION_PRESENCE_TRACKED',
  /** `presence.update` for a key this node does not track on that topic (use `track`). */
  PRESENCE_NOT_TRACKED: 'FOUNDATION_PRESENCE_NOT_TRACKED',
  /** `services.call` found no healthy instance of the service, or every attempt failed to reach one (`attempts` says why each). */
  SERVICE_UNAVAILABLE: 'FOUNDATION_SERVICE_UNAVAILABLE',
  /** The instance's handler threw (or rejected) in `services.call`: not retried; `remote` carries the remote error. */
  SERVICE_CALL_FAILED: 'FOUNDATION_SERVICE_CALL_FAILED',
  /** `services.call` reached an instance that has no handler for the method. */
  SERVICE_NO_METHOD: 'FOUNDATION_SERVICE_NO_METHOD',
  /** `config.setClusterWide` aborted: a participant vetoed, was locked, stale, unreachable or silent; `votes` says who and why. */
  CONFIG_ABORTED: 'FOUNDATION_CONFIG_ABORTED',
  /** `config.setClusterWide` decided commit but no participant acknowledged it in time: the outcome is not known yet (`config.inDoubt()`). */
  CONFIG_IN_DOUBT: 'FOUNDATION_CONFIG_IN_DOUBT',
  /** A quorum singleton's node will not claim it (nor vote): it sees more declaring nodes than `clusterSize`, or one configured with another `clusterSize` or `leaseMs`. */
  QUORUM_MISCONFIGURED: 'FOUNDATION_QUORUM_MISCONFIGURED',
} as const;

export type ErrorCode = (typeof ErrorCodes)[keyof typeof ErrorCodes];

/** Base class of every Foundation error. `code` is stable across releases. */
export class FoundationError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'FoundationError';
    this.code = code;
  }
}

/** A configuration key holds a value that is not allowed. */
export class ConfigError extends FoundationError {
  /** Dotted path of the offending key, e.g. `failureDetector.phiThreshold`. */
  readonly key: string;
  constructor(key: string, message: string) {
    super(ErrorCodes.CONFIG_INVALID, `Invalid configuration at "${key}": ${message}`);
    this.name = 'ConfigError';
    this.key = key;
  }
}

/** Raised at the call site when a value cannot cross the wire. */
export class SerializationError extends FoundationError {
  /** Path inside the value where the offending part sits, e.g. `$.user.callback`. */
  readonly path: string;
  constructor(path: string, message: string) {
    super(ErrorCodes.NOT_SERIALIZABLE, `Value is not serializable at ${path}: ${message}`);
    this.name = 'SerializationError';
    this.path = path;
  }
}

/** Malformed, oversized or otherwise invalid bytes on a link. */
export class FrameError extends FoundationError {
  constructor(code: typeof ErrorCodes.FRAME_INVALID | typeof ErrorCodes.MESSAGE_TOO_LARGE, message: string) {
    super(code, message);
    this.name = 'FrameError';
  }
}

/** The link handshake was refused. `reason` is machine-readable. */
export class HandshakeError extends FoundationError {
  readonly reason: HandshakeFailureReason;
  constructor(reason: HandshakeFailureReason, message: string) {
    super(ErrorCodes.HANDSHAKE_FAILED, message);
    this.name = 'HandshakeError';
    this.reason = reason;
  }
}

/** Why a handshake was refused. */
export type HandshakeFailureReason =
  | 'bad-secret'
  | 'version-mismatch'
  | 'cluster-mismatch'
  | 'duplicate-link'
  | 'stale-incarnation'
  | 'self-connection'
  | 'protocol'
  | 'timeout'
  | 'shutting-down'
  /** Inbound connection closed at once: too many handshakes in progress (see src/mesh/admission.ts). */
  | 'over-capacity';

/** A lane refused a message because its queue passed the hard limit. */
export class LaneOverflowError extends FoundationError {
  constructor(lane: string, queuedBytes: number, limit: number) {
    super(ErrorCodes.LANE_OVERFLOW, `Lane "${lane}" holds ${queuedBytes} bytes, over its hard limit of ${limit}; the peer is not reading`);
    this.name = 'LaneOverflowError';
  }
}

/** Errors on the request/response and send paths. */
export class MessagingError extends FoundationError {
  constructor(
    code:
      | typeof ErrorCodes.NODE_UNREACHABLE
      | typeof ErrorCodes.REQUEST_TIMEOUT
      | typeof ErrorCodes.REMOTE_ERROR
      | typeof ErrorCodes.NO_HANDLER
      | typeof ErrorCodes.LINK_CLOSED
      | typeof ErrorCodes.NODE_STOPPED
      | typeof ErrorCodes.NAME_TAKEN,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(code, message, options);
    this.name = 'MessagingError';
  }
}

/** Start refused because no secret was configured in production. */
export class SecretRequiredError extends FoundationError {
  constructor() {
    super(
      ErrorCodes.SECRET_REQUIRED,
      'NODE_ENV=production and no secret is configured: set `secret` (or FOUNDATION_SECRET), or pass `insecure: true` to run without authentication',
    );
    this.name = 'SecretRequiredError';
  }
}

/** Errors of the pubsub layer raised at the call site (bad topic) or handed to a subscriber (overflow). */
export class PubSubError extends FoundationError {
  constructor(code: typeof ErrorCodes.TOPIC_INVALID | typeof ErrorCodes.SUBSCRIBER_OVERFLOW, message: string) {
    super(code, message);
    this.name = 'PubSubError';
  }
}

/** Errors of the registry. For `FOUNDATION_NAME_REGISTERED`, `owner` says who holds the name. */
export class RegistryError extends FoundationError {
  readonly owner?: { readonly name: string; readonly node: string; readonly meta: unknown };
  constructor(
    code: typeof ErrorCodes.NAME_REGISTERED | typeof ErrorCodes.REGISTRY_TIMEOUT | typeof ErrorCodes.NODE_STOPPED,
    message: string,
    owner?: { readonly name: string; readonly node: string; readonly meta: unknown },
  ) {
    super(code, message);
    this.name = 'RegistryError';
    if (owner) this.owner = owner;
  }
}

/** Errors of workers: a call that timed out, a worker that is not running, a handler that crashed (`cause`). */
export class WorkerError extends FoundationError {
  constructor(
    code:
      | typeof ErrorCodes.CALL_TIMEOUT
      | typeof ErrorCodes.WORKER_STOPPED
      | typeof ErrorCodes.WORKER_CRASHED
      | typeof ErrorCodes.NO_SUCH_WORKER
      | typeof ErrorCodes.WORKER_TYPE_UNKNOWN
      | typeof ErrorCodes.NODE_STOPPED,
    message: string,
    cause?: unknown,
  ) {
    super(code, message, cause === undefined ? undefined : { cause });
    this.name = 'WorkerError';
  }
}

/** Errors of `node.presence`: a key tracked twice by one node, an update of a key it does not track, a stopped node. */
export class PresenceError extends FoundationError {
  constructor(code: typeof ErrorCodes.PRESENCE_TRACKED | typeof ErrorCodes.PRESENCE_NOT_TRACKED | typeof ErrorCodes.NODE_STOPPED, message: string) {
    super(code, message);
    this.name = 'PresenceError';
  }
}

/** One failed attempt of a `services.call`. */
export interface ServiceCallAttempt {
  /** Node that owns the instance tried. */
  readonly node: string;
  /** Instance id tried. */
  readonly instance: string;
  /** Error code of the failure (`FOUNDATION_NODE_UNREACHABLE`, `FOUNDATION_REQUEST_TIMEOUT`...), or `gone` / `critical` when the owner no longer serves the instance. */
  readonly code: string;
  readonly message: string;
}

/**
 * Errors of `services.call`: no instance answered (`SERVICE_UNAVAILABLE`, with every `attempts`),
 * the handler threw (`SERVICE_CALL_FAILED`, with `remote`), or it has no such method (`SERVICE_NO_METHOD`).
 */
export class ServiceError extends FoundationError {
  /** The service and method called. */
  readonly service: string;
  readonly method: string;
  /** The attempts that failed before this error, in order. */
  readonly attempts: readonly ServiceCallAttempt[];
  /** For `SERVICE_CALL_FAILED`: what the handler threw on the instance's node. */
  readonly remote?: { readonly name: string; readonly message: string; readonly code?: string; readonly node: string; readonly instance: string };
  constructor(
    code: typeof ErrorCodes.SERVICE_UNAVAILABLE | typeof ErrorCodes.SERVICE_CALL_FAILED | typeof ErrorCodes.SERVICE_NO_METHOD,
    message: string,
    details: { service: string; method: string; attempts?: readonly ServiceCallAttempt[]; remote?: ServiceError['remote']; cause?: unknown },
  ) {
    super(code, message, details.cause === undefined ? undefined : { cause: details.cause });
    this.name = 'ServiceError';
    this.service = details.service;
    this.method = details.method;
    this.attempts = details.attempts ?? [];
    if (details.remote) this.remote = details.remote;
  }
}

/** One participant's vote in a cluster-wide config transaction (`ClusterConfigError.votes`). */
export interface ConfigVote {
  node: string;
  /** `yes`, `no`, or `none` when no vote came (`code` says why). */
  vote: 'yes' | 'no' | 'none';
  /** Why not yes: `veto`, `locked`, `stale`, `syncing`, `timeout`, `unreachable`, `incarnation`, `aborted`. */
  code?: string;
  /** The validator's message for a veto; a short explanation otherwise. */
  reason?: string;
}

/** `config.setClusterWide` did not commit (`FOUNDATION_CONFIG_ABORTED`) or does not know yet (`FOUNDATION_CONFIG_IN_DOUBT`). */
export class ClusterConfigError extends FoundationError {
  /** The transaction id. */
  readonly tx: string;
  /** Every participant's vote, this node included. */
  readonly votes: readonly ConfigVote[];
  constructor(
    code: typeof ErrorCodes.CONFIG_ABORTED | typeof ErrorCodes.CONFIG_IN_DOUBT | typeof ErrorCodes.NODE_STOPPED,
    message: string,
    tx: string,
    votes: readonly ConfigVote[],
  ) {
    super(code, message);
    this.name = 'ClusterConfigError';
    this.tx = tx;
    this.votes = votes;
  }
}
