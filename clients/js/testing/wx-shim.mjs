// A `wx` object for Node, enough for leadpush-client: connectSocket/SocketTask on Node's
// WebSocket, request on fetch, synchronous storage in a Map, requestSubscribeMessage answering
// a preset result. Like WeChat, `request` succeeds for any HTTP status and fails only when the
// request itself fails.
export function createWx({ storage = new Map(), subscribeResult, refusedUrl } = {}) {
  const wx = {
    storage,
    refuseSockets: false, // when true, sockets go to `refusedUrl` (a port nobody listens on)
    failSockets: false, // when true, connectSocket calls its `fail` callback and the task stays silent
    refusedUrl,
    sockets: [], // every URL passed to connectSocket
    subscribeCalls: [],
    onSubscribeCall: null,

    connectSocket({ url, success, fail }) {
      wx.sockets.push(url);
      const target = wx.refuseSockets ? wx.refusedUrl : url;
      const cbs = { open: [], message: [], close: [], error: [] };
      const silent = { onOpen() {}, onMessage() {}, onClose() {}, onError() {}, send() {}, close() {} };
      if (wx.failSockets) {
        setTimeout(() => fail && fail({ errMsg: 'connectSocket:fail url not in domain list' }), 0);
        return silent;
      }
      let ws;
      try {
        ws = new WebSocket(target);
      } catch (e) {
        setTimeout(() => fail && fail({ errMsg: `connectSocket:fail ${e.message}` }), 0);
        return silent;
      }
      ws.onopen = () => cbs.open.forEach((f) => f({ header: {} }));
      ws.onmessage = (e) => cbs.message.forEach((f) => f({ data: e.data }));
      ws.onclose = (e) => cbs.close.forEach((f) => f({ code: e.code, reason: e.reason }));
      ws.onerror = (e) => cbs.error.forEach((f) => f({ errMsg: (e && e.message) || 'socket error' }));
      setTimeout(() => success && success({ errMsg: 'connectSocket:ok' }), 0);
      return {
        onOpen: (f) => cbs.open.push(f),
        onMessage: (f) => cbs.message.push(f),
        onClose: (f) => cbs.close.push(f),
        onError: (f) => cbs.error.push(f),
        send({ data, success: ok, fail: bad }) {
          try {
            ws.send(data);
            if (ok) ok({ errMsg: 'sendSocketMessage:ok' });
          } catch (e) {
            if (bad) bad({ errMsg: `sendSocketMessage:fail ${e.message}` });
            else throw e;
          }
        },
        close({ code, reason } = {}) {
          try {
            ws.close(code, reason);
          } catch {
            ws.close();
          }
        },
      };
    },

    request({ url, method = 'GET', data, header = {}, timeout = 60000, dataType = 'json', success, fail, complete }) {
      const ctrl = new AbortController();
      const timer = setTimeout(() => ctrl.abort(), timeout);
      const init = { method, headers: header, signal: ctrl.signal };
      if (data !== undefined && method !== 'GET') init.body = typeof data === 'string' ? data : JSON.stringify(data);
      fetch(url, init)
        .then(async (res) => {
          const text = await res.text();
          let body = text;
          if (dataType === 'json') {
            try {
              body = JSON.parse(text);
            } catch {
              /* stays a string */
            }
          }
          const r = { statusCode: res.status, data: body, header: Object.fromEntries(res.headers), errMsg: 'request:ok' };
          if (success) success(r);
          if (complete) complete(r);
        })
        .catch((e) => {
          const r = { errMsg: `request:fail ${ctrl.signal.aborted ? 'abort' : e.message}` };
          if (fail) fail(r);
          if (complete) complete(r);
        })
        .finally(() => clearTimeout(timer));
      return { abort: () => ctrl.abort() };
    },

    getStorageSync: (key) => (storage.has(key) ? storage.get(key) : ''),
    setStorageSync: (key, value) => void storage.set(key, value),

    requestSubscribeMessage({ tmplIds, success, fail }) {
      wx.subscribeCalls.push(tmplIds);
      if (wx.onSubscribeCall) wx.onSubscribeCall(tmplIds);
      const result = subscribeResult || { errMsg: 'requestSubscribeMessage:ok', ...Object.fromEntries(tmplIds.map((t) => [t, 'accept'])) };
      setTimeout(() => (result.errMsg.endsWith(':ok') ? success && success(result) : fail && fail(result)), 5);
    },
  };
  return wx;
}
