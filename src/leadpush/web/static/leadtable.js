// What the leads table and the public pool share: row selection, paging, assigning the selected rows.
import { api, h, say, sayError } from './common.js';

export const PAGE_SIZE = 20;

export class Selection {
  constructor({ selectAll, counter, onChange }) {
    this.rows = new Map(); // id -> customer (for its version)
    this.boxes = new Map();
    this.selectAll = selectAll;
    this.counter = counter;
    this.onChange = onChange;
    selectAll?.addEventListener('change', () => {
      for (const [id, box] of this.boxes) {
        box.checked = selectAll.checked;
        this.toggle(id, box.checked, box.closest('tr'));
      }
      this.update();
    });
  }

  reset() {
    this.rows.clear();
    this.boxes.clear();
    if (this.selectAll) this.selectAll.checked = false;
    this.update();
  }

  // A checkbox cell for one customer row.
  cell(customer, row) {
    const box = h('input', { type: 'checkbox', value: customer.id, 'aria-label': `选择线索：${customer.name}` });
    box.addEventListener('change', () => {
      this.toggle(customer.id, box.checked, row, customer);
      this.update();
    });
    this.boxes.set(customer.id, box);
    this.rows.set(customer.id, { customer, selected: false });
    return h('td', { class: 'select-col' }, box);
  }

  toggle(id, on, row, customer) {
    const entry = this.rows.get(id) || { customer };
    entry.selected = on;
    this.rows.set(id, entry);
    row?.classList.toggle('selected', on);
  }

  selected() {
    return [...this.rows.values()].filter((e) => e.selected).map((e) => e.customer);
  }

  update() {
    const n = this.selected().length;
    if (this.counter) this.counter.textContent = n ? `已选择 ${n} 条` : '未选择线索';
    if (this.selectAll) this.selectAll.checked = n > 0 && n === this.boxes.size;
    this.onChange?.(n);
  }
}

export class Pager {
  constructor(onPage) {
    this.page = 1;
    this.pages = 1;
    this.prev = document.getElementById('prev-page');
    this.next = document.getElementById('next-page');
    this.info = document.getElementById('page-info');
    this.prev.addEventListener('click', () => onPage(this.page - 1));
    this.next.addEventListener('click', () => onPage(this.page + 1));
  }

  show(total, page, pageSize) {
    this.page = page;
    this.pages = Math.max(1, Math.ceil(total / pageSize));
    this.info.textContent = `第 ${page} / ${this.pages} 页，共 ${total} 条`;
    this.prev.disabled = page <= 1;
    this.next.disabled = page >= this.pages;
  }
}

function failureText(failed) {
  return failed.map((f) => `#${f.customerId}：${f.message}`).join('；');
}

// Assigns the selected customers: one → PATCH …/assign (with its version), several → the batch endpoint.
export async function assignSelected({ customers, assignedTo, batchPath }) {
  if (!customers.length) {
    say('请先勾选要分配的线索', true);
    return false;
  }
  if (!assignedTo) {
    say('请选择接收线索的人', true);
    return false;
  }
  try {
    let message;
    if (customers.length === 1 && batchPath === '/api/customers/batch-assign') {
      const c = customers[0];
      const r = await api(`/api/customers/${c.id}/assign`, { method: 'PATCH', body: { assignedTo, version: c.version } });
      message = r.message;
    } else {
      const r = await api(batchPath, { method: 'POST', body: { customerIds: customers.map((c) => c.id), assignedTo } });
      message = r.message + (r.data.failed.length ? `。失败原因：${failureText(r.data.failed)}` : '');
      if (r.data.failed.length) {
        say(message, true);
        return true;
      }
    }
    say(message);
    return true;
  } catch (error) {
    sayError(error);
    return false;
  }
}

export function emptyRow(columns, text) {
  return h('tr', { class: 'empty-row' }, h('td', { colspan: columns, text }));
}
