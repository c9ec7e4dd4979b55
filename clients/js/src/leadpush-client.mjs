/**
 * leadpush-client — in-app notifications from a leadpush server, for the web page and the
 * WeChat mini program. One dependency-free module; the mini program uses the CommonJS build in
 * dist/ (generated from this file by build.mjs — edit this file, then run `node build.mjs`).
 *
 *   const client = createClient({ baseUrl, token, transport: wxTransport(wx) });
 *   client.on('notification', (n) => ...);   // each notification once, in id order
 *   client.on('unread', (count) => ...);
 *   client.on('state', (state) => ...);      // connecting | open | polling | reconnecting | stopped | unauthorized
 *   client.start();
 *
 * Protocol: WebSocket `/ws?token=` (hello → resume from the last id seen → replay → unread →
 * live), falling back to long-polling `GET /api/notifications?after=&wait=` while the socket
 * cannot be held, and probing the socket again from time to time. See README.md.
 *
 * Written for old JavaScript engines too (the mini program's): no optional chaining, no `??`,
 * no class fields, no URL/URLSearchParams, no imports.
 */

export const VERSION = '1.0.0';

export const STATES = ['connecting', 'open', 'polling', 'reconnecting', 'stopped', 'unauthorized'];

const DEFAULTS = {
  storageKey: 'leadpush.lastId',
  ackOnShow: true,
  pollWait: 25, // seconds the server holds a long poll open (0..30)
  pollLimit: 100,
  backoff: { base: 1000, max: 30000 }, // ms; exponential with jitter
  fallbackAfter: 3, // consecutive WebSocket failures before long-polling
  holdMs: 5000, // a socket closed sooner than this after its hello counts as a failure
  upgradeInterval: 60000, // ms between attempts to get back to WebSocket while polling
  connectTimeout: 10000, // ms to get the server's hello after opening a socket
  idleTimeout: 70000, // ms without any frame (the server sends a heartbeat every 25 s)
};

// 1008: the token was refused at connect; 4401: it was revoked (or the user deactivated) while open.
const WS_UNAUTHORIZED = [1008, 4401];
// Too many failed sign-ins from this client's address: the server's lockout ends within a minute.
const WS_LOCKED_OUT = 4429;

function globalObject() {
  if (typeof globalThis !== 'undefined') return globalThis;
  if (typeof self !== 'undefined') return self;
  if (typeof window !== 'undefined') return window;
  return {};
}

function now() {
  return Date.now();
}

function parseJson(text) {
  if (typeof text !== 'string') return text;
  if (text === '') return null;
  try {
    return JSON.parse(text);
  } catch (e) {
    return null;
  }
}

function trimSlash(s) {
  return String(s).replace(/\/+$/, '');
}

function toIdList(ids) {
  if (ids === undefined || ids === null) return undefined;
  const list = Array.isArray(ids) ? ids : [ids];
  return list.map(Number).filter((n) => Number.isInteger(n) && n > 0);
}

/**
 * Exponential backoff with "equal jitter": a delay in [d/2, d] where d = min(max, base·2^attempt).
 */
export function backoffDelay(attempt, backoff, random) {
  const base = (backoff && backoff.base) || DEFAULTS.backoff.base;
  const max = (backoff && backoff.max) || DEFAULTS.backoff.max;
  const d = Math.min(max, base * Math.pow(2, Math.max(0, attempt)));
  const r = random ? random() : Math.random();
  return Math.round(d / 2 + (d / 2) * r);
}

/**
 * A refused or failed request: `message` (Chinese, for the user), `code` (machine-readable, e.g.
 * `validation_error`), HTTP `status`, and the envelope's `data` (details, e.g. which field).
 */
export class LeadpushError extends Error {
  constructor(message, code, status, data) {
    super(message);
    this.name = 'LeadpushError';
    this.code = code;
    this.status = status;
    this.data = data === undefined ? null : data;
  }
}

