/**
 * `pnpm --filter @mcp-auth-stack/server build`: the production entry, `dist/main.mjs`, one
 * JavaScript file with this project's packages and their dependencies. Development runs the
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
 *   its own directory: only when an exporter is configured.
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

const keepOutside: Plugin = {
  name: 'keep-outside',
  resolveId(source, importer) {
    if (importer && resolve(dirname(importer), source) === embeddedSource) {
      return { id: fromBundle(embeddedSource), external: true };
    }
    return null;
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

const bundle = await rolldown({
  input: resolve(here, 'src/main.ts'),
  platform: 'node',
  cwd: here,
  external: [/^node:/],
  plugins: [keepOutside],
});
await bundle.write({ dir: outDir, format: 'esm', entryFileNames: 'main.mjs', codeSplitting: false });
await bundle.close();
process.stdout.write(`built ${relative(process.cwd(), resolve(outDir, 'main.mjs'))}\n`);
