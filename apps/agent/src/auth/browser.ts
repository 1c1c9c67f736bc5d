/**
 * Opens the sign-in page the way command-line tools do: `$BROWSER` when set (the convention
 * `mcp-remote` and others follow, and what tests point at a script that drives Chromium), else
 * the desktop's opener. It only reports whether a program could be started; the caller prints
 * the URL either way, because an opener can start and still show nothing (a server, SSH).
 */
import { spawn } from 'node:child_process';

export type BrowserOpener = (url: string) => Promise<boolean>;

/** Rejects a URL that is not http(s) (`browserCommand`), and starts nothing for it. */
export function systemBrowserOpener(env: Record<string, string | undefined> = process.env): BrowserOpener {
  return async (url) => {
    const command = browserCommand(url, env);
    if (!command) return false;
    return await new Promise<boolean>((resolve) => {
      const child = spawn(command.program, command.args, { stdio: 'ignore', detached: true });
      child.once('error', () => resolve(false));
      child.once('spawn', () => {
        child.unref();
        resolve(true);
      });
    });
  };
}

/**
 * The program that opens `url`, with its arguments: the URL always last, as one argument, and no
 * shell. Only an http(s) URL: the openers hand any other scheme to its handler (`file:` or
 * `smb:` reach a share, a custom protocol starts its program), so anything else is refused.
 */
export function browserCommand(
  url: string,
  env: Record<string, string | undefined>,
  platform: NodeJS.Platform = process.platform,
): { program: string; args: string[] } | undefined {
  const scheme = URL.canParse(url) ? new URL(url).protocol : undefined;
  if (scheme !== 'https:' && scheme !== 'http:') {
    throw new Error(`only http and https URLs are opened in a browser, not ${scheme ?? 'this value (not a URL)'}`);
  }
  // $BROWSER may list several programs separated by ':'; the first is tried.
  const fromEnv = env.BROWSER?.split(':')[0]?.trim();
  if (fromEnv) return { program: fromEnv, args: [url] };
  if (platform === 'darwin') return { program: 'open', args: [url] };
  // Not `cmd /c start`: cmd reads `&` in the URL's query as the end of a command and runs what
  // follows. rundll32 hands the URL to the default browser without a shell (as Go's pkg/browser).
  if (platform === 'win32') return { program: 'rundll32', args: ['url.dll,FileProtocolHandler', url] };
  if (env.DISPLAY || env.WAYLAND_DISPLAY) return { program: 'xdg-open', args: [url] };
  return undefined;
}
