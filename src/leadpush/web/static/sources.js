// /console/sources (admins): lead sources for forms, ad platforms and other systems. Create one (its intake token
// and signing secret are shown once, with copy buttons and a curl example), rotate both, enable or disable it,
// delete it, and edit its field mapping and what happens when a phone repeats an open lead.
import { api, boot, clear, deleteButton, h, pill, say, sayError } from './common.js';

await boot({ roles: ['admin'] });

const POLICIES = { merge: '合并到已有线索并通知负责人', flag: '新建并标记疑似重复' };
const FIELDS = ['name', 'phone', 'region', 'tags', 'note', 'externalId'];

const body = document.querySelector('#sources tbody');
const editor = document.getElementById('editor');
let sources = [];
let editing = null;

for (const select of document.querySelectorAll('.policy-select')) {
  for (const [value, text] of Object.entries(POLICIES)) select.appendChild(h('option', { value, text }));
}

// --- field mapping as text: one "incoming = leadpush field" per line -------------------------------------------

function mappingText(mapping) {
  return Object.entries(mapping || {}).map(([from, to]) => `${from} = ${to}`).join('\n');
}

function parseMapping(text) {
  const mapping = {};
  for (const [n, raw] of text.split('\n').entries()) {
    const line = raw.trim();
    if (!line) continue;
    const at = line.lastIndexOf('=');
    const from = at > 0 ? line.slice(0, at).trim() : '';
    const to = at > 0 ? line.slice(at + 1).trim() : '';
    if (!from || !FIELDS.includes(to)) {
      throw new Error(`字段映射第 ${n + 1} 行格式不正确：应为「来源字段 = ${FIELDS.join(' / ')}」`);
    }
    mapping[from] = to;
  }
  return mapping;
}

function tagsOf(text) {
  return text.split(/[,，]/).map((t) => t.trim()).filter(Boolean);
}

// --- the one-time token and secret ----------------------------------------------------------------------------

function curlExample(data) {
  return [
    `curl -X POST '${data.inboundUrl}' \\`,
    `  -H 'Authorization: Bearer ${data.token}' \\`,
    "  -H 'Content-Type: application/json' \\",
    `  -d '{"name": "张三", "phone": "13800138000", "externalId": "form-001"}'`,
  ].join('\n');
}

function showSecrets(data, what) {
  const box = document.getElementById('secrets-box');
  document.getElementById('secrets-for').textContent = `「${data.source.name}」${what}：`;
  document.getElementById('secret-token').value = data.token;
  document.getElementById('secret-signing').value = data.signingSecret;
  document.getElementById('secret-form-url').value = data.formUrl;
  document.getElementById('secret-curl').value = curlExample(data);
  box.hidden = false;
  box.scrollIntoView({ block: 'nearest' });
  box.focus();
}

document.getElementById('secrets-close').addEventListener('click', () => {
  for (const id of ['secret-token', 'secret-signing', 'secret-form-url', 'secret-curl']) document.getElementById(id).value = '';
  document.getElementById('secrets-box').hidden = true;
});

for (const button of document.querySelectorAll('button.copy')) {
  button.addEventListener('click', async () => {
    const field = document.getElementById(button.dataset.copy);
    try {
      await navigator.clipboard.writeText(field.value);
      say('已复制到剪贴板');
    } catch {
      // No clipboard access (permission, an old browser): leave it selected for Ctrl+C.
      field.focus();
      field.select();
      say('无法自动复制，内容已选中，请按 Ctrl+C（手机上长按）复制', true);
    }
  });
}

// --- the list -------------------------------------------------------------------------------------------------

// A button that asks once more, in the page: the first click arms it for five seconds.
function confirmButton(text, armedText, ariaLabel, onConfirm) {
  const button = h('button', { type: 'button', text, 'aria-label': ariaLabel });
  let armed = null;
  button.addEventListener('click', async () => {
    if (!armed) {
      button.textContent = armedText;
      armed = setTimeout(() => { armed = null; button.textContent = text; }, 5000);
      return;
    }
    clearTimeout(armed);
    armed = null;
    button.textContent = text;
    await onConfirm();
  });
  return button;
}

async function act(call, after) {
  try {
    const r = await call();
    await load();
    say(r.message);
    if (after) after(r);
  } catch (error) {
    sayError(error);
  }
}