/**
 * The error for an answer that is not a success. The server's error envelope is
 * `{success: false, message, code, data}`: `code` and `message` are at its top level (`data` holds
 * details). An answer that is not an envelope (a proxy's HTML error page) is `http_error`.
 */
function errorFromAnswer(status, env) {
  const isEnvelope = env !== null && typeof env === 'object';
  const message = isEnvelope && typeof env.message === 'string' && env.message ? env.message : '请求失败（HTTP ' + status + '）';
  const code = isEnvelope && typeof env.code === 'string' && env.code ? env.code : 'http_error';
  return new LeadpushError(message, code, status, isEnvelope ? env.data : null);
}

function adaptStorage(s) {
  if (!s) return memoryStorage();
  if (typeof s.get === 'function' && typeof s.set === 'function') return s;
  if (typeof s.getItem === 'function' && typeof s.setItem === 'function') {
    return {
      get: (k) => s.getItem(k),
      set: (k, v) => s.setItem(k, v),
    };
  }
  throw new TypeError('storage must have get/set or getItem/setItem');
}

/** A storage that lives as long as the page (used when nothing better exists). */
export function memoryStorage() {
  const map = {};
  return {
    get: (k) => (Object.prototype.hasOwnProperty.call(map, k) ? map[k] : null),
    set: (k, v) => {
      map[k] = String(v);
    },
  };
}

/**
 * The browser (or any runtime with WebSocket and fetch): `browserTransport()` uses the globals;
 * each of `WebSocket`, `fetch`, `localStorage` may be given instead (null: not available).
 */
export function browserTransport(options) {
  const opts = options || {};
  const g = globalObject();
  const WS = 'WebSocket' in opts ? opts.WebSocket : g.WebSocket;
  const fetchFn = opts.fetch || (typeof g.fetch === 'function' ? g.fetch.bind(g) : null);
  let ls = null;
  if ('localStorage' in opts) {
    ls = opts.localStorage;
  } else {
    try {
      ls = g.localStorage || null; // may throw in sandboxed frames
    } catch (e) {
      ls = null;
    }
  }
  if (!fetchFn) throw new TypeError('browserTransport needs fetch');
  return {
    name: 'browser',
    defaultBaseUrl: g.location && g.location.origin && g.location.origin !== 'null' ? g.location.origin : undefined,
    storage: ls ? adaptStorage(ls) : memoryStorage(),
    openSocket: WS
      ? function openSocket(url, h) {
          const ws = new WS(url);
          let done = false;
          let errTimer = null;
          const finish = (code, reason) => {
            if (done) return;
            done = true;
            if (errTimer) clearTimeout(errTimer);
            h.onClose({ code: code || 1006, reason: reason || '' });
          };
          ws.onopen = () => {
            if (h.onOpen) h.onOpen();
          };
          ws.onmessage = (e) => {
            if (typeof e.data === 'string') h.onMessage(e.data);
          };
          ws.onclose = (e) => finish(e.code, e.reason);
          // Some implementations report a refused connection with an error and no close event;
          // give a real close (which carries the code, e.g. 1008) a moment to arrive first.
          ws.onerror = () => {
            if (errTimer || done) return;
            errTimer = setTimeout(() => {
              try {
                ws.close();
              } catch (e) {
                /* already closing */
              }
              finish(1006, 'error');
            }, 50);
          };
          return {
            send: (text) => ws.send(text),
            close: (code, reason) => {
              done = true;
              if (errTimer) clearTimeout(errTimer);
              try {
                ws.close(code || 1000, reason || '');
              } catch (e) {
                /* not open yet */
              }
            },
          };
        }
      : null,
    request(req) {
      const ctrl = typeof AbortController === 'function' ? new AbortController() : null;
      const timer = req.timeout && ctrl ? setTimeout(() => ctrl.abort(), req.timeout) : null;
      const init = { method: req.method, headers: req.headers };
      if (req.body !== undefined) init.body = req.body;
      if (ctrl) init.signal = ctrl.signal;
      const promise = fetchFn(req.url, init)
        .then((res) => res.text().then((text) => ({ status: res.status, data: parseJson(text) })))
        .then(
          (r) => {
            if (timer) clearTimeout(timer);
            return r;
          },
          (err) => {
            if (timer) clearTimeout(timer);
            throw err;
          },
        );
      return { promise, abort: () => ctrl && ctrl.abort() };
    },
    requestSubscribeMessage: null,
  };
}

