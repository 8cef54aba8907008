// Harness for the browser tests: builds parley, runs `parley serve` on a free
// loopback port with a fresh data dir, and launches Debian's Chromium
// through playwright-core.

import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, mkdirSync, rmSync, existsSync, createWriteStream } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { deflateSync } from 'node:zlib';
import { chromium } from 'playwright-core';

export const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const artifacts = join(repoRoot, 'test-artifacts', 'browser');

export const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
export const CHROMIUM_ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];

// buildParley compiles the server once per run into dir.
export function buildParley(dir) {
  const bin = join(dir, 'parley');
  execFileSync('go', ['build', '-o', bin, './runtime/cmd/parley'], { cwd: repoRoot, stdio: 'inherit' });
  return bin;
}

function freePort() {
  return new Promise((res, rej) => {
    const s = createServer();
    s.unref();
    s.on('error', rej);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => res(port));
    });
  });
}

export async function waitFor(what, fn, timeoutMs = 20000, everyMs = 100) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${last ? `: ${last.message}` : ''}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

// Server is one `parley serve` process; start() again after stop() reuses
// its port and data dir (a restart).
export class Server {
  constructor(bin, args = []) {
    this.bin = bin;
    this.args = args;
    this.dataDir = mkdtempSync(join(tmpdir(), 'parley-browser-'));
    this.proc = null;
  }

  get url() {
    return `http://127.0.0.1:${this.port}`;
  }

  async start() {
    const restart = !!this.port;
    if (!restart) this.port = await freePort();
    mkdirSync(artifacts, { recursive: true });
    const log = createWriteStream(join(artifacts, 'server.log'), { flags: restart ? 'a' : 'w' });
    this.proc = spawn(this.bin, ['serve', '--addr', `127.0.0.1:${this.port}`, '--data-dir', this.dataDir, ...this.args], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.proc.stdout.pipe(log);
    this.proc.stderr.pipe(log);
    const exited = new Promise((res) => this.proc.once('exit', (code, sig) => res({ code, sig })));
    this.exited = exited;
    let gone = null;
    exited.then((x) => { gone = x; });
    await waitFor('parley /readyz', async () => {
      if (gone) throw new Error(`parley exited (${gone.code ?? gone.sig}); see ${join(artifacts, 'server.log')}`);
      const r = await fetch(`${this.url}/readyz`);
      return r.ok;
    }, 30000);
  }

  // stop sends SIGTERM (the server drains: clients get reconnect frames)
  // and waits for the exit, killing it after timeoutMs.
  async stop(timeoutMs = 15000) {
    if (!this.proc || this.proc.exitCode !== null) return;
    this.proc.kill('SIGTERM');
    const t = setTimeout(() => this.proc.kill('SIGKILL'), timeoutMs);
    await this.exited;
    clearTimeout(t);
  }

  cleanup() {
    rmSync(this.dataDir, { recursive: true, force: true });
  }

  async rest(method, path, { token, body } = {}) {
    const headers = { 'Content-Type': 'application/json' };
    if (token) headers.Authorization = `Bearer ${token}`;
    const r = await fetch(this.url + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    const data = await r.json().catch(() => null);
    if (!r.ok) throw new Error(`${method} ${path}: ${r.status} ${JSON.stringify(data)}`);
    return data;
  }

  async token(user) {
    return (await this.rest('POST', '/v1/dev/token', { body: { user, device: 'seed' } })).token;
  }
}

export async function launchBrowser() {
  if (!existsSync(CHROMIUM)) {
    throw new Error(`${CHROMIUM} not found: apt-get install -y chromium (or set CHROMIUM)`);
  }
  return chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS, headless: true });
}

// ---- a PNG made here, so the test ships no binary file ----

const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

function crc32(buf) {
  let c = 0xffffffff;
  for (const b of buf) c = CRC_TABLE[(c ^ b) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function chunk(type, data) {
  const len = Buffer.alloc(4);
  len.writeUInt32BE(data.length);
  const td = Buffer.concat([Buffer.from(type, 'ascii'), data]);
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(td));
  return Buffer.concat([len, td, crc]);
}

// makePNG returns an RGB PNG of w×h: a diagonal gradient, so a rendered
// screenshot shows it plainly.
export function makePNG(w = 96, h = 64) {
  const raw = Buffer.alloc((w * 3 + 1) * h);
  for (let y = 0; y < h; y++) {
    const row = y * (w * 3 + 1);
    raw[row] = 0; // filter: none
    for (let x = 0; x < w; x++) {
      const i = row + 1 + x * 3;
      raw[i] = Math.round((255 * x) / (w - 1));
      raw[i + 1] = Math.round((255 * y) / (h - 1));
      raw[i + 2] = 200;
    }
  }
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(w, 0);
  ihdr.writeUInt32BE(h, 4);
  ihdr[8] = 8; // bit depth
  ihdr[9] = 2; // colour type: RGB
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', ihdr),
    chunk('IDAT', deflateSync(raw)),
    chunk('IEND', Buffer.alloc(0)),
  ]);
}
