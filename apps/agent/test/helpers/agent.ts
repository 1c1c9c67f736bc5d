/**
 * Running the agent in tests: in-process (`startAgent`) or as its own process, the way
 * `pnpm agent` and the container run it; always against the scripted model.
 */
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { CONFIG_VARIABLES } from '../../src/config.ts';

export const CLI = fileURLToPath(new URL('../../src/cli.ts', import.meta.url));
export const SERVE = fileURLToPath(new URL('../../src/serve.ts', import.meta.url));
/** The agent as the official conformance suite's client under test (`conformance-client.ts`). */
export const CONFORMANCE_CLIENT = fileURLToPath(new URL('./conformance-client.ts', import.meta.url));
/** What that client prints once the agent called the scenario's tool and got its answer. */
export const CONFORMANCE_TOOL_CALLED = 'conformance-client: test-tool answered';

/** Environment for the `openai` provider pointed at the scripted model. */
export function scriptedModelEnv(baseUrl: string): Record<string, string> {
  return {
    API_HOST: 'openai',
    OPENAI_API_KEY: 'scripted-model-key',
    OPENAI_BASE_URL: baseUrl,
    OPENAI_MODEL: 'scripted',
  };
}

/**
 * Variables that could leak from the developer's shell into a spawned agent and change its
 * behaviour: every one its configuration reads, and the browser it would open.
 */
const CLEARED = [...CONFIG_VARIABLES, 'BROWSER'];

function childEnv(env: Record<string, string>): NodeJS.ProcessEnv {
  const base = { ...process.env };
  for (const name of CLEARED) delete base[name];
  return { ...base, ...env };
}

/** Runs `pnpm agent …` as a process; one that is still running after `timeoutMs` is killed (code null). */
export function runCli(
  args: string[],
  env: Record<string, string>,
  stdin?: string,
  timeoutMs = 120_000,
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], { env: childEnv(env), stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.stdout.on('data', (chunk) => (stdout += chunk));
    child.stderr.on('data', (chunk) => (stderr += chunk));
    child.once('error', reject);
    child.once('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
    child.stdin.end(stdin ?? '');
  });
}

/**
 * `pnpm agent` (chat) on a real pseudo-terminal (`script`): what a person types is written to
 * it, and its output (the terminal's echo included) read back.
 */
export function runCliOnTerminal(env: Record<string, string>, args: string[] = []) {
  const quoted = [process.execPath, CLI, ...args].map((word) => `'${word.replaceAll("'", "'\\''")}'`).join(' ');
  const child = spawn('script', ['-qfec', `exec ${quoted}`, '/dev/null'], {
    env: childEnv(env),
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout.on('data', (chunk) => (output += chunk));
  child.stderr.on('data', (chunk) => (output += chunk));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return {
    type: (text: string) => child.stdin.write(text),
    output: () => output,
    /** Until the output holds `text`; fails with the output after `timeoutMs`. */
    until: async (text: string, timeoutMs = 60_000) => {
      for (let waited = 0; !output.includes(text); waited += 100) {
        if (waited > timeoutMs || child.exitCode !== null) throw new Error(`no ${JSON.stringify(text)} in:\n${output}`);
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    },
    exited,
    kill: () => child.kill('SIGKILL'),
  };
}

export interface ServeProcess {
  url: string;
  output: () => string;
  /** SIGTERM, then its exit code. */
  stop(): Promise<number | null>;
  /** SIGKILL: for a test's cleanup when the process would not stop. */
  kill(): void;
}

/**
 * Runs `serve.ts` (by default this tree's; `script` and `cwd` for another, e.g. an image's)
 * until it is connected to its MCP servers, or with `ready: false` only until it listens.
 */
export async function spawnServe(
  env: Record<string, string>,
  options: { script?: string; cwd?: string; ready?: boolean } = {},
): Promise<ServeProcess> {
  const child = spawn(process.execPath, [options.script ?? SERVE], {
    env: childEnv({ HOST: '127.0.0.1', PORT: '0', ...env }),
    stdio: ['ignore', 'pipe', 'pipe'],
    ...(options.cwd ? { cwd: options.cwd } : {}),
  });
  let output = '';
  child.stdout.on('data', (chunk) => (output += chunk));
  child.stderr.on('data', (chunk) => (output += chunk));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`the agent was not up in 60 s:\n${output}`)), 60_000);
    child.stdout.on('data', () => {
      const match = /"msg":"listening","url":"([^"]+)"/.exec(output);
      if (match?.[1] && (options.ready === false || output.includes('"msg":"ready"'))) {
        clearTimeout(timer);
        resolve(match[1]);
      }
    });
    exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`the agent exited with ${code} before listening:\n${output}`));
    });
  });
  return {
    url,
    output: () => output,
    async stop() {
      child.kill('SIGTERM');
      return await exited;
    },
    kill() {
      child.kill('SIGKILL');
    },
  };
}
