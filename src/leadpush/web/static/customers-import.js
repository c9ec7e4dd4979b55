// /console/customers/import: choose a CSV / .xlsx file or paste cells copied from Excel, see every row checked
// by the server (a dry run), then create the valid ones in one go. The file goes to the API as it is.
import { api, boot, clear, h, say, sayError } from './common.js';

await boot({ roles: ['admin', 'manager'] });

const XLSX = 'application/vnd.openxmlformats-officedocument.spreadsheetml.sheet';
const MAX_BYTES = Number(document.body.dataset.maxBytes) || 5_000_000;
const fileInput = document.getElementById('file');
const paste = document.getElementById('paste');
const previewCard = document.getElementById('preview-card');
const summaryCard = document.getElementById('summary-card');
const tbody = document.querySelector('#preview tbody');
const importButton = document.getElementById('import-submit');
let pending = null; // what was previewed: { raw, contentType }, sent again to import

// The Content-Type by the file's name: browsers report a .csv as Excel's old type on Windows, or nothing.
function contentTypeOf(file) {
  const name = file.name.toLowerCase();
  if (name.endsWith('.xlsx')) return XLSX;
  if (name.endsWith('.csv')) return 'text/csv';
  if (name.endsWith('.tsv') || name.endsWith('.txt')) return 'text/tab-separated-values';
  return file.type || 'application/octet-stream';
}

// The verdict and its reasons in one cell, next to the row number: on a phone it is what shows first.
function verdict(row) {
  const out = row.errors.map((e) => h('li', { class: 'problem', text: e.message }));
  for (const w of row.warnings) out.push(h('li', { class: 'warning', text: `提示：${w}` }));
  return [
    h('span', { class: `pill ${row.ok ? 'on' : 'off'}`, text: row.ok ? '可导入' : '有错误' }),
    out.length ? h('ul', { class: 'issues' }, out) : null,
  ];
}

function previewRow(row) {
  const v = row.values;
  const cls = [row.ok ? 'ok' : 'bad', row.warnings.length ? 'warn' : ''].join(' ').trim();
  const owner = v.assigneeName ?? (v.assignee || '公海');
  return h('tr', { class: cls, dataset: { row: row.row } },
    h('th', { scope: 'row', text: row.row }),
    h('td', { class: 'verdict' }, verdict(row)),
    h('td', { text: v.name || '—' }),
    h('td', { text: v.phone || '—' }),
    h('td', { text: v.source || '—' }),
    h('td', { text: owner }),
  );
}

function showPreview(result) {
  clear(tbody);
  for (const row of result.rows) tbody.appendChild(previewRow(row));
  if (!result.rows.length) tbody.appendChild(h('tr', { class: 'empty-row' }, h('td', { colspan: 6, text: '表头下面没有数据行' })));
  document.getElementById('counts').replaceChildren(
    h('span', { class: 'count good', text: `可导入 ${result.valid} 条` }), ' / ',
    h('span', { class: 'count bad', text: `有错误 ${result.invalid} 条` }),
    result.invalid ? '（有错误的行不会导入，可改正后重新选择文件）' : '',
  );
  const ignored = document.getElementById('ignored');
  ignored.hidden = !result.ignoredColumns.length;
  ignored.textContent = `已忽略的列：${result.ignoredColumns.join('、')}`;
  importButton.textContent = `导入 ${result.valid} 条`;
  importButton.disabled = result.valid === 0;
  previewCard.hidden = false;
  summaryCard.hidden = true;
  previewCard.scrollIntoView({ block: 'start' }); // on a phone the preview is below the fold
}

async function preview(upload) {
  pending = null;
  previewCard.hidden = true;
  summaryCard.hidden = true;
  if (upload.size > MAX_BYTES) {
    say(`文件不能超过 ${MAX_BYTES / 1_000_000} MB，请拆分后分批导入`, true);
    return;
  }
  say('正在检查…');
  try {
    const r = await api('/api/customers/import', {
      method: 'POST', raw: upload.raw, contentType: upload.contentType, query: { dryRun: 'true' },
    });
    pending = upload;
    say('');
    showPreview(r.data);
  } catch (error) {
    sayError(error);
  }
}

fileInput.addEventListener('change', () => {
  const file = fileInput.files[0];
  if (file) preview({ raw: file, contentType: contentTypeOf(file), size: file.size });
});

function previewPasted() {
  const text = paste.value;
  if (!text.trim()) {
    say('请先粘贴从 Excel 复制的单元格', true);
    return;
  }
  fileInput.value = '';
  preview({ raw: text, contentType: 'text/tab-separated-values; charset=utf-8', size: new Blob([text]).size });
}

document.getElementById('paste-form').addEventListener('submit', (event) => {
  event.preventDefault();
  previewPasted();
});
// Pasting is the whole gesture: preview as soon as the cells are in.
paste.addEventListener('paste', () => setTimeout(previewPasted));

document.getElementById('only-bad').addEventListener('change', (event) => {
  document.getElementById('preview').classList.toggle('only-bad', event.target.checked);
});

importButton.addEventListener('click', async () => {
  if (!pending) return;
  importButton.disabled = true;
  say('正在导入…');
  try {
    const r = await api('/api/customers/import', {
      method: 'POST', raw: pending.raw, contentType: pending.contentType, query: { dryRun: 'false' },
    });
    const skipped = r.data.skipped;
    const rows = skipped.length > 10 ? `第 ${skipped.slice(0, 10).join('、')} 等行` : `第 ${skipped.join('、')} 行`;
    document.getElementById('summary').textContent =
      `已导入 ${r.data.created.length} 条线索` + (skipped.length ? `，跳过 ${skipped.length} 行有错误的数据（${rows}）。` : '。');
    say('');
    pending = null;
    previewCard.hidden = true;
    summaryCard.hidden = false;
    document.getElementById('summary-title').focus();
  } catch (error) {
    sayError(error);
    importButton.disabled = false;
  }
});

document.getElementById('import-another').addEventListener('click', () => {
  summaryCard.hidden = true;
  fileInput.value = '';
  paste.value = '';
  fileInput.focus();
});

document.body.dataset.ready = 'true';
