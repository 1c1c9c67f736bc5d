import { spawn } from 'node:child_process';
import { cp, readFile } from 'node:fs/promises';
import { join, relative } from 'node:path';

/** What a replayed image would run: its ENV, CMD and HEALTHCHECK command, and from where. */
export interface ReplayedImage {
  /**
   * The runtime stage's working directory: `target` itself, or the folder of it that
   * `COPY --from=<build stage> <WORKDIR>/<folder> ./` takes (a `pnpm deploy` folder).
   */
  root: string;
  env: Record<string, string>;
  command: string[] | undefined;
  healthcheck: string[] | undefined;
}

/**
 * No Docker engine runs on these machines, so an image is replayed instead: every COPY of the
 * build context (less .dockerignore) into `target`, and every `pnpm` RUN step there. What the
 * image would hold is then what `target` holds. Only the instructions this repository's
 * Dockerfiles use are understood; anything else fails loudly.
 */
export async function replayDockerfile(context: string, dockerfile: string, target: string): Promise<ReplayedImage> {
  const image: ReplayedImage = { root: target, env: {}, command: undefined, healthcheck: undefined };
  let buildWorkdir: string | undefined;
  for (const { instruction, args } of await readDockerfile(join(context, dockerfile))) {
    if (instruction === 'WORKDIR') {
      buildWorkdir ??= args;
    } else if (instruction === 'COPY' && args.startsWith('--from')) {
      const [, source = '', destination] = args.split(/\s+/);
      const folder = relative(buildWorkdir ?? '/', source);
      if (destination !== './' || folder.startsWith('..')) {
        throw new Error(`the replay handles only "COPY --from=<stage> <WORKDIR>[/folder] ./", not "COPY ${args}"`);
      }
      image.root = join(target, folder);
    } else if (instruction === 'COPY') {
      if (args !== '. .') throw new Error(`the replay handles only "COPY . .", not "COPY ${args}"`);
      const ignored = await dockerignore(join(context, '.dockerignore'));
      await cp(context, target, {
        recursive: true,
        filter: (source) => {
          const path = relative(context, source);
          return path === '' || !ignored.some((pattern) => pattern.test(path));
        },
      });
    } else if (instruction === 'RUN' && args.startsWith('pnpm ')) {
      await shell(args, target);
    } else if (instruction === 'ENV') {
      for (const match of args.matchAll(/(\w+)=(\S+)/g)) image.env[match[1] as string] = match[2] as string;
    } else if (instruction === 'CMD') {
      image.command = JSON.parse(args) as string[];
    } else if (instruction === 'HEALTHCHECK') {
      image.healthcheck = JSON.parse(args.slice(args.indexOf('CMD ') + 4)) as string[];
    }
  }
  return image;
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
async function dockerignore(path: string): Promise<RegExp[]> {
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

function shell(command: string, cwd: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn('sh', ['-c', command], { cwd, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (chunk) => (stderr += chunk));
    child.once('error', reject);
    child.once('exit', (code) =>
      code === 0 ? resolve() : reject(new Error(`"${command}" exited with ${code}: ${stderr}`)),
    );
  });
}
