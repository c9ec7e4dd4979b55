// WeCom sign-in (企业微信登录) on the sign-in page. Imported by login.js, so it runs first.
// - Back from WeCom with a new session: the server put the token into a <meta> element of a no-store page
//   (never a URL); keep it like any session token and go on to where the person was headed.
// - Otherwise: offer the 企业微信登录 button when the server has WeCom configured; inside WeCom's own browser
//   (user agent "wxwork") start at once, unless the person just signed out or WeCom sign-in just failed.
import { api, h, setToken } from './common.js';

// Only ever into the console (no open redirect); the same rule as the server's.
export function consolePath(next) {
  return /^\/console(\/|\?|$)/.test(next || '') && !next.includes('\\') && !next.startsWith('/console/login')
    && !next.startsWith('/console/auth/') ? next : '/console';
}

async function offerWecom(params) {
  const box = document.getElementById('wecom-login');
  if (!box) return;
  let options;
  try {
    options = (await api('/console/api/login-options', { token: null })).data;
  } catch {
    return; // the password form still works
  }
  if (!options || !options.wecom) return;
  const next = params.get('next');
  const href = '/console/auth/wecom' + (next ? '?next=' + encodeURIComponent(consolePath(next)) : '');
  box.replaceChildren(
    h('p', { class: 'or', text: '或' }),
    h('a', { class: 'wecom-button', href, text: '企业微信登录' }),
  );
  const failed = document.getElementById('wecom-error');
  if (/wxwork/i.test(navigator.userAgent) && !params.has('signedOut') && !failed) location.assign(href);
}

const session = document.querySelector('meta[name="leadpush-session"]');
if (session) {
  const next = document.querySelector('meta[name="leadpush-next"]');
  setToken(session.getAttribute('content'));
  session.remove();
  // replace: the callback's address (with its spent code) does not stay in the history.
  location.replace(consolePath(next && next.getAttribute('content')));
} else {
  if (document.getElementById('wecom-error')) {
    // The callback's address carries a spent code and state: show the plain sign-in address instead.
    history.replaceState(null, '', '/console/login');
  }
  offerWecom(new URLSearchParams(location.search));
}