function wxError(res, fallback) {
  const e = new Error((res && res.errMsg) || fallback);
  if (res && res.errCode !== undefined) e.errCode = res.errCode;
  return e;
}

/** The WeChat mini program: `wxTransport(wx)`. */
export function wxTransport(wx) {
  if (!wx || typeof wx.request !== 'function') throw new TypeError('wxTransport needs the wx object');
  return {
    name: 'wx',
    defaultBaseUrl: undefined,
    storage: {
      get: (k) => {
        const v = wx.getStorageSync(k);
        return v === '' || v === undefined || v === null ? null : String(v);
      },
      set: (k, v) => wx.setStorageSync(k, v),
    },
    openSocket:
      typeof wx.connectSocket === 'function'
        ? function openSocket(url, h) {
            let done = false;
            let errTimer = null;
            const finish = (code, reason) => {
              if (done) return;
              done = true;
              if (errTimer) clearTimeout(errTimer);
              h.onClose({ code: code || 1006, reason: reason || '' });
            };
            const task = wx.connectSocket({
              url,
              fail: (res) => setTimeout(() => finish(1006, (res && res.errMsg) || 'connectSocket:fail'), 0),
            });
            if (!task || typeof task.onMessage !== 'function') throw new Error('wx.connectSocket gave no SocketTask');
            task.onOpen(() => {
              if (h.onOpen) h.onOpen();
            });
            task.onMessage((res) => {
              if (res && typeof res.data === 'string') h.onMessage(res.data);
            });
            task.onClose((res) => finish(res && res.code, res && res.reason));
            task.onError((res) => {
              if (errTimer || done) return;
              errTimer = setTimeout(() => {
                try {
                  task.close({});
                } catch (e) {
                  /* ignore */
                }
                finish(1006, (res && res.errMsg) || 'error');
              }, 50);
            });
            return {
              send: (text) => task.send({ data: text }),
              close: (code, reason) => {
                done = true;
                if (errTimer) clearTimeout(errTimer);
                try {
                  task.close({ code: code || 1000, reason: reason || '' });
                } catch (e) {
                  /* ignore */
                }
              },
            };
          }
        : null,
    request(req) {
      let task = null;
      const promise = new Promise((resolve, reject) => {
        const params = {
          url: req.url,
          method: req.method,
          header: req.headers,
          dataType: 'json',
          success: (res) => resolve({ status: res.statusCode, data: parseJson(res.data) }),
          fail: (res) => reject(wxError(res, 'request:fail')),
        };
        if (req.body !== undefined) params.data = req.body;
        if (req.timeout) params.timeout = req.timeout;
        task = wx.request(params);
      });
      return {
        promise,
        abort: () => {
          if (task && typeof task.abort === 'function') task.abort();
        },
      };
    },
    // Must run synchronously inside the tap handler: WeChat refuses it otherwise.
    requestSubscribeMessage:
      typeof wx.requestSubscribeMessage === 'function'
        ? (tmplIds) =>
            new Promise((resolve, reject) => {
              wx.requestSubscribeMessage({
                tmplIds,
                success: resolve,
                fail: (res) => reject(wxError(res, 'requestSubscribeMessage:fail')),
              });
            })
        : null,
  };
}

function defaultTransport() {
  /* global wx */
  if (typeof wx !== 'undefined' && wx && typeof wx.connectSocket === 'function') return wxTransport(wx);
  return browserTransport();
}

/**
 * The client. Options: baseUrl, token, transport, storage, storageKey, ackOnShow, pollWait,
 * pollLimit, backoff {base, max}, fallbackAfter, holdMs, upgradeInterval, connectTimeout,
 * idleTimeout, wsUrl, random. See README.md.
 */
