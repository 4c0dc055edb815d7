/** Packet counters of one `mdns` strategy instance, for tests and diagnostics. */
export interface MdnsStats {
  /** Packets accepted for processing (on-link source, parsed). */
  packetsReceived: number;
  queriesReceived: number;
  responsesReceived: number;
  /** Query packets sent (browse, resolve and refresh queries). */
  queriesSent: number;
  /** Response packets sent (answers, announcements, goodbyes). */
  responsesSent: number;
  /** Goodbye (TTL 0) records that removed a cached record. */
  goodbyesReceived: number;
  /** Packets that could not be parsed or made a handler throw; ignored. */
  malformed: number;
  /** Records of a known type with unusable data (SRV port 0, bad address...); ignored. */
  invalidRecords: number;
  /** Packets from a source outside the interface's subnet, or responses not from port 5353; ignored. */
  offLink: number;
  /** Send failures (reported with `lookupFailed`). */
  sendErrors: number;
  /** This node's own multicast packets heard back (multicast loopback): the proof its receive path works. */
  ownPacketsReceived: number;
  /** Times a record was kept past the end of its TTL, because its owner's silence could not be told from this node's (see `lookupFailed`). */
  heldRecords: number;
  /** Cached service instances (any cluster, self included). */
  instances: number;
  /** Peers currently reported. */
  peers: number;
}

/** The counters the parts of the strategy increment (the rest of {@link MdnsStats} is read from the cache). */
export type MdnsCounters = Omit<MdnsStats, 'instances' | 'peers'>;

export function newCounters(): MdnsCounters {
  return {
    packetsReceived: 0,
    queriesReceived: 0,
    responsesReceived: 0,
    queriesSent: 0,
    responsesSent: 0,
    goodbyesReceived: 0,
    malformed: 0,
    invalidRecords: 0,
    offLink: 0,
    sendErrors: 0,
    ownPacketsReceived: 0,
    heldRecords: 0,
  };
}
