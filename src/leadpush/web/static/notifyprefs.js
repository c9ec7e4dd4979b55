// Notification settings editors: a person's channels per kind of notice and quiet hours (/console/account),
// and a team's default quiet hours (/console/users). The server decides what is allowed; the page shows why a
// box cannot be ticked (the admin did not open it, the person is not bound, the company has no such channel).
import { api, clear, h, say, sayError } from './common.js';

const CHANNELS = [['wechat', '微信小程序'], ['wecom', '企业微信']];
const MODE_TEXT = { none: '不设置', custom: '自定义', working_hours: '工作时间以外', team: '跟随团队' };

export function quietText(mode, start, end) {
  if (mode === 'custom' && start && end) return `${start}–${end}`;
  return MODE_TEXT[mode] ?? mode;
}

// Why `channel` cannot be changed for `category`, or '' when it can.
function blocked(prefs, category, channel) {
  const status = prefs.channels.find((c) => c.channel === channel);
  if (!status.configured) return `公司未配置${status.name}`;
  if (!category.allowedChannels.includes(channel)) return '管理员未开放';
  if (!status.bound) return `未绑定${status.name}`;
  return '';
}

// Wires the 通知设置 section of /console/account for the signed-in person. Returns load().
export function preferencesEditor({ url = '/api/me/notification-preferences' } = {}) {
  const body = document.querySelector('#notify-channels tbody');
  const status = document.getElementById('notify-status');
  const quietStatus = document.getElementById('quiet-status');
  const form = document.getElementById('quiet-form');
  const start = document.getElementById('q-start');
  const end = document.getElementById('q-end');
  const urgent = document.getElementById('q-urgent');
  document.getElementById('quiet-tz').textContent = document.body.dataset.timezone || 'Asia/Shanghai';
  let prefs = null;

  async function save(changes, target, what) {
    try {
      const r = await api(url, { method: 'PUT', body: changes });
      show(r.data);
      say(`${r.message}${what ? `：${what}` : ''}`, false, target);
    } catch (error) {
      sayError(error, target);
      if (prefs) show(prefs); // back to what is stored
    }
  }

  function row(category) {
    const cells = CHANNELS.map(([channel, name]) => {
      const id = `pref-${category.category}-${channel}`;
      const why = blocked(prefs, category, channel);
      const box = h('input', {
        type: 'checkbox', id, dataset: { channel },
        'aria-label': `${category.name}：${name}`,
      });
      box.checked = category.effectiveChannels.includes(channel);
      box.disabled = Boolean(why);
      box.addEventListener('change', () => {
        // The person's choice: the boxes they may tick, as they are now (a bound-but-unticked one stays off).
        const chosen = category.allowedChannels.filter((c) => document.getElementById(`pref-${category.category}-${c}`).checked);
        const turned = box.checked ? `开启${name}` : `关闭${name}`;
        save({ channels: { [category.category]: chosen } }, status, `${category.name}（${turned}）`);
      });
      return h('td', { 'data-label': name }, box, why ? h('span', { class: 'muted', text: ` ${why}` }) : null);
    });
    const custom = category.chosenChannels !== null;
    const reset = h('button', {
      type: 'button', text: '恢复默认', 'aria-label': `恢复默认：${category.name}`, disabled: !custom,
    });
    reset.disabled = !custom;
    reset.addEventListener('click', () => save({ channels: { [category.category]: null } }, status, `${category.name}已恢复默认`));
    return h('tr', { dataset: { category: category.category } },
      h('th', { scope: 'row', text: category.name }),
      ...cells,
      h('td', { 'data-label': '设置', text: custom ? '已自定义' : '默认' }),
      h('td', { class: 'actions' }, reset),
    );
  }

  function show(data) {
    prefs = data;
    clear(body);
    for (const category of data.categories) body.appendChild(row(category));
    const unbound = data.channels.filter((c) => c.configured && !c.bound).map((c) => `未绑定${c.name}`);
    document.getElementById('notify-bindings').textContent = unbound.length
      ? `${unbound.join('，')}：绑定后才能收到该渠道的推送（企业微信扫码登录或在小程序内登录即可绑定）。`
      : '';
    for (const radio of form.querySelectorAll('input[name="quietMode"]')) radio.checked = radio.value === data.quietMode;
    start.value = data.quietStart ?? '';
    end.value = data.quietEnd ?? '';
    urgent.checked = data.urgentOverride;
    const team = data.teamDefault;
    document.getElementById('q-team-text').textContent = team
      ? `（${team.teamName}：${quietText(team.quietMode, team.quietStart, team.quietEnd)}）`
      : '（未加入团队：不设置）';
  }

  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const mode = form.querySelector('input[name="quietMode"]:checked')?.value ?? 'team';
    const changes = { quietMode: mode, urgentOverride: urgent.checked };
    if (mode === 'custom') {
      if (!start.value || !end.value) {
        say('自定义免打扰时段需要同时填写开始和结束时间', true, quietStatus);
        (start.value ? end : start).focus();
        return;
      }
      changes.quietStart = start.value;
      changes.quietEnd = end.value;
    }
    save(changes, quietStatus, quietText(mode, changes.quietStart, changes.quietEnd));
  });

  return async function load() {
    show((await api(url)).data);
  };
}

// Wires the team default quiet hours card of /console/users (#team-quiet-form). teams(): the teams the signed-in
// person may set (admins all, a manager their own). Returns load(), to call once the teams are known.
export function teamQuietEditor(teams) {
  const form = document.getElementById('team-quiet-form');
  const select = document.getElementById('tq-team');
  const mode = document.getElementById('tq-mode');
  const start = document.getElementById('tq-start');
  const end = document.getElementById('tq-end');
  const status = document.getElementById('team-quiet-status');
  const times = () => { start.disabled = end.disabled = mode.value !== 'custom'; };
  mode.addEventListener('change', times);

  function show(data) {
    mode.value = data.quietMode;
    start.value = data.quietStart ?? '';
    end.value = data.quietEnd ?? '';
    times();
  }

  async function loadTeam() {
    if (!select.value) return;
    try {
      show((await api(`/api/teams/${select.value}/notification-defaults`)).data);
    } catch (error) {
      sayError(error, status);
    }
  }
  select.addEventListener('change', loadTeam);

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const body = { quietMode: mode.value };
    if (mode.value === 'custom') {
      if (!start.value || !end.value) {
        say('自定义免打扰时段需要同时填写开始和结束时间', true, status);
        (start.value ? end : start).focus();
        return;
      }
      body.quietStart = start.value;
      body.quietEnd = end.value;
    }
    try {
      const r = await api(`/api/teams/${select.value}/notification-defaults`, { method: 'PUT', body });
      show(r.data);
      say(`${r.message}：${quietText(r.data.quietMode, r.data.quietStart, r.data.quietEnd)}`, false, status);
    } catch (error) {
      sayError(error, status);
    }
  });

  return async function load() {
    const shown = teams();
    const current = select.value;
    clear(select);
    for (const t of shown) select.appendChild(h('option', { value: t.id, text: t.name }));
    form.hidden = !shown.length;
    document.getElementById('team-quiet-none').hidden = Boolean(shown.length);
    if (shown.some((t) => String(t.id) === current)) select.value = current;
    await loadTeam();
  };
}
