/**
 * The one parser for "where to listen / what to reach" values given as text: `port`,
 * `host:port`, `[v6]:port`, and (for the admin server a user copies from the demo)
 * `http://host:port/`. `Foundation.start({ http })`, `FOUNDATION_HTTP`, `foundation start --http`
 * and `foundation status --http` all use it, so the same text means the same thing everywhere.
 */

/** A host and a port; the host is `undefined` when only a port was given. */
export interface HostPort {
  /** Host name or IP (IPv6 without brackets), or `undefined` for a bare port. */
  host: string | undefined;
  /** TCP port. */
  port: number;
}

/** What {@link parseHostPort} accepts. */
export interface HostPortRules {
  /** Accept a bare `port` (the host is then `undefined`). Default false. */
  allowBarePort?: boolean;
  /** Accept `http://host:port` with an optional `/` path (the admin server's URL). Default false. */
  allowHttpUrl?: boolean;
  /** Smallest port accepted. Default 0. */
  minPort?: number;
}

/** The accepted shapes, in words, for error messages ("expected <port> or <host:port>"). */
export function hostPortShape(rules: HostPortRules = {}): string {
  const shapes = [...(rules.allowBarePort ? ['<port>'] : []), '<host:port>', ...(rules.allowHttpUrl ? ['<http://host:port>'] : [])];
  const ports = `port ${rules.minPort ?? 0}-65535`;
  return `${shapes.length > 1 ? `${shapes.slice(0, -1).join(', ')} or ${shapes.at(-1)}` : shapes[0]} (${ports}; [v6]:port for IPv6)`;
}

function portOf(text: string, minPort: number): number | undefined {
  if (!/^\d{1,5}$/.test(text)) return undefined;
  const port = Number(text);
  return port >= minPort && port <= 65535 ? port : undefined;
}

/**
 * Parses `port`, `host:port`, `[v6]:port` and, when allowed, `http://host:port[/]`.
 * Returns `undefined` when the text has none of the allowed shapes (say {@link hostPortShape}).
 */
export function parseHostPort(text: string, rules: HostPortRules = {}): HostPort | undefined {
  const minPort = rules.minPort ?? 0;
  let v = text.trim();
  if (rules.allowHttpUrl && /^[a-z][a-z0-9+.-]*:\/\//i.test(v)) {
    // Only plain http: the admin server does not speak TLS. The path may be `/` (or empty) only.
    const m = /^http:\/\/([^/?#]+)\/?$/i.exec(v);
    if (!m) return undefined;
    v = m[1] as string;
    if (/^\d+$/.test(v)) return undefined;
  }
  if (rules.allowBarePort && /^\d+$/.test(v)) {
    const port = portOf(v, minPort);
    return port === undefined ? undefined : { host: undefined, port };
  }
  const m = /^\[([^\]\s]+)\]:(\d+)$/.exec(v) ?? /^([^:[\]\s/]+):(\d+)$/.exec(v);
  if (!m) return undefined;
  const port = portOf(m[2] as string, minPort);
  return port === undefined ? undefined : { host: m[1] as string, port };
}
