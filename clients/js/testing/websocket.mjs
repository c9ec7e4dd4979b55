// Node's WebSocket is global from Node 22; Node 20.10+ has it behind --experimental-websocket.
// Imported first by the tests that need it: under an older-style `node --test test/` on Node 20,
// this re-runs the test file with the flag (same environment, output passed straight through to
// the test runner) and exits with its status. No npm dependency needed.
import { spawnSync } from 'node:child_process';

if (typeof globalThis.WebSocket !== 'function' && !process.env.LEADPUSH_JS_WS_REEXEC) {
  const r = spawnSync(process.execPath, ['--experimental-websocket', ...process.execArgv, ...process.argv.slice(1)], {
    stdio: 'inherit',
    env: { ...process.env, LEADPUSH_JS_WS_REEXEC: '1' },
  });
  if (r.error) console.error(r.error);
  process.exit(r.status === null ? 1 : r.status);
}
if (typeof globalThis.WebSocket !== 'function') {
  throw new Error(`this Node (${process.version}) has no WebSocket, even with --experimental-websocket (needs >= 20.10)`);
}