function sourceRow(source) {
  const mapping = Object.entries(source.fieldMapping).map(([from, to]) => `${from} → ${to}`).join('；') || '—（按同名字段读取）';
  const defaults = [source.defaultRegion, source.defaultTags.join('、')].filter(Boolean).join(' / ') || '—';
  const toggle = h('button', {
    type: 'button',
    text: source.enabled ? '停用' : '启用',
    'aria-label': `${source.enabled ? '停用' : '启用'}来源：${source.name}`,
    onclick: () => act(() => api(`/api/lead-sources/${source.id}`, { method: 'PATCH', body: { enabled: !source.enabled } })),
  });
  const rotate = confirmButton('轮换令牌', '确认轮换？旧令牌立即失效', `轮换令牌：${source.name}`, () =>
    act(() => api(`/api/lead-sources/${source.id}/rotate`, { method: 'POST' }), (r) => showSecrets(r.data, '的新接入令牌和签名密钥')));
  const remove = deleteButton(`删除来源：${source.name}`, () =>
    act(() => api(`/api/lead-sources/${source.id}`, { method: 'DELETE' })));
  const edit = h('button', { type: 'button', text: '编辑', 'aria-label': `编辑来源：${source.name}`, onclick: () => openEditor(source) });
  return h('tr', { dataset: { sourceId: source.id }, class: source.enabled ? null : 'inactive' },
    h('td', { 'data-label': '名称' }, h('strong', { text: source.name })),
    h('td', { 'data-label': '来源标识', text: source.key }),
    h('td', { 'data-label': '字段映射', text: mapping }),
    h('td', { 'data-label': '电话重复时', text: POLICIES[source.duplicatePolicy] }),
    h('td', { 'data-label': '默认地区 / 标签', text: defaults }),
    h('td', { 'data-label': '令牌' }, h('code', { text: `${source.tokenPrefix}…` })),
    h('td', { 'data-label': '状态' }, pill('', source.enabled ? 'on' : 'off', source.enabled ? '接收中' : '已停用')),
    h('td', { class: 'action-cell', 'data-label': '操作' }, h('div', { class: 'actions' }, edit, toggle, rotate, remove)),
  );
}

async function load() {
  sources = (await api('/api/lead-sources')).data;
  clear(body);
  if (!sources.length) body.appendChild(h('tr', { class: 'empty-row' }, h('td', { colspan: 8, text: '还没有线索来源：在下方新建一个' })));
  for (const source of sources) body.appendChild(sourceRow(source));
  if (editing && !sources.some((s) => s.id === editing.id)) closeEditor();
}

// --- creating and editing -------------------------------------------------------------------------------------

function fieldsOf(prefix) {
  const value = (name) => document.getElementById(`${prefix}-${name}`).value.trim();
  return {
    name: value('name'),
    key: value('key'),
    duplicatePolicy: document.getElementById(`${prefix}-policy`).value,
    defaultRegion: value('region'),
    defaultTags: tagsOf(value('tags')),
    fieldMapping: parseMapping(document.getElementById(`${prefix}-mapping`).value),
  };
}

const createForm = document.getElementById('create-form');
createForm.addEventListener('submit', async (event) => {
  event.preventDefault();
  let fields;
  try {
    fields = fieldsOf('c');
  } catch (error) {
    sayError(error);
    return;
  }
  await act(() => api('/api/lead-sources', { method: 'POST', body: fields }), (r) => {
    createForm.reset();
    document.getElementById('new-source').open = false;
    showSecrets(r.data, '的接入令牌和签名密钥');
  });
});

function openEditor(source) {
  editing = source;
  document.getElementById('editor-title').textContent = `编辑来源：${source.name}`;
  document.getElementById('e-name').value = source.name;
  document.getElementById('e-key').value = source.key;
  document.getElementById('e-policy').value = source.duplicatePolicy;
  document.getElementById('e-region').value = source.defaultRegion;
  document.getElementById('e-tags').value = source.defaultTags.join(', ');
  document.getElementById('e-mapping').value = mappingText(source.fieldMapping);
  editor.hidden = false;
  editor.scrollIntoView({ block: 'start' });
  document.getElementById('editor-title').focus();
}

function closeEditor() {
  editing = null;
  editor.hidden = true;
}

document.getElementById('edit-cancel').addEventListener('click', closeEditor);
document.getElementById('edit-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  let fields;
  try {
    fields = fieldsOf('e');
  } catch (error) {
    sayError(error);
    return;
  }
  const id = editing.id;
  await act(() => api(`/api/lead-sources/${id}`, { method: 'PATCH', body: fields }), closeEditor);
});

try {
  await load();
} catch (error) {
  sayError(error);
}
document.body.dataset.ready = 'true';
