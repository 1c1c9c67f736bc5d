/**
 * `pnpm --filter @mcp-auth-stack/server build`: the production entries, `dist/main.cjs` (the
 * server: a small loader that runs the bundle `dist/server.cjs` from a V8 code cache,
 * src/bundle-loader.ts) and `dist/keys-cli.mjs` (`pnpm keys`, for the image), each bundle one
 * JavaScript file with this project's packages and their dependencies. Development runs the
 * TypeScript sources (`node src/main.ts`); images run the bundle, which saves what running the
 * sources costs at every start: Node's type stripping (its WebAssembly stripper and the stripped
 * copies) and the resolution of hundreds of modules. Measured: idle RSS 128-132 MB from the
 * sources against 80 MB from the bundle, key mode on PostgreSQL (docs/performance.md).
 *
 * Left out of the bundle, loaded only when used, from their places in the tree (so `dist/`
 * must stay inside the installed workspace, as it does in the image):
 * - the embedded database (`packages/database/src/embedded.ts` and PGlite, whose WebAssembly
 *   and data files are found next to its own modules): only without DATABASE_URL, `require`d;
 * - the OpenTelemetry SDK and exporters, which `packages/telemetry` loads with `require` from
 *   its own directory: only when an exporter is configured;
 * - `pg`, but only when Postgres spans are recorded: the OpenTelemetry instrumentation patches
 *   pg's modules as Node's `require` loads them, which it cannot do to a copy inside the bundle,
 *   so the bundle then `require`s pg from `packages/database`, after the telemetry set-up.
 *   Otherwise it runs its own copy, which saves resolving and reading pg's files at every start
 *   (22-24 ms against 8-11, docs/performance.md).
 *
 *   node apps/server/build.ts [--out-dir <dir>]
 */
import { readFile, writeFile } from 'node:fs/promises';
import Module from 'node:module';
import { dirname, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { type Plugin, rolldown } from 'rolldown';

const here = dirname(fileURLToPath(import.meta.url));
const { values } = parseArgs({ options: { 'out-dir': { type: 'string' } } });
const outDir = resolve(values['out-dir'] ?? resolve(here, 'dist'));
const embeddedSource = resolve(here, '../../packages/database/src/embedded.ts');
const telemetrySetup = resolve(here, '../../packages/telemetry/src/setup.ts');

/** An import specifier from the bundle to a file of the tree, relative to the output directory. */
const fromBundle = (file: string) => {
  const path = relative(outDir, file).split('\\').join('/');
  return path.startsWith('.') ? path : `./${path}`;
};

/**
 * The module every `import pg from 'pg'` of the bundle gets: pg `require`d from the tree when
 * the telemetry set-up (which the entry runs first) instruments it, the bundle's copy otherwise.
 */
const PG_MODULE = '\0pg';
/** What `import('./embedded.ts')` gets: the embedded database, `require`d from the tree when used. */
const EMBEDDED_MODULE = '\0embedded';
const databaseSource = resolve(here, '../../packages/database/src/index.ts');

const keepOutside: Plugin = {
  name: 'keep-outside',
  async resolveId(source, importer) {
    if (importer && resolve(dirname(importer), source) === embeddedSource) return EMBEDDED_MODULE;
    // pg's optional native binding, which pg requires only if `pg.native` is read.
    if (source === 'pg-native') return { id: source, external: true };
    if (source !== 'pg' || !importer) return null;
    // The bundle's copy: pg itself, resolved from the database package.
    if (importer === PG_MODULE) return this.resolve('pg', databaseSource, { skipSelf: true, kind: 'require-call' });
    return PG_MODULE;
  },
  load(id) {
    if (id === EMBEDDED_MODULE) {
      // `require` (Node loads the TypeScript file and PGlite's modules), not `import()`: the
      // server's bundle runs as a vm script, where `import()` would need an experimental loader.
      return [
        `import { createRequire } from 'node:module';`,
        `export const startEmbeddedServer = (...options) =>`,
        `  createRequire(import.meta.url)(${JSON.stringify(fromBundle(embeddedSource))}).startEmbeddedServer(...options);`,
        '',
      ].join('\n');
    }
    if (id !== PG_MODULE) return null;
    // Chosen when the database package's code first runs, after the telemetry set-up. Both are
    // `require`s, so the copy not taken is never evaluated.
    const treeRequire = `createRequire(new URL(${JSON.stringify(fromBundle(databaseSource))}, import.meta.url))`;
    return [
      `import { createRequire } from 'node:module';`,
      `import { activeTelemetry } from ${JSON.stringify(telemetrySetup)};`,
      `export default activeTelemetry()?.instrumentsPg ? ${treeRequire}('pg') : require('pg');`,
      '',
    ].join('\n');
  },
  transform(code, id) {
    if (resolve(id) !== telemetrySetup) return null;
    const original = 'createRequire(import.meta.url)';
    if (!code.includes(original)) throw new Error(`${telemetrySetup} no longer calls ${original}; update build.ts`);
    // Resolve the exporters from the telemetry package, not from the bundle's directory.
    return code.replace(
      original,
      `createRequire(new URL(${JSON.stringify(fromBundle(telemetrySetup))}, import.meta.url))`,
    );
  },
};

// One bundle per entry (no chunks shared between them): each stays one file, and the server
// loads nothing the keys CLI needs alone. The server's is a script (CommonJS) that
// `dist/main.cjs` (src/bundle-loader.ts) runs from a V8 code cache; the keys CLI is a module.
const entries = [
  { input: 'main', output: 'server.cjs', format: 'cjs' },
  { input: 'keys-cli', output: 'keys-cli.mjs', format: 'esm' },
  { input: 'bundle-loader', output: 'main.cjs', format: 'cjs' },
] as const;
for (const { input, output, format } of entries) {
  const bundle = await rolldown({
    input: resolve(here, `src/${input}.ts`),
    platform: 'node',
    cwd: here,
    external: [/^node:/],
    plugins: [keepOutside],
  });
  await bundle.write({ dir: outDir, format, entryFileNames: output, codeSplitting: false });
  await bundle.close();
  if (output === 'server.cjs') {
    // Wrapped here as Node wraps a CommonJS module, so the loader compiles the file as it is.
    const file = resolve(outDir, output);
    const code = await readFile(file, 'utf8');
    await writeFile(file, Module.wrap(code));
  }
  process.stdout.write(`built ${relative(process.cwd(), resolve(outDir, output))}\n`);
}
