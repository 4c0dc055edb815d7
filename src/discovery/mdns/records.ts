/**
 * DNS records as the `mdns` strategy handles them: the slice of multicast-dns (and dns-packet)
 * it uses, the names it publishes under, and the comparisons (record keys, packet fingerprints)
 * that known-answer suppression, rate limiting and echo recognition rest on.
 */
import { createHash } from 'node:crypto';

export interface DnsQuestion {
  name: string;
  type: string;
  class?: string;
}

export interface DnsRecord {
  name: string;
  type: string;
  class?: string;
  ttl?: number;
  flush?: boolean;
  data?: unknown;
}

export interface DnsPacket {
  id?: number;
  type?: string;
  flags?: number;
  opcode?: string;
  rcode?: string;
  questions?: DnsQuestion[];
  answers?: DnsRecord[];
  authorities?: DnsRecord[];
  additionals?: DnsRecord[];
}

export interface RemoteInfo {
  address: string;
  port: number;
}

export const MDNS_GROUP = '224.0.0.251';
export const SERVICES_NAME = '_services._dns-sd._udp';
export const PROTOCOL_VERSION = '1';
export const SUPPORTED_VERSIONS: ReadonlySet<string> = new Set([PROTOCOL_VERSION]);
export const AUTHORITATIVE_ANSWER = 1 << 10;

export const isInt = (v: unknown): v is number => typeof v === 'number' && Number.isInteger(v);
export const lower = (s: string) => s.toLowerCase();

function shortHash(text: string): string {
  return createHash('sha256').update(text).digest('hex').slice(0, 8);
}

/**
 * A DNS label from arbitrary text: runs of characters other than letters, digits and hyphens
 * become one hyphen; past 63 bytes it is cut and a short hash of the text keeps it unique.
 */
export function dnsLabel(text: string): string {
  const base = text
    .replace(/[^A-Za-z0-9-]+/g, '-')
    .replace(/-+/g, '-')
    .replace(/^-|-$/g, '');
  if (base.length > 0 && base.length <= 63) return base;
  return `${base.slice(0, 54).replace(/-$/, '') || 'foundation'}-${shortHash(text)}`;
}

/**
 * The instance label: the node name as it is, but with dots as hyphens (the DNS encoder splits
 * labels on dots), cut with a short hash past 63 bytes. The TXT `node` key carries the exact name.
 */
export function instanceLabel(name: string): string {
  const plain = name.replace(/\./g, '-');
  if (Buffer.byteLength(plain) <= 63) return plain;
  return `${plain.slice(0, 54)}-${shortHash(name)}`;
}

/** Question classes that ask about IN records: IN, ANY, and both with the QU bit (dns-packet reports those as UNKNOWN_<n>). */
export function classMatches(klass: string | undefined): boolean {
  return klass === undefined || klass === 'IN' || klass === 'ANY' || klass === 'UNKNOWN_32769' || klass === 'UNKNOWN_33023';
}

export function recordClassOk(klass: string | undefined): boolean {
  return klass === undefined || klass === 'IN';
}

export function parseTxt(data: unknown): Map<string, string> | undefined {
  const list = Array.isArray(data) ? data : [data];
  const kv = new Map<string, string>();
  for (const item of list) {
    let s: string;
    if (Buffer.isBuffer(item)) s = item.toString('utf8');
    else if (typeof item === 'string') s = item;
    else return undefined;
    if (s.length === 0) continue;
    const eq = s.indexOf('=');
    if (eq === 0) continue; // RFC 6763 §6.4: no key, ignored.
    const key = lower(eq < 0 ? s : s.slice(0, eq));
    if (kv.has(key)) continue; // §6.4: the first occurrence wins.
    kv.set(key, eq < 0 ? '' : s.slice(eq + 1));
  }
  return kv;
}

/** A comparable form of a record's data, for known-answer suppression and rate limiting. */
function dataKey(r: DnsRecord): string {
  const d = r.data;
  switch (r.type) {
    case 'PTR':
      return typeof d === 'string' ? lower(d) : '';
    case 'SRV': {
      const s = d as { target?: unknown; port?: unknown } | undefined;
      return `${lower(String(s?.target ?? ''))}:${String(s?.port ?? '')}`;
    }
    case 'TXT': {
      const list = Array.isArray(d) ? d : [d];
      return list.map((x) => (Buffer.isBuffer(x) ? x.toString('hex') : Buffer.from(String(x)).toString('hex'))).join('.');
    }
    default:
      return typeof d === 'string' ? lower(d) : JSON.stringify(d ?? null);
  }
}

export const recordKey = (r: DnsRecord) => `${r.type}|${lower(r.name)}|${dataKey(r)}`;

/** What identifies a packet this node sent when it comes back: its questions and records. */
export function fingerprint(p: DnsPacket): string {
  const questions = (p.questions ?? []).map((q) => (q && typeof q.name === 'string' ? `${q.type}|${lower(q.name)}` : '?')).sort();
  const records = [...(p.answers ?? []), ...(p.additionals ?? [])]
    .map((r) => (r && typeof r.name === 'string' ? `${recordKey(r)}|${String(r.ttl ?? '')}` : '?'))
    .sort();
  return `${p.type ?? ''}#${questions.join(',')}#${records.join(',')}`;
}

/** The names one node publishes and browses under, as given and lowercased (DNS names compare case-insensitively). */
export interface MdnsNames {
  /** `<serviceType>.<domain>`, e.g. `_foundation._tcp.local`. */
  service: string;
  serviceLower: string;
  /** `_services._dns-sd._udp.<domain>`, lowercased. */
  servicesLower: string;
  /** This node's instance, `<label>.<service>`. */
  instance: string;
  instanceLower: string;
  /** This node's host name, `<hostLabel>.<domain>`. */
  host: string;
  hostLower: string;
}

export function mdnsNames(serviceType: string, domain: string, nodeName: string, hostLabel: string | undefined): MdnsNames {
  const service = `${serviceType}.${domain}`;
  const instance = `${instanceLabel(nodeName)}.${service}`;
  const host = `${hostLabel ?? dnsLabel(nodeName)}.${domain}`;
  return {
    service,
    serviceLower: lower(service),
    servicesLower: lower(`${SERVICES_NAME}.${domain}`),
    instance,
    instanceLower: lower(instance),
    host,
    hostLower: lower(host),
  };
}
