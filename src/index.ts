/**
 * foundation-cluster: the single public entry point. Types first, then values.
 */
export type {
  ClusterEvents,
  ClusterView,
  DiscoveryView,
  FoundationNode,
  LaneCounters,
  LocalHealth,
  MeshMessaging,
  MeshStats,
  MessageContext,
  MessageHandler,
  MetricsRegistry,
  NameTakenEvent,
  RequestOptions,
  SendOptions,
} from './api.js';
export type { FailureDetectorOptions, FoundationOptions, HttpOptions, LaneOptions, LanesOptions, PubSubOptions } from './config/options.js';
export type { DnsFamily, DnsResolverOptions, DnsStrategyConfig } from './discovery/dns.js';
export { DnsStrategy } from './discovery/dns.js';
export type { DnsSrvStrategyConfig } from './discovery/dns-srv.js';
export { DnsSrvStrategy } from './discovery/dns-srv.js';
export type { GossipDropReason, GossipIgnoreReason, GossipStats, GossipStrategyConfig } from './discovery/gossip.js';
export { GossipStrategy } from './discovery/gossip.js';
export type { KubernetesStrategyConfig } from './discovery/kubernetes.js';
export { KubernetesApiError, KubernetesStrategy } from './discovery/kubernetes.js';
export type { LocalStrategyConfig } from './discovery/local.js';
export { LocalStrategy } from './discovery/local.js';
export type { MdnsStats, MdnsStrategyConfig } from './discovery/mdns.js';
export { MdnsStrategy } from './discovery/mdns.js';
export type { ClusterOption, ClusterShorthand } from './discovery/modes.js';
export type { TopologySpec } from './discovery/registry.js';
export type { StaticStrategyConfig } from './discovery/static.js';
export { StaticStrategy } from './discovery/static.js';
export type { Strategy, StrategyClass, StrategyContext } from './discovery/strategy.js';
export { rejectUnknownKeys, startConfigError } from './discovery/strategy.js';
export type { TopologyStats } from './discovery/topology.js';
export type { ConfigVote, ErrorCode, HandshakeFailureReason, ServiceCallAttempt } from './errors.js';
export {
  ClusterConfigError,
  ConfigError,
  ErrorCodes,
  FoundationError,
  FrameError,
  HandshakeError,
  LaneOverflowError,
  MessagingError,
  PresenceError,
  PubSubError,
  RegistryError,
  SecretRequiredError,
  SerializationError,
  ServiceError,
  WorkerError,
} from './errors.js';
export { Foundation } from './foundation.js';
export type { HeartbeatDropReason } from './mesh/heartbeat-protocol.js';
export type { ConnectResult, MeshTlsOptions } from './mesh/mesh.js';
export type { DownReason, LaneName, Member, MemberStatus, NodeIdentity } from './mesh/types.js';
export type { RestartPolicy } from './processes/supervisor.js';
export type {
  CallOptions,
  ChildStartOptions,
  ProcessEvent,
  ProcessExplanation,
  ProcessesApi,
  ProcessesStats,
  ProcessInfo,
  ProcessRef,
  SingletonConsistency,
  SingletonOptions,
  SupervisionOptions,
} from './processes/types.js';
export type { CallResult, StopReason, WorkerContext, WorkerSpec } from './processes/worker.js';
export type { PubSubAdapter, PubSubAdapterHost } from './pubsub/adapter.js';
export type { ChannelOptions, ChannelSpec, Channels } from './pubsub/channels.js';
export type { InterestMessage } from './pubsub/interest.js';
export type { BroadcastOptions, PubSubApi, PubSubStats, SubscribeOptions, TopicCounters } from './pubsub/pubsub.js';
export type { RedisAdapterOptions } from './pubsub/redis-adapter.js';
export type { PubSubStream } from './pubsub/stream.js';
export type { DeliveryMeta, OverflowPolicy, PubSubMessage, SubscriptionHandler } from './pubsub/subscriber.js';
export type { HlcStamp } from './registry/hlc.js';
export type { NameEvent, NameOwner, RegistryApi, RegistryStats } from './registry/registry.js';
export type { ReplicaChange, ReplicaMessage } from './replication/owned-replica.js';
export type {
  ClusterConfigApi,
  ClusterConfigCommit,
  ClusterConfigStats,
  ConfigChange,
  ConfigValidator,
  ConfigWatchEvent,
  InDoubtTransaction,
  SetClusterWideOptions,
  VoteCode,
} from './services/cluster-config/cluster-config.js';
export type { ConfigWrite } from './services/cluster-config/two-phase.js';
export type {
  EventFilter,
  EventHandler,
  EventQuery,
  EventQueryResult,
  EventScope,
  EventsApi,
  EventsOptions,
  EventsStats,
  FoundationEvent,
  QueryMiss,
} from './services/events/events.js';
export type { PresenceApi, PresenceDiff, PresenceDiffHandler, PresenceEntry, PresenceList, PresenceMeta, PresenceStats } from './services/presence.js';
export type {
  CheckOutcome,
  HealthCheck,
  HealthCheckFn,
  HealthCheckOptions,
  HealthCheckResult,
  HealthCheckReturn,
} from './services/service-mesh/health-check.js';
export type { PickStrategy } from './services/service-mesh/pick.js';
export type { HealthState, ServiceRecord } from './services/service-mesh/records.js';
export type {
  ServiceCallContext,
  ServiceCallOptions,
  ServiceExplanation,
  ServiceHandler,
  ServicePickOptions,
  ServiceQuery,
  ServiceRegisterOptions,
  ServiceRegistration,
  ServicesApi,
  ServicesStats,
} from './services/service-mesh/services.js';
export type { Logger } from './util/logger.js';
export { TelemetryChannels } from './util/telemetry.js';