export class LeadpushClient {
  constructor(options) {
    const o = options || {};
    if (!o.token) throw new TypeError('token is required');
    this._transport = o.transport || defaultTransport();
    const base = o.baseUrl !== undefined && o.baseUrl !== null && o.baseUrl !== '' ? o.baseUrl : this._transport.defaultBaseUrl;
    if (!base) throw new TypeError('baseUrl is required');
    this._baseUrl = trimSlash(base);
    this._wsUrl = o.wsUrl ? String(o.wsUrl) : this._baseUrl.replace(/^http/i, 'ws') + '/ws';
    this._token = String(o.token);
    this._storage = adaptStorage(o.storage || this._transport.storage);
    const opt = {};
    Object.keys(DEFAULTS).forEach((k) => {
      opt[k] = o[k] !== undefined ? o[k] : DEFAULTS[k];
    });
    opt.backoff = {
      base: (o.backoff && o.backoff.base) || DEFAULTS.backoff.base,
      max: (o.backoff && o.backoff.max) || DEFAULTS.backoff.max,
    };
    opt.pollWait = Math.max(0, Math.min(30, Number(opt.pollWait)));
    this._opt = opt;
    this._random = typeof o.random === 'function' ? o.random : Math.random;

    this._listeners = {};
    this._state = 'stopped';
    this._running = false;
    this._run = 0; // bumped by start/stop: callbacks of an older run are ignored
    this._pollGen = 0; // bumped whenever a polling loop must end
    this._timers = [];
    this._mode = null; // 'ws' | 'poll'
    this._sock = null; // the socket in use (record, see _openSocket)
    this._probe = null; // a socket being tried while polling
    this._probeTimer = null;
    this._reconnectTimer = null;
    this._pollTimer = null;
    this._pollReq = null;
    this._wsFailures = 0;
    this._pollFailures = 0;
    this._pollFailedSinceProbe = false;
    this._userId = null;
    this._lastId = 0;
    this._loadedFor = null; // user id whose stored last id is loaded
    this._unread = null;
    this._acks = [];
    this._ackTimer = null;
  }

  // ---- public API -------------------------------------------------------------------------

  get state() {
    return this._state;
  }

  /** 'ws' or 'poll' while running, else null. */
  get mode() {
    return this._running ? this._mode : null;
  }

  get lastId() {
    return this._lastId;
  }

  get unread() {
    return this._unread;
  }

  get userId() {
    return this._userId;
  }

  on(event, fn) {
    (this._listeners[event] = this._listeners[event] || []).push(fn);
    return () => this.off(event, fn);
  }

  off(event, fn) {
    const list = this._listeners[event];
    if (!list) return;
    const i = list.indexOf(fn);
    if (i >= 0) list.splice(i, 1);
  }

  start() {
    if (this._running) return this;
    this._running = true;
    this._run += 1;
    this._wsFailures = 0;
    this._pollFailures = 0;
    this._setState('connecting');
    if (this._transport.openSocket) this._connect();
    else this._enterPolling();
    return this;
  }

  stop() {
    this._shutdown('stopped');
    return this;
  }

  /** Try again now (e.g. on wx.onAppShow or the browser's `online` event) instead of waiting. */
  reconnect() {
    if (!this._running) return;
    if (this._mode === 'ws' && this._sock) {
      // A socket that looks open may have died while the app slept: it must answer a ping soon.
      const rec = this._sock;
      if (rec.hello && !rec.closed && this._send(rec, { type: 'ping' })) rec.arm(Math.min(5000, this._opt.idleTimeout));
    } else if (this._mode === 'ws') {
      this._clear('_reconnectTimer');
      this._connect();
    } else if (this._mode === 'poll') {
      if (this._pollTimer !== null) {
        this._clear('_pollTimer');
        this._pollOnce(this._pollGen);
      }
      if (this._transport.openSocket && !this._probe) {
        this._clear('_probeTimer');
        this._openSocket(true);
      }
    }
  }

