/** TLS and mutual TLS on mesh links, with certificates made by openssl for the test. */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Foundation, type FoundationNode } from '../../dist/index.js';
import { silentLogger } from '../compliance/strategy-compliance.js';
import { requireTools } from '../helpers/requires.js';

let dir: string;
const pem: Record<string, string> = {};

function openssl(args: string[]): void {
  execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
}

function makeCert(name: string, ca: string): void {
  openssl(['req', '-newkey', 'rsa:2048', '-nodes', '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${name}`]);
  const ext = join(dir, `${name}.ext`);
  execFileSync('sh', ['-c', `printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\\nextendedKeyUsage=serverAuth,clientAuth\\n' > ${ext}`]);
  openssl([
    'x509',
    '-req',
    '-in',
    `${name}.csr`,
    '-CA',
    `${ca}.crt`,
    '-CAkey',
    `${ca}.key`,
    '-CAcreateserial',
    '-out',
    `${name}.crt`,
    '-days',
    '2',
    '-extfile',
    ext,
  ]);
  pem[`${name}.key`] = readFileSync(join(dir, `${name}.key`), 'utf8');
  pem[`${name}.crt`] = readFileSync(join(dir, `${name}.crt`), 'utf8');
}

function makeCa(name: string): void {
  openssl(['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', `${name}.key`, '-out', `${name}.crt`, '-days', '2', '-subj', `/CN=${name}`]);
  pem[`${name}.crt`] = readFileSync(join(dir, `${name}.crt`), 'utf8');
}

const quiet = { level: 'silent' } as const;

function waitUp(node: FoundationNode, name: string, ms = 3000): Promise<boolean> {
  if (node.cluster.member(name)?.status === 'up') return Promise.resolve(true);
  return new Promise((resolve) => {
    const t = setTimeout(() => resolve(false), ms);
    node.cluster.on('up', (m) => {
      if (m.name === name) {
        clearTimeout(t);
        resolve(true);
      }
    });
  });
}

const noOpenssl = requireTools(['openssl'], 'TLS link tests (certificates are made with openssl)');

describe.skipIf(noOpenssl !== undefined)('TLS links', () => {
  const nodes: FoundationNode[] = [];
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'foundation-tls-'));
    makeCa('ca');
    makeCa('rogue');
    makeCert('n1', 'ca');
    makeCert('n2', 'ca');
    makeCert('intruder', 'rogue');
    void quiet;
  });
  afterAll(async () => {
    await Promise.all(nodes.map((n) => n.stop()));
    rmSync(dir, { recursive: true, force: true });
  });

  const tls = (name: string, ca = 'ca') => ({
    key: pem[`${name}.key`] as string,
    cert: pem[`${name}.crt`] as string,
    ca: pem[`${ca}.crt`] as string,
    requestCert: true,
  });

  it('links two nodes over mutual TLS and carries messages', async () => {
    const a = await Foundation.start({ name: 'tls-a', secret: 's', tls: tls('n1'), logger: silentLogger });
    nodes.push(a);
    const b = await Foundation.start({
      name: 'tls-b',
      secret: 's',
      tls: tls('n2'),
      cluster: { strategy: 'static', hosts: [a.id.address] },
      logger: silentLogger,
    });
    nodes.push(b);
    expect(await waitUp(a, 'tls-b')).toBe(true);
    expect(await waitUp(b, 'tls-a')).toBe(true);
    a.mesh.handle('echo', (p) => p);
    expect(await b.mesh.request('tls-a', 'echo', { over: 'tls' })).toEqual({ over: 'tls' });
  });

  it('refuses a client whose certificate is not signed by the CA', async () => {
    const a = await Foundation.start({ name: 'tls-c', secret: 's', tls: tls('n1'), logger: silentLogger });
    nodes.push(a);
    const x = await Foundation.start({
      name: 'tls-x',
      secret: 's',
      tls: { ...tls('intruder', 'ca') },
      cluster: { strategy: 'static', hosts: [a.id.address] },
      logger: silentLogger,
    });
    nodes.push(x);
    expect(await waitUp(a, 'tls-x', 1000)).toBe(false);
  });

  it('refuses a plain-TCP peer', async () => {
    const a = await Foundation.start({ name: 'tls-d', secret: 's', tls: tls('n1'), logger: silentLogger });
    nodes.push(a);
    const plain = await Foundation.start({ name: 'plain', secret: 's', cluster: { strategy: 'static', hosts: [a.id.address] }, logger: silentLogger });
    nodes.push(plain);
    expect(await waitUp(a, 'plain', 1000)).toBe(false);
  });
});
