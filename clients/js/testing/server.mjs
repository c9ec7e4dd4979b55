// Starts a real leadpush server for the tests (loopback only), creates users, calls its API.
import { spawn, execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
export const REPO = resolve(here, '..', '..', '..');
export const PYTHON = process.env.LEADPUSH_PYTHON || join(REPO, '.venv', 'bin', 'python');
export const TEMPLATE_ID = 'TID';

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export async function waitFor(check, { timeout = 10000, interval = 20, what = 'condition' } = {}) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeout} ms waiting for ${what}`);
    await sleep(interval);
  }
}

export function freePort() {
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

export class LeadpushServer {
  constructor() {
    this.dir = mkdtempSync(join(tmpdir(), 'leadpush-js-'));
    this.db = `sqlite:///${join(this.dir, 't.db')}`;
    this.port = null;
    this.proc = null;
    this.log = '';
  }

  get url() {
    return `http://127.0.0.1:${this.port}`;
  }

  env() {
    const env = {};
    for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('LEADPUSH_')) env[k] = v;
    return {
      ...env,
      PYTHONPATH: join(REPO, 'src') + (env.PYTHONPATH ? `:${env.PYTHONPATH}` : ''),
      LEADPUSH_DATABASE_URL: this.db,
      LEADPUSH_WECHAT_TEMPLATE_ID: TEMPLATE_ID,
      LEADPUSH_LOG_LEVEL: 'WARNING',
    };
  }

  /** Start (or start again, on the same port and database). */
  async start() {
    if (this.port === null) this.port = await freePort();
    const proc = spawn(PYTHON, ['-m', 'leadpush.cli', 'serve', '--host', '127.0.0.1', '--port', String(this.port)], {
      env: this.env(),
      cwd: this.dir,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.proc = proc;
    const orphan = () => proc.kill('SIGKILL'); // never leave a server behind if the test process dies
    process.once('exit', orphan);
    proc.once('exit', () => process.off('exit', orphan));
    proc.stdout.on('data', (d) => (this.log += d));
    proc.stderr.on('data', (d) => (this.log += d));
    const exited = new Promise((r) => proc.once('exit', (code) => r(code)));
    proc.exited = exited;
    const deadline = Date.now() + 30000;
    for (;;) {
      const code = await Promise.race([exited, sleep(100).then(() => undefined)]);
      if (code !== undefined) throw new Error(`leadpush serve exited with ${code}:\n${this.log}`);
      try {
        const res = await fetch(`${this.url}/healthz`);
        if (res.ok) return this;
      } catch {
        /* not up yet */
      }
      if (Date.now() > deadline) throw new Error(`leadpush serve did not answer /healthz:\n${this.log}`);
    }
  }

  /** Kill the process outright (SIGKILL): open sockets and long polls just break. */
  async kill() {
    const proc = this.proc;
    this.proc = null;
    if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
    proc.kill('SIGKILL');
    await proc.exited;
  }

  async close() {
    await this.kill();
    rmSync(this.dir, { recursive: true, force: true });
  }

  cli(args) {
    return new Promise((res, rej) => {
      execFile(PYTHON, ['-m', 'leadpush.cli', ...args], { env: this.env(), cwd: this.dir }, (err, stdout, stderr) => {
        if (err) rej(new Error(`leadpush ${args.join(' ')} failed: ${stderr || err.message}`));
        else res(stdout);
      });
    });
  }

  async createUser(name, role, team = 'A') {
    const out = await this.cli(['user', 'create', '--name', name, '--role', role, '--team', team, '--json']);
    return JSON.parse(out);
  }

  async api(token, method, path, body) {
    const res = await fetch(this.url + path, {
      method,
      headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const env = await res.json();
    if (!res.ok || !env.success) throw new Error(`${method} ${path} → ${res.status} ${JSON.stringify(env)}`);
    return env.data;
  }

  /**
   * Several users: an admin through the CLI (`leadpush user create --json`), then the rest
   * through the admin's `POST /api/users` (a Python process per user is slow on a busy machine).
   */
  async createUsers(specs) {
    if (!this.admin) this.admin = await this.createUser('管理员', 'admin');
    const made = [];
    for (const [name, role, team = 'A'] of specs) {
      const data = await this.api(this.admin.token, 'POST', '/api/users', { name, role, team });
      made.push({ ...data.user, token: data.token });
    }
    return made;
  }

  /** A manager creates a lead and assigns it: the sales user gets a customer_assigned. */
  async assignLead(manager, userId, name, phone = '13800000000', source = '抖音') {
    const lead = await this.api(manager.token, 'POST', '/api/customers', { name, phone, source });
    await this.api(manager.token, 'PATCH', `/api/customers/${lead.id}/assign`, { assignedTo: userId });
    return lead;
  }

  /** Every notification of the user, as the server has them. */
  async notificationsOf(user) {
    const page = await this.api(user.token, 'GET', '/api/notifications?after=0&limit=500');
    return page.items;
  }
}

/** Records what a client emits. */
export function record(client) {
  const seen = { notifications: [], unread: [], states: [] };
  client.on('notification', (n) => seen.notifications.push(n));
  client.on('unread', (n) => seen.unread.push(n));
  client.on('state', (s) => seen.states.push(s));
  seen.ids = () => seen.notifications.map((n) => n.id);
  return seen;
}

export function assertStrictlyIncreasing(ids) {
  for (let i = 1; i < ids.length; i++) {
    if (!(ids[i] > ids[i - 1])) throw new Error(`ids not strictly increasing: ${ids.join(',')}`);
  }
}
