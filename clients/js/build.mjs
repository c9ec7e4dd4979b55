// Builds the kit's two generated copies from src/leadpush-client.mjs. No dependencies.
//
// - dist/leadpush-client.cjs (CommonJS, for the WeChat mini program): the module's top-level
//   `export` keywords are dropped and a `module.exports` listing the same names is appended.
// - src/leadpush/web/static/leadpush-client.mjs (an exact copy, inside the Python package): the web
//   console serves it, so an installed leadpush (a wheel, the Docker image) needs no repository.
//
//   node build.mjs           write both
//   node build.mjs --check   exit 1 if either is not what the source builds to
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
export const SOURCE = join(here, 'src', 'leadpush-client.mjs');
export const TARGET = join(here, 'dist', 'leadpush-client.cjs');
export const CONSOLE_COPY = join(here, '..', '..', 'src', 'leadpush', 'web', 'static', 'leadpush-client.mjs');

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

/** Each generated file and what it must contain. */
export function outputs() {
  return [
    [TARGET, build()],
    [CONSOLE_COPY, readFileSync(SOURCE, 'utf8')],
  ];
}

function readOrEmpty(path) {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return ''; // missing
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const check = process.argv.includes('--check');
  let stale = false;
  for (const [path, content] of outputs()) {
    if (!check) {
      writeFileSync(path, content);
      console.log(`wrote ${path}`);
    } else if (readOrEmpty(path) !== content) {
      console.error(`${relative(here, path)} is out of date: run \`node build.mjs\``);
      stale = true;
    }
  }
  if (stale) process.exit(1);
}