  /** Mark notifications read (no ids: all). Resolves with the unread count. */
  markRead(ids) {
    const list = toIdList(ids);
    return this._http('POST', '/api/notifications/read', list === undefined ? {} : { ids: list }).then((data) => {
      if (data && typeof data.unread === 'number') this._setUnread(data.unread);
      return data ? data.unread : undefined;
    });
  }

  /**
   * Ask for WeChat subscribe-message credits: calls wx.requestSubscribeMessage({tmplIds}) right
   * away (call this from a tap handler) and posts the result map as-is to
   * POST /api/wechat/subscriptions. Resolves with the server's answer
   * ({templateId, credits, added, templates, subscriptions, prompt, hint}): `prompt` is
   * 'enable_in_settings' (the user switched subscription messages off: show `hint`, e.g. then
   * wx.openSetting), 'ask_again' (rejected, filtered or no credit left: ask on a later tap) or null.
   */
  requestCredits(templateIds) {
    const ids = Array.isArray(templateIds) ? templateIds : [templateIds];
    if (!this._transport.requestSubscribeMessage) {
      return Promise.reject(new LeadpushError('requestCredits needs the mini program (wx.requestSubscribeMessage)', 'unsupported'));
    }
    let asked;
    try {
      asked = this._transport.requestSubscribeMessage(ids); // synchronously, inside the tap
    } catch (e) {
      return Promise.reject(e);
    }
    return Promise.resolve(asked).then((result) => this._http('POST', '/api/wechat/subscriptions', result));
  }

  /**
   * The signed-in user's subscribe-message credits and what to prompt: GET /api/wechat/subscriptions
   * ({templateId, credits, templates, subscriptions, prompt, hint}, as requestCredits resolves with).
   * Works on every transport (read-only).
   */
  credits() {
    return this._http('GET', '/api/wechat/subscriptions');
  }

  // ---- events and state -------------------------------------------------------------------

  _emit(event, value) {
    const list = (this._listeners[event] || []).slice();
    for (let i = 0; i < list.length; i++) {
      try {
        list[i].call(this, value);
      } catch (err) {
        if (event !== 'error' && this._listeners.error && this._listeners.error.length) this._emit('error', err);
        else if (typeof console !== 'undefined') console.error(err);
      }
    }
  }

  _setState(s) {
    if (this._state === s) return;
    this._state = s;
    this._emit('state', s);
  }

  _setUnread(n) {
    if (typeof n !== 'number' || n === this._unread) return;
    this._unread = n;
    this._emit('unread', n);
  }

  _later(fn, ms) {
    const run = this._run;
    const entry = { id: null };
    entry.id = setTimeout(() => {
      const i = this._timers.indexOf(entry);
      if (i >= 0) this._timers.splice(i, 1);
      if (run === this._run && this._running) fn();
    }, Math.max(0, ms));
    this._timers.push(entry);
    return entry;
  }

  _clear(name) {
    const entry = this[name];
    if (entry) {
      clearTimeout(entry.id);
      const i = this._timers.indexOf(entry);
      if (i >= 0) this._timers.splice(i, 1);
    }
    this[name] = null;
  }

  _shutdown(finalState) {
    const wasRunning = this._running;
    if (wasRunning && this._acks.length) this._flushAcks(); // over the socket if open, else HTTP
    this._running = false;
    this._run += 1;
    this._pollGen += 1;
    this._timers.forEach((t) => clearTimeout(t.id));
    this._timers = [];
    this._probeTimer = this._reconnectTimer = this._pollTimer = this._ackTimer = null;
    [this._sock, this._probe].forEach((rec) => {
      if (rec) this._closeSocket(rec, 1000, 'client stop');
    });
    this._sock = this._probe = null;
    if (this._pollReq) this._pollReq.abort();
    this._pollReq = null;
    this._mode = null;
    if (wasRunning || finalState === 'unauthorized') this._setState(finalState);
  }

  _unauthorized() {
    if (this._state === 'unauthorized') return;
    this._shutdown('unauthorized');
  }

  // ---- the last id seen ---------------------------------------------------------------------

