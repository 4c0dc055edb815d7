import { describe, expect, it } from 'vitest';
import { explainConfig } from '../../../src/config/explain.js';
import { resolveOptions } from '../../../src/config/resolve.js';

describe('pubsub start option', () => {
  it('defaults to the mesh and resolves redis options', async () => {
    expect((await resolveOptions({ insecure: true }, {}, 'explain')).pubsub).toEqual({ adapter: 'mesh' });
    const r = await resolveOptions({ insecure: true, pubsub: { adapter: 'redis', redis: { url: 'redis://127.0.0.1:6390' } } }, {}, 'explain');
    expect(r.pubsub).toEqual({ adapter: 'redis', redis: { url: 'redis://127.0.0.1:6390' } });
  });

  it('refuses bad shapes by key', async () => {
    await expect(resolveOptions({ insecure: true, pubsub: { adapter: 'kafka' as never } }, {}, 'start')).rejects.toMatchObject({ key: 'pubsub.adapter' });
    await expect(resolveOptions({ insecure: true, pubsub: { redis: { url: 'redis://x' } } }, {}, 'start')).rejects.toMatchObject({ key: 'pubsub.redis' });
    await expect(resolveOptions({ insecure: true, pubsub: { adapter: 'redis', redis: { url: 'http://x' } } }, {}, 'start')).rejects.toMatchObject({
      key: 'pubsub.redis.url',
    });
    await expect(resolveOptions({ insecure: true, pubsub: { adapter: 'redis', redis: { presenceMs: 10 } } }, {}, 'start')).rejects.toMatchObject({
      key: 'pubsub.redis.presenceMs',
    });
  });

  it('explain shows the transport with the password redacted', async () => {
    const e = await explainConfig({ insecure: true, pubsub: { adapter: 'redis', redis: { url: 'redis://:hunter2@cache:6379/0' } } }, {});
    expect(e.pubsub).toEqual({ adapter: 'redis', url: 'redis://<redacted>@cache:6379/0' });
  });
});
