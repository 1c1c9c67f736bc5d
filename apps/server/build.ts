/**
 * `pnpm --filter @mcp-auth-stack/server build`: the production entries, `dist/main.mjs` (the
 * server) and `dist/keys-cli.mjs` (`pnpm keys`, for the image), each one JavaScript file with
 * this project's packages and their dependencies. Development runs the
 * TypeScript sources (`node src/main.ts`); images run the bundle, which saves what running the
 * sources costs at every start: Node's type stripping (its WebAssembly stripper and the stripped
 * copies) and the resolution of hundreds of modules. Measured: idle RSS 128-132 MB from the
 * sources against 80 MB from the bundle, key mode on PostgreSQL (docs/performance.md).
 *
 * Left out of the bundle, loaded only when used, from their places in the tree (so `dist/`
 * must stay inside the installed workspace, as it does in the image):
 * - the embedded database (`packages/database/src/embedded.ts` and PGlite, whose WebAssembly
 *   and data files are found next to its own modules): only without DATABASE_URL;
 * - the OpenTelemetry SDK and exporters, which `packages/telemetry` loads with `require` from
 *   its own directory: only when an exporter is configured;
 * - `pg`, required from `packages/database` when the bundle's code gets there, after the
 *   telemetry set-up: the OpenTelemetry instrumentation patches pg's modules as Node's `require`
 *   loads them, which it cannot do to a copy inside the bundle (Postgres spans).
 *
 *   node apps/server/build.ts [--out-dir <dir>]
 */
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

/** The module every `import pg from 'pg'` of the bundle gets: pg `require`d from the tree. */
const PG_FROM_TREE = '\0pg-from-tree';

const keepOutside: Plugin = {
  name: 'keep-outside',
  resolveId(source, importer) {
    if (importer && resolve(dirname(importer), source) === embeddedSource) {
      return { id: fromBundle(embeddedSource), external: true };
    }
    if (importer && source === 'pg') return PG_FROM_TREE;
    return null;
  },
  load(id) {
    if (id !== PG_FROM_TREE) return null;
    // `require`d from the database package, where the bundle's code runs (after the telemetry
    // set-up, which must see pg load to instrument it). A static import of the external pg
    // would be loaded before any code of the bundle runs, so before the instrumentation.
    const from = JSON.stringify(fromBundle(resolve(here, '../../packages/database/src/index.ts')));
    return `import { createRequire } from 'node:module';\nexport default createRequire(new URL(${from}, import.meta.url))('pg');\n`;
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
// loads nothing the keys CLI needs alone.
for (const entry of ['main', 'keys-cli']) {
  const bundle = await rolldown({
    input: resolve(here, `src/${entry}.ts`),
    platform: 'node',
    cwd: here,
    external: [/^node:/],
    plugins: [keepOutside],
  });
  await bundle.write({ dir: outDir, format: 'esm', entryFileNames: `${entry}.mjs`, codeSplitting: false });
  await bundle.close();
  process.stdout.write(`built ${relative(process.cwd(), resolve(outDir, `${entry}.mjs`))}\n`);
}