  _storageKey(userId) {
    return this._opt.storageKey + ':' + userId;
  }

  _learnUser(userId) {
    if (this._loadedFor === userId) return;
    if (this._loadedFor !== null && this._loadedFor !== userId) this._lastId = 0; // another user's ids
    this._userId = userId;
    this._loadedFor = userId;
    let stored = 0;
    try {
      stored = parseInt(this._storage.get(this._storageKey(userId)), 10) || 0;
    } catch (e) {
      stored = 0;
    }
    if (stored > this._lastId) this._lastId = stored;
  }

  _saveLastId(force) {
    if (this._userId === null) return;
    const key = this._storageKey(this._userId);
    try {
      // Another page of the same site may be further along: never move the stored id back.
      if (!force && (parseInt(this._storage.get(key), 10) || 0) >= this._lastId) return;
      this._storage.set(key, String(this._lastId));
    } catch (e) {
      /* storage full or unavailable: the in-memory id still prevents repeats in this run */
    }
  }

  /** Emit one notification unless already seen. Returns true when emitted. */
  _deliver(n, live) {
    if (!n || typeof n.id !== 'number' || n.id <= this._lastId) return false;
    this._lastId = n.id;
    this._saveLastId(); // before the listeners run: never shown twice, even after a crash
    const out = {};
    Object.keys(n).forEach((k) => {
      if (k !== 'prevId') out[k] = n[k];
    });
    if (this._opt.ackOnShow) this._queueAck(n.id);
    if (live && !n.readAt && typeof this._unread === 'number') this._setUnread(this._unread + 1);
    this._emit('notification', out);
    return true;
  }

  // ---- acks ---------------------------------------------------------------------------------

  _queueAck(id) {
    this._acks.push(id);
    if (!this._ackTimer) this._ackTimer = this._later(() => this._flushAcks(), 0);
  }

  _flushAcks() {
    this._clear('_ackTimer');
    if (!this._acks.length) return;
    const ids = this._acks.splice(0, 1000);
    if (this._sock && this._sock.hello && !this._sock.closed) {
      try {
        this._sock.handle.send(JSON.stringify({ type: 'ack', ids }));
        if (this._acks.length) this._ackTimer = this._later(() => this._flushAcks(), 0);
        return;
      } catch (e) {
        /* fall through to HTTP */
      }
    }
    this._http('POST', '/api/notifications/ack', { ids }).then(
      () => {
        if (this._acks.length && !this._ackTimer && this._running) this._ackTimer = this._later(() => this._flushAcks(), 0);
      },
      () => {
        this._acks = ids.concat(this._acks); // retried on the next connection or poll
      },
    );
  }

  // ---- HTTP ---------------------------------------------------------------------------------

  _request(method, path, body, timeout) {
    const headers = { Authorization: 'Bearer ' + this._token, Accept: 'application/json' };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    const handle = this._transport.request({
      method,
      url: this._baseUrl + path,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      timeout,
    });
    const promise = handle.promise.then((res) => {
      const env = res.data;
      if (res.status === 401) {
        this._unauthorized();
        throw new LeadpushError((env && env.message) || 'unauthorized', 'unauthorized', 401);
      }
      if (res.status >= 400 || !env || env.success === false) throw errorFromAnswer(res.status, env);
      return env.data;
    });
    return { promise, abort: handle.abort };
  }

  _http(method, path, body, timeout) {
    return this._request(method, path, body, timeout || 15000).promise;
  }

  // ---- WebSocket ----------------------------------------------------------------------------

  _connect() {
    this._mode = 'ws';
    this._openSocket(false);
  }

