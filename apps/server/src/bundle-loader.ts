/**
 * The image's entry, `dist/main.cjs` (built by build.ts; it is not run from the sources): runs
 * the server's bundle, `dist/server.cjs`, from the V8 code cache beside it when there is one.
 *
 * Why not Node's compile cache (NODE_COMPILE_CACHE): Node makes that cache right after it
 * compiles a module, when V8 has compiled only the top level; every function a start runs is
 * then compiled again at every start. A cache made with `Script.createCachedData()` after the
 * code has run holds those functions too. The image's build runs `main.cjs --warm-up` (a start's
 * work and three calls in-process, warm-up.ts) and this writes the cache when that is done;
 * measured, a start 33-37 ms shorter than from Node's compile cache (docs/performance.md).
 *
 * V8 refuses a cache made by another V8 or under other flags (the image writes it with its
 * CMD's flags) and then compiles the source as usual. `NODE_DEBUG=code-cache` says which.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { debuglog } from 'node:util';
import { Script } from 'node:vm';

const bundle = join(__dirname, 'server.cjs');
const cacheFile = `${bundle}.code-cache`;
const debug = debuglog('code-cache');

/** The bundle compiled, from the cache when V8 takes it; nothing of the cache's bytes is kept. */
function compileBundle(): { script: Script; cache: 'none' | 'accepted' | 'rejected' } {
  let cachedData: Buffer | undefined;
  try {
    cachedData = readFileSync(cacheFile);
  } catch {
    // No cache (a bundle not built into an image): compiled as usual.
  }
  // build.ts writes the bundle already wrapped as a CommonJS function: one copy of its 1.3 MB
  // of source in memory, the one V8 keeps for functions it has not compiled.
  const script = new Script(readFileSync(bundle, 'utf8'), { filename: bundle, cachedData });
  const cache = cachedData === undefined ? 'none' : script.cachedDataRejected ? 'rejected' : 'accepted';
  debug(
    cache === 'none'
      ? `no code cache at ${cacheFile}`
      : `code cache ${cacheFile} ${cache} (${cachedData?.length} bytes)`,
  );
  return { script, cache };
}

const { script, cache } = compileBundle();
if (process.argv.slice(2).includes('--warm-up') && cache !== 'accepted') {
  // Written when the warm-up's work is done and nothing is left to run; a cache V8 took is kept.
  process.once('beforeExit', () => {
    if (process.exitCode) return;
    const data = script.createCachedData();
    writeFileSync(cacheFile, data);
    debug(`code cache written to ${cacheFile} (${data.length} bytes)`);
  });
}

const bundled = { exports: {} };
script.runInThisContext()(bundled.exports, createRequire(bundle), bundled, bundle, __dirname);
