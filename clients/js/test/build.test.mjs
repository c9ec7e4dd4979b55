// The generated copies are committed: dist/leadpush-client.cjs for the mini program, and the copy the
// Python package ships for the web console. Each must be what the source builds to.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { test } from 'node:test';
import vm from 'node:vm';
import { CONSOLE_COPY, SOURCE, TARGET, build } from '../build.mjs';

const require = createRequire(import.meta.url);

test('dist/leadpush-client.cjs is up to date with src (run `node build.mjs`)', () => {
  assert.equal(readFileSync(TARGET, 'utf8'), build());
});

test("the web console's packaged copy is the source, byte for byte (run `node build.mjs`)", () => {
  assert.ok(readFileSync(CONSOLE_COPY).equals(readFileSync(SOURCE)), `${CONSOLE_COPY} differs from src`);
});

test('the CommonJS build exports what the ES module exports', async () => {
  const esm = await import('../src/leadpush-client.mjs');
  const cjs = require('../dist/leadpush-client.cjs');
  assert.deepEqual(Object.keys(cjs).sort(), Object.keys(esm).sort());
  assert.equal(typeof cjs.createClient, 'function');
  assert.equal(typeof cjs.wxTransport, 'function');
});

test('the module runs unmodified in a browser and a mini program: no imports, no Node globals', () => {
  const src = readFileSync(SOURCE, 'utf8');
  const code = src.replace(/\/\*[\s\S]*?\*\//g, '').replace(/\/\/.*$/gm, '');
  assert.doesNotMatch(code, /^\s*import\b|\bimport\(/m);
  assert.doesNotMatch(code, /\brequire\(|\bprocess\.|\bBuffer\b|__dirname|\bnode:/);
  // Syntax old engines choke on (the mini program's JavaScriptCore on older iOS).
  assert.doesNotMatch(code, /\?\.|\?\?|#[a-z_]+\s*[=;(]/);
  assert.doesNotMatch(code, /\bURLSearchParams\b|\bnew URL\(/);
});

test('the CommonJS build runs in a bare sandbox like the mini program (module, timers, a wx object)', () => {
  const module = { exports: {} };
  const calls = [];
  const wx = {
    connectSocket: (o) => (calls.push(['connectSocket', o.url]), { onOpen() {}, onMessage() {}, onClose() {}, onError() {}, send() {}, close() {} }),
    request: (o) => (calls.push(['request', o.url]), { abort() {} }),
    getStorageSync: () => '',
    setStorageSync: () => {},
    requestSubscribeMessage: () => {},
  };
  const sandbox = { module, exports: module.exports, wx, setTimeout, clearTimeout, console };
  vm.runInNewContext(readFileSync(TARGET, 'utf8'), sandbox, { filename: 'leadpush-client.js' });
  const { createClient } = module.exports;
  // No transport given: `wx` exists, so the mini-program transport is chosen.
  const client = createClient({ baseUrl: 'https://crm.example.com/', token: 'a b' });
  client.start();
  assert.deepEqual(calls, [['connectSocket', 'wss://crm.example.com/ws?token=a%20b']]);
  client.stop();
  assert.equal(client.state, 'stopped');
});
