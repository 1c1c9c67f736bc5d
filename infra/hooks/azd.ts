import { spawn } from 'node:child_process';

/** The azd environment as the hooks use it: read all values, set one. */
export interface AzdEnvironment {
  values(): Promise<Record<string, string>>;
  set(name: string, value: string): Promise<void>;
}

function run(command: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    // No shell, on Windows too (azd is azd.exe): cmd.exe would strip the quotes from a value.
    const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk) => (stdout += chunk));
    child.stderr.on('data', (chunk) => (stderr += chunk));
    child.on('error', reject);
    child.on('close', (code) => {
      // Never echo the arguments: `azd env set` carries secrets.
      if (code === 0) resolve(stdout);
      else reject(new Error(`${command} ${args.slice(0, 2).join(' ')} failed (exit ${code}): ${stderr.trim()}`));
    });
  });
}

/** The real `azd` (or another executable with its interface, for tests). */
export function azdCli(command = process.env.AZD_COMMAND || 'azd'): AzdEnvironment {
  return {
    async values() {
      return JSON.parse(await run(command, ['env', 'get-values', '--output', 'json'])) as Record<string, string>;
    },
    async set(name, value) {
      await run(command, ['env', 'set', name, value]);
    },
  };
}
