/** Whether the optional mDNS package can be loaded: Mortal mode uses mdns when it can, gossip otherwise. */
let cached: Promise<boolean> | undefined;

export function mdnsAvailable(): Promise<boolean> {
  cached ??= import('multicast-dns' as string).then(
    () => true,
    () => false,
  );
  return cached;
}