  _openSocket(probe) {
    const run = this._run;
    const rec = { probe, hello: false, synced: false, closed: false, openedAt: 0, handle: null, timer: null, resync: false };
    if (probe) this._probe = rec;
    else this._sock = rec;
    const armTimer = (ms) => {
      if (rec.timer) clearTimeout(rec.timer);
      rec.timer = setTimeout(() => {
        if (rec.closed || run !== this._run) return;
        this._closeSocket(rec, 1000, 'timeout');
        this._socketEnded(rec, 1006);
      }, ms);
    };
    rec.arm = armTimer;
    armTimer(this._opt.connectTimeout);
    const handlers = {
      onOpen: () => {},
      onMessage: (text) => {
        if (rec.closed || run !== this._run) return;
        armTimer(this._opt.idleTimeout);
        this._onSocketMessage(rec, parseJson(text));
      },
      onClose: (ev) => {
        if (rec.closed || run !== this._run) return;
        this._socketEnded(rec, ev && ev.code);
      },
    };
    const url = this._wsUrl + (this._wsUrl.indexOf('?') >= 0 ? '&' : '?') + 'token=' + encodeURIComponent(this._token);
    try {
      rec.handle = this._transport.openSocket(url, handlers);
    } catch (e) {
      setTimeout(() => handlers.onClose({ code: 1006, reason: String(e) }), 0);
    }
  }

  _closeSocket(rec, code, reason) {
    rec.closed = true;
    if (rec.timer) clearTimeout(rec.timer);
    rec.timer = null;
    if (rec.handle) {
      try {
        rec.handle.close(code, reason);
      } catch (e) {
        /* ignore */
      }
    }
  }

  _send(rec, msg) {
    try {
      rec.handle.send(JSON.stringify(msg));
      return true;
    } catch (e) {
      return false;
    }
  }

  _onSocketMessage(rec, msg) {
    if (!msg || typeof msg !== 'object') return;
    if (msg.type === 'hello') {
      const data = msg.data || {};
      rec.hello = true;
      rec.openedAt = now();
      if (typeof data.userId === 'number') this._learnUser(data.userId);
      // Ids never go backwards on one server; if they did (database reset), do not wait forever.
      if (typeof data.latestId === 'number' && data.latestId < this._lastId) {
        this._lastId = data.latestId;
        this._saveLastId(true);
      }
      this._send(rec, { type: 'resume', after: this._lastId });
      if (rec.probe) this._upgrade(rec);
      this._setState('open');
      if (this._acks.length) this._flushAcks();
      return;
    }
    if (!rec.hello) return;
    if (msg.type === 'unread') {
      rec.synced = true; // the replay after resume is complete
      if (msg.data) this._setUnread(msg.data.unread);
      return;
    }
    if (msg.type === 'heartbeat' || msg.type === 'pong') return;
    if (msg.type === 'error') {
      this._emit('error', new LeadpushError(msg.message || 'server error', msg.code));
      return;
    }
    if (typeof msg.id !== 'number') return;
    if (rec.synced && typeof msg.prevId === 'number' && msg.prevId > this._lastId) {
      // A live notification whose predecessor never arrived: reconnect and replay from the last id.
      rec.resync = true;
      this._closeSocket(rec, 1000, 'resync');
      this._socketEnded(rec, 1000);
      return;
    }
    this._deliver(msg, rec.synced);
  }

  _upgrade(rec) {
    // The probe got its hello: WebSocket works again; stop polling and use this socket.
    this._clear('_probeTimer');
    this._clear('_pollTimer');
    this._pollGen += 1;
    if (this._pollReq) this._pollReq.abort();
    this._pollReq = null;
    rec.probe = false;
    this._probe = null;
    this._sock = rec;
    this._mode = 'ws';
    this._wsFailures = 0;
  }

