import { spawn } from 'node:child_process';
import { cp, mkdir, readdir, readFile, rename, rm } from 'node:fs/promises';
import { dirname, join, relative } from 'node:path';

/** What a replayed image would run: its ENV, CMD and HEALTHCHECK command, and from where. */
export interface ReplayedImage {
  /** The last stage's working directory: what the image holds there. */
  root: string;
  env: Record<string, string>;
  command: string[] | undefined;
  healthcheck: string[] | undefined;
}

interface Stage {
  /** Where this stage's WORKDIR is replayed. */
  dir: string;
  workdir: string;
  env: Record<string, string>;
}

/**
 * No Docker engine runs on these machines, so an image is replayed instead, each stage in its
 * own folder of `target` standing for its WORKDIR: `COPY . .` of the build context (less
 * .dockerignore), every `pnpm` and `node` RUN step (with the stage's ENV, paths inside the
 * WORKDIR pointing into its folder), `COPY --from=<stage> <path> <dest>` from the earlier
 * stage's folder; a stage `FROM` an earlier one starts from a copy of it. What the
 * image would hold is then what the last stage's folder holds. Only the instructions this
 * repository's Dockerfiles use are understood; anything else fails loudly.
 */
export async function replayDockerfile(context: string, dockerfile: string, target: string): Promise<ReplayedImage> {
  const stages = new Map<string, Stage>();
  let stage: Stage | undefined;
  let command: string[] | undefined;
  let healthcheck: string[] | undefined;
  const current = (): Stage => {
    if (!stage) throw new Error(`${dockerfile}: an instruction before FROM`);
    return stage;
  };
  for (const { instruction, args } of await readDockerfile(join(context, dockerfile))) {
    if (instruction === 'FROM') {
      const [base = '', as, name] = args.split(/\s+/);
      const dir = join(target, `stage-${stages.size}`);
      const parent = stages.get(base);
      if (parent) await cp(parent.dir, dir, { recursive: true, verbatimSymlinks: true });
      else await mkdir(dir, { recursive: true });
      stage = { dir, workdir: parent?.workdir ?? '/', env: { ...parent?.env } };
      if (as?.toUpperCase() === 'AS' && name) stages.set(name, stage);
      command = undefined;
      healthcheck = undefined;
    } else if (instruction === 'WORKDIR') {
      if (current().workdir !== '/' && current().workdir !== args) {
        throw new Error(`the replay handles one WORKDIR per stage, not "WORKDIR ${args}"`);
      }
      current().workdir = args;
    } else if (instruction === 'COPY' && args.startsWith('--from=')) {
      const [from = '', source = '', destination = ''] = args.split(/\s+/);
      const earlier = stages.get(from.slice('--from='.length));
      const folder = earlier && relative(earlier.workdir, source);
      if (!earlier || folder === undefined || folder.startsWith('..') || destination.startsWith('/')) {
        throw new Error(
          `the replay handles only "COPY --from=<stage> <its WORKDIR>[/folder] <relative dest>", not "COPY ${args}"`,
        );
      }
      const into = join(current().dir, destination);
      // A folder the later stages copy once: moved rather than copied (a store of node_modules).
      if ((await readdir(into).catch(() => [])).length === 0) {
        await rm(into, { recursive: true, force: true });
        await mkdir(dirname(into), { recursive: true });
        await rename(join(earlier.dir, folder), into);
      } else {
        await cp(join(earlier.dir, folder), into, { recursive: true, verbatimSymlinks: true });
      }
    } else if (instruction === 'COPY') {
      if (args !== '. .') throw new Error(`the replay handles only "COPY . .", not "COPY ${args}"`);
      const ignored = await dockerignore(join(context, '.dockerignore'));
      await cp(context, current().dir, {
        recursive: true,
        filter: (source) => {
          const path = relative(context, source);
          return path === '' || !ignored.some((pattern) => pattern.test(path));
        },
      });
    } else if (instruction === 'RUN' && /^(pnpm|node) /.test(args)) {
      await shell(args, current().dir, replayedEnv(current()));
    } else if (instruction === 'ENV') {
      for (const match of args.matchAll(/(\w+)=(\S+)/g)) current().env[match[1] as string] = match[2] as string;
    } else if (instruction === 'CMD') {
      command = JSON.parse(args) as string[];
    } else if (instruction === 'HEALTHCHECK') {
      healthcheck = JSON.parse(args.slice(args.indexOf('CMD ') + 4)) as string[];
    }
  }
  const last = current();
  return { root: last.dir, env: replayedEnv(last), command, healthcheck };
}

/** The stage's ENV, with paths inside its WORKDIR pointing into the folder that stands for it. */
function replayedEnv(stage: Stage): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [name, value] of Object.entries(stage.env)) {
    const inside = stage.workdir !== '/' && (value === stage.workdir || value.startsWith(`${stage.workdir}/`));
    env[name] = inside ? join(stage.dir, relative(stage.workdir, value)) : value;
  }
  return env;
}

interface Step {
  instruction: string;
  args: string;
}

/** The Dockerfile's instructions, with line continuations joined and comments dropped. */
async function readDockerfile(path: string): Promise<Step[]> {
  const text = (await readFile(path, 'utf8')).replace(/\\\n/g, ' ');
  return text
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line && !line.startsWith('#'))
    .map((line) => {
      const [instruction, ...rest] = line.split(/\s+/);
      return { instruction: (instruction as string).toUpperCase(), args: rest.join(' ') };
    });
}

/** .dockerignore patterns as regular expressions over paths relative to the context. */
/** The patterns of a `.dockerignore` as regular expressions over context-relative paths (no `!`). */
export async function dockerignore(path: string): Promise<RegExp[]> {
  return (await readFile(path, 'utf8'))
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line && !line.startsWith('#'))
    .map((pattern) => {
      const body = pattern
        .split('**/')
        .map((part) =>
          part
            .replace(/[.+^${}()|[\]\\]/g, '\\$&')
            .replace(/\*/g, '[^/]*')
            .replace(/\?/g, '[^/]'),
        )
        .join('(?:.*/)?');
      return new RegExp(`^${body}(?:/.*)?$`);
    });
}

function shell(command: string, cwd: string, env: Record<string, string>): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn('sh', ['-c', command], {
      cwd,
      env: { ...process.env, ...env },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (chunk) => (stderr += chunk));
    child.once('error', reject);
    child.once('exit', (code) =>
      code === 0 ? resolve() : reject(new Error(`"${command}" exited with ${code}: ${stderr}`)),
    );
  });
}
