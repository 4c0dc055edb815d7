/**
 * The `mdns` strategy: DNS-SD over multicast DNS. It lives in ./mdns/ (one file per concern;
 * the overview is in ./mdns/strategy.ts); this module is its public entry point.
 */

export { MDNS_MISSING_MESSAGE, mdnsAvailable } from './mdns/socket.js';
export type { MdnsStats } from './mdns/stats.js';
export { MdnsStrategy, type MdnsStrategyConfig } from './mdns/strategy.js';

import { multicastInterfaceFor } from './net-interfaces.js';

/** The interface this strategy multicasts on for a node's advertised address, when no lookup is needed (see `multicastInterfaceFor`). */
export const mdnsInterfaceFor = multicastInterfaceFor;
