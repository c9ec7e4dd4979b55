// /console/customers: managers see the leads table with filters and assign selected rows;
// salespeople see their own leads.
import {
  api, assignees, boot, clear, customerLink, fillOptions, fillUserSelect, fmtTime, formValues, fromUrl, h, pill,
  sayError, toUrl,
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

function row(c) {
  const tr = h('tr', { dataset: { customerId: c.id } });
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
  } catch (error) {
    sayError(error);
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

await load();
document.body.dataset.ready = 'true';