  _socketEnded(rec, code) {
    rec.closed = true;
    if (rec.timer) clearTimeout(rec.timer);
    rec.timer = null;
    if (WS_UNAUTHORIZED.indexOf(code) >= 0) {
      this._unauthorized();
      return;
    }
    if (rec.probe) {
      if (this._probe === rec) this._probe = null;
      this._scheduleProbe(this._opt.upgradeInterval);
      return;
    }
    if (this._sock !== rec) return;
    this._sock = null;
    if (!this._running) return;
    if (rec.resync) {
      this._setState('reconnecting');
      this._connect();
      return;
    }
    const held = rec.hello && now() - rec.openedAt >= this._opt.holdMs;
    this._wsFailures = held ? 0 : this._wsFailures + 1;
    // A lockout is not a broken socket: polling would be refused the same way, so keep retrying the
    // socket with backoff until the lockout ends.
    if (this._wsFailures >= this._opt.fallbackAfter && code !== WS_LOCKED_OUT) {
      this._enterPolling();
      return;
    }
    this._setState('reconnecting');
    // After a socket that was held (e.g. a server restart), the first retry is quick but jittered,
    // so that every client of a restarted server does not come back at the same instant.
    const delay = backoffDelay(Math.max(0, this._wsFailures - 1), this._opt.backoff, this._random);
    this._reconnectTimer = this._later(() => {
      this._reconnectTimer = null;
      this._connect();
    }, delay);
  }

  // ---- long-polling -------------------------------------------------------------------------

  _enterPolling() {
    this._mode = 'poll';
    this._pollFailures = 0;
    this._pollFailedSinceProbe = false;
    this._pollGen += 1;
    this._setState('polling');
    this._pollOnce(this._pollGen);
    this._scheduleProbe(this._opt.upgradeInterval);
  }

  _scheduleProbe(ms) {
    if (!this._transport.openSocket || this._mode !== 'poll' || !this._running) return;
    this._clear('_probeTimer');
    const jittered = Math.round(ms * (0.75 + 0.5 * this._random()));
    this._probeTimer = this._later(() => {
      this._probeTimer = null;
      if (this._mode === 'poll' && !this._probe) {
        this._pollFailedSinceProbe = false;
        this._openSocket(true);
      }
    }, jittered);
  }

  _pollOnce(gen) {
    this._pollTimer = null;
    if (gen !== this._pollGen || !this._running) return;
    if (this._userId === null) {
      // The stored last id is per user: learn who the token belongs to first.
      this._http('GET', '/api/me').then(
        (me) => {
          if (gen !== this._pollGen) return;
          this._learnUser(me.id);
          this._pollOnce(gen);
        },
        (err) => this._pollFailed(gen, err),
      );
      return;
    }
    const wait = this._opt.pollWait;
    const path =
      '/api/notifications?after=' + this._lastId + '&limit=' + this._opt.pollLimit + '&wait=' + wait;
    const req = this._request('GET', path, undefined, (wait + 15) * 1000);
    const startedAt = now();
    this._pollReq = req;
    req.promise.then(
      (page) => {
        if (this._pollReq === req) this._pollReq = null;
        if (gen !== this._pollGen || !this._running) return;
        this._pollFailures = 0;
        this._setState('polling');
        const items = (page && page.items) || [];
        for (let i = 0; i < items.length; i++) this._deliver(items[i], false);
        if (page && typeof page.unread === 'number') this._setUnread(page.unread);
        if (this._acks.length && !this._ackTimer) this._flushAcks();
        if (this._pollFailedSinceProbe && !this._probe) {
          // The server was unreachable, not just its socket: try WebSocket again right away.
          this._scheduleProbe(0);
        }
        // Straight on while there is more; an empty answer at most once a second (pollWait 0, or
        // a proxy that cuts long requests short).
        const pause = items.length ? 0 : Math.max(0, 1000 - (now() - startedAt));
        this._pollTimer = this._later(() => this._pollOnce(gen), pause);
      },
      (err) => {
        if (this._pollReq === req) this._pollReq = null;
        this._pollFailed(gen, err);
      },
    );
  }

  _pollFailed(gen, err) {
    if (gen !== this._pollGen || !this._running) return;
    if (err && err.code === 'unauthorized') return; // already shut down
    this._pollFailures += 1;
    this._pollFailedSinceProbe = true;
    this._setState('reconnecting');
    const delay = backoffDelay(this._pollFailures - 1, this._opt.backoff, this._random);
    this._pollTimer = this._later(() => this._pollOnce(gen), delay);
  }
}

export function createClient(options) {
  return new LeadpushClient(options);
}
