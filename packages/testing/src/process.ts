import { spawn } from 'node:child_process';

/** Runs a command to completion and returns its exit code and output. */
export function run(
  command: string,
  args: string[],
  env: Record<string, string> = {},
  options: { timeoutMs?: number } = {},
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk) => (stdout += chunk));
    child.stderr.on('data', (chunk) => (stderr += chunk));
    // A command expected to exit that keeps running (a server that started after all) is killed
    // at the deadline: the test fails on its exit code, not on the runner's timeout minutes later.
    const deadline =
      options.timeoutMs === undefined
        ? undefined
        : setTimeout(() => {
            stderr += `\n(still running after ${options.timeoutMs} ms: killed)\n`;
            child.kill('SIGKILL');
          }, options.timeoutMs);
    child.once('error', reject);
    child.once('exit', (code) => {
      clearTimeout(deadline);
      resolve({ code, stdout, stderr });
    });
  });
}

export interface ServerProcess {
  /** The process's id, for what a test does to it from outside (its resource limits, say). */
  pid: number;
  url: string;
  mcpUrl: string;
  output: () => string;
  /**
   * Resolves with the output once `pattern` matches it. A line the server wrote before it
   * answered a request can still be in the pipe when the answer arrives here: the test's event
   * loop may read the socket before the pipe, so a check right after a response must wait.
   */
  waitForOutput(pattern: RegExp, timeoutMs?: number): Promise<string>;
  /** Sends SIGTERM and resolves with the exit code. */
  stop(): Promise<number | null>;
}

/**
 * Runs `node <entry>` as its own process until it logs where it listens: the JSON line
 * `{"msg":"listening","url":…}` that this repository's programs write through packages/config's
 * logger. `env` is added to this process's environment, over the defaults PORT=0 (a free port),
 * HOST=127.0.0.1 and LOG_LEVEL=info. The caller names the entry (an app's declared entry, or a
 * built file): this package knows no app.
 */
export async function spawnServerProcess(entry: string, env: Record<string, string>): Promise<ServerProcess> {
  const child = spawn(process.execPath, [entry], {
    env: { ...process.env, PORT: '0', HOST: '127.0.0.1', LOG_LEVEL: 'info', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout.on('data', (chunk) => (output += chunk));
  child.stderr.on('data', (chunk) => (output += chunk));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`server did not start in 60 s:\n${output}`)), 60_000);
    const onData = () => {
      const match = /"msg":"listening","url":"([^"]+)"/.exec(output);
      if (match?.[1]) {
        clearTimeout(timer);
        resolve(match[1]);
      }
    };
    child.stdout.on('data', onData);
    exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`server exited with ${code} before listening:\n${output}`));
    });
  });
  return {
    pid: child.pid as number,
    url,
    mcpUrl: `${url}/mcp`,
    output: () => output,
    waitForOutput(pattern, timeoutMs = 5_000) {
      return new Promise((resolve, reject) => {
        const check = () => {
          if (!pattern.test(output)) return false;
          clearTimeout(timer);
          child.stdout.off('data', check);
          child.stderr.off('data', check);
          resolve(output);
          return true;
        };
        const timer = setTimeout(() => {
          child.stdout.off('data', check);
          child.stderr.off('data', check);
          reject(new Error(`no output matching ${pattern} within ${timeoutMs} ms:\n${output}`));
        }, timeoutMs);
        if (check()) return;
        child.stdout.on('data', check);
        child.stderr.on('data', check);
      });
    },
    async stop() {
      child.kill('SIGTERM');
      return await exited;
    },
  };
}
