// /console/customers: managers see the leads table with filters and assign selected rows;
// salespeople see their own leads. Everyone may create a lead here (salespeople for themselves).
import {
  api, ApiError, assignees, boot, clear, customerLink, fillOptions, fillUserSelect, fmtTime, formValues, fromUrl, h,
  pill, say, sayError, toUrl,
} from './common.js';
import { assignSelected, emptyRow, PAGE_SIZE, Pager, Selection } from './leadtable.js';

const me = await boot();
const staff = me.role !== 'sales';
const form = document.getElementById('filters');
const tbody = document.querySelector('#leads tbody');
const assignForm = document.getElementById('assign-form');
const assignTo = document.getElementById('assign-to');
const FILTERS = staff ? ['owner', 'inPool', 'status', 'source', 'keyword'] : ['status', 'source', 'keyword'];

if (!staff) {
  document.getElementById('page-title').textContent = '我的线索';
  document.title = '我的线索 · leadpush 线索控制台';
}
fillOptions(document.getElementById('f-status'), 'status');
if (staff) {
  const owner = document.getElementById('f-owner');
  owner.appendChild(h('option', { value: 'me', text: '我自己' }));
  try {
    const users = await assignees(me);
    fillUserSelect(owner, users);
    fillUserSelect(assignTo, users);
    fillUserSelect(document.getElementById('c-assignee'), users);
  } catch (error) {
    sayError(error);
  }
}
const params = fromUrl(form, FILTERS);
let page = Math.max(1, Number(params.get('page')) || 1);
const selection = new Selection({
  selectAll: document.getElementById('select-all'),
  counter: document.getElementById('selected-count'),
});
const pager = new Pager((p) => load(p));

let justCreated = null; // the id of the lead made with the form, marked in the list

function row(c) {
  const tr = h('tr', { dataset: { customerId: c.id }, class: c.id === justCreated ? 'just-added' : null });
  if (staff) tr.appendChild(selection.cell(c, tr));
  tr.append(
    h('td', {}, customerLink(c.id, c.name)),
    h('td', { text: c.phone }),
    h('td', { text: c.source || '—' }),
    h('td', {}, pill('status', c.status)),
    h('td', { class: 'owner', text: c.inPool ? '公海' : c.ownerName ?? `#${c.ownerId}` }),
    h('td', { text: fmtTime(c.assignedAt) }),
    h('td', { text: fmtTime(c.lastFollowUpAt) }),
    h('td', { text: fmtTime(c.transferDueAt) }),
  );
  return tr;
}

async function load(p = page) {
  page = p;
  const values = formValues(form);
  const query = Object.fromEntries(FILTERS.map((k) => [k, values[k]]));
  if (!staff) query.owner = 'me';
  toUrl({ ...Object.fromEntries(FILTERS.map((k) => [k, values[k]])), page: page > 1 ? page : '' });
  try {
    const { data } = await api('/api/customers', { query: { ...query, page, pageSize: PAGE_SIZE } });
    selection.reset();
    clear(tbody);
    if (!data.items.length) tbody.appendChild(emptyRow(staff ? 9 : 8, '没有符合条件的线索'));
    for (const c of data.items) tbody.appendChild(row(c));
    pager.show(data.total, data.page, data.pageSize);
    return data.items;
  } catch (error) {
    sayError(error);
    return [];
  }
}

form.addEventListener('submit', (event) => {
  event.preventDefault();
  load(1);
});
form.addEventListener('reset', () => setTimeout(() => load(1)));
assignForm.addEventListener('submit', async (event) => {
  event.preventDefault();
  const done = await assignSelected({
    customers: selection.selected(),
    assignedTo: Number(assignTo.value) || null,
    batchPath: '/api/customers/batch-assign',
  });
  if (done) await load();
});

// --- 新建线索: an in-page form; errors are shown next to their field ----------------------------------------

const createCard = document.getElementById('create-card');
const createForm = document.getElementById('create-form');
const newLead = document.getElementById('new-lead');
const createStatus = document.getElementById('create-status');
const FIELDS = { name: 'c-name', phone: 'c-phone', source: 'c-source', assignedTo: 'c-assignee' };

function showCreate(open) {
  createCard.hidden = !open;
  newLead.setAttribute('aria-expanded', String(open));
  if (open) document.getElementById('c-name').focus();
  else newLead.focus();
}

function fieldError(name, message) {
  const input = document.getElementById(FIELDS[name]);
  const note = document.getElementById(`${FIELDS[name]}-error`);
  note.textContent = message || '';
  note.hidden = !message;
  if (message) input.setAttribute('aria-invalid', 'true');
  else input.removeAttribute('aria-invalid');
}

function clearFieldErrors() {
  for (const name of Object.keys(FIELDS)) fieldError(name, '');
  say('', false, createStatus);
}

// Which field an error answer is about: validation errors name theirs; a refused assignee is the 负责人's.
function errorsByField(error) {
  if (error instanceof ApiError && error.code === 'validation_error' && Array.isArray(error.data)) {
    return error.data.filter((e) => FIELDS[e.field]).map((e) => [e.field, e.message]);
  }
  if (error instanceof ApiError && staff && ['forbidden', 'user_not_found'].includes(error.code)) {
    return [['assignedTo', error.message]];
  }
  return [];
}

newLead.addEventListener('click', () => showCreate(createCard.hidden));
document.getElementById('create-cancel').addEventListener('click', () => showCreate(false));
createForm.addEventListener('submit', async (event) => {
  event.preventDefault();
  clearFieldErrors();
  const values = formValues(createForm);
  const missing = [['name', '请填写姓名'], ['phone', '请填写电话']].filter(([k]) => !values[k]);
  for (const [name, message] of missing) fieldError(name, message);
  if (missing.length) {
    document.getElementById(FIELDS[missing[0][0]]).focus();
    return;
  }
  const body = { name: values.name, phone: values.phone, source: values.source };
  if (staff && values.assignedTo) body.assignedTo = Number(values.assignedTo);
  if (!staff) body.assignedTo = me.id;
  const submit = document.getElementById('create-submit');
  submit.disabled = true;
  try {
    const { data } = await api('/api/customers', { method: 'POST', body });
    justCreated = data.id;
    say(`已创建线索：${data.name}（${data.inPool ? '公海' : data.ownerName}）`, false, createStatus);
    document.getElementById('c-name').value = '';
    document.getElementById('c-phone').value = '';
    const items = await load(1);
    if (!items.some((c) => c.id === data.id)) {
      form.reset(); // the filters hid it: show everything, newest first
      await load(1);
    }
    document.getElementById('c-name').focus();
  } catch (error) {
    const byField = errorsByField(error);
    for (const [name, message] of byField) fieldError(name, message);
    if (byField.length) document.getElementById(FIELDS[byField[0][0]]).focus();
    else sayError(error, createStatus);
  } finally {
    submit.disabled = false;
  }
});

await load();
document.body.dataset.ready = 'true';
