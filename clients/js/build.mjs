// Builds dist/leadpush-client.cjs (CommonJS, for the WeChat mini program) from
// src/leadpush-client.mjs. No dependencies: the module's top-level `export` keywords are
// dropped and a `module.exports` listing the same names is appended.
//
//   node build.mjs           write dist/leadpush-client.cjs
//   node build.mjs --check   exit 1 if dist/ is not what the source builds to
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
export const SOURCE = join(here, 'src', 'leadpush-client.mjs');
export const TARGET = join(here, 'dist', 'leadpush-client.cjs');

export function render(source) {
  const names = [];
  const body = source.replace(/^export (const|let|function|class) ([A-Za-z_$][\w$]*)/gm, (_, kind, name) => {
    names.push(name);
    return `${kind} ${name}`;
  });
  const leftover = body.match(/^\s*(export|import)\b.*$/m);
  if (leftover) throw new Error(`build.mjs cannot convert this line: ${leftover[0]}`);
  return (
    '// Generated from src/leadpush-client.mjs by build.mjs: do not edit (run `node build.mjs`).\n' +
    "'use strict';\n\n" +
    body.replace(/\s*$/, '\n') +
    `\nmodule.exports = { ${names.join(', ')} };\n`
  );
}

export function build() {
  return render(readFileSync(SOURCE, 'utf8'));
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const out = build();
  if (process.argv.includes('--check')) {
    let current = '';
    try {
      current = readFileSync(TARGET, 'utf8');
    } catch {
      /* missing */
    }
    if (current !== out) {
      console.error('dist/leadpush-client.cjs is out of date: run `node build.mjs`');
      process.exit(1);
    }
  } else {
    writeFileSync(TARGET, out);
    console.log(`wrote ${TARGET}`);
  }
}
