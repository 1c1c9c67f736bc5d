/**
 * What an interactive login leaves behind, per MCP server: the client registration, the tokens
 * and the discovery results. A refresh token is a password-equivalent, so the directory is
 * owner-only (0700) and the file owner-only (0600), written whole through a temporary file so a
 * crash never leaves half a JSON document. The directory is MCP_CACHE_DIR itself: one that
 * already exists is tightened to 0700 too when it holds only the cache's files; a looser one
 * holding anything else, or a shared one (sticky bit, like /tmp), is refused.
 */
import { createHash, randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { chmod, type FileHandle, mkdir, open, readdir, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { OAuthDiscoveryState } from '@modelcontextprotocol/sdk/client/auth.js';
import type { OAuthClientInformationMixed, OAuthTokens } from '@modelcontextprotocol/sdk/shared/auth.js';

export interface StoredTokens extends OAuthTokens {
  /** Epoch ms when the access token expires (from `expires_in` at the time it was saved). */
  expires_at?: number | undefined;
  /** The SDK stamps tokens with the authorization server they came from; kept unchanged. */
  issuer?: string | undefined;
}

export interface StoredSession {
  mcpUrl: string;
  clientInformation?: OAuthClientInformationMixed;
  tokens?: StoredTokens;
  discoveryState?: OAuthDiscoveryState;
  /** The loopback port the client was registered with, reused so its redirect URI stays valid. */
  redirectPort?: number;
}

export const FILE_MODE = 0o600;
export const DIRECTORY_MODE = 0o700;
const STICKY_BIT = 0o1000;
/** What the store writes: one session file per MCP server, and its temporary while written. */
const CACHE_FILE = /^session-[0-9a-f]{16}\.json(\.[0-9a-f]{8}\.tmp)?$/;
const WAY_OUT = 'remove it, or set MCP_CACHE_DIR to a directory of your own';

export class TokenStore {
  readonly file: string;
  readonly #directory: string;

  constructor(directory: string, mcpUrl: string) {
    this.#directory = directory;
    // One file per MCP server; the hash keeps URLs out of file names.
    const key = createHash('sha256').update(mcpUrl).digest('hex').slice(0, 16);
    this.file = join(directory, `session-${key}.json`);
  }

  async load(): Promise<StoredSession | undefined> {
    let file: FileHandle;
    try {
      // The file checked is the file read: opened once, without following a link, and without
      // waiting on a pipe put in its place.
      file = await open(this.file, constants.O_RDONLY | (constants.O_NOFOLLOW ?? 0) | (constants.O_NONBLOCK ?? 0));
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') return undefined;
      if (code === 'ELOOP')
        throw new Error(`the token cache file ${this.file} is not a plain file (a link?); ${WAY_OUT}`);
      throw error;
    }
    let text: string;
    try {
      await this.#refuseFileNotOwnOnly(file);
      text = await file.readFile('utf8');
    } finally {
      await file.close();
    }
    try {
      return JSON.parse(text) as StoredSession;
    } catch {
      // A damaged cache costs one login, not a crash.
      return undefined;
    }
  }

  /**
   * A session file is used only when it is this user's own and nobody else may write it: one
   * planted in a directory others can write to (another person's tokens, session fixation: what
   * the agent adds would land in their account) is refused before it is read. One of this user's
   * that others may read (restored from a backup, copied) is made owner-only: it holds a refresh
   * token. Where processes have no user ids (Windows), only its kind is checked.
   */
  async #refuseFileNotOwnOnly(file: FileHandle): Promise<void> {
    const info = await file.stat();
    if (!info.isFile()) throw new Error(`the token cache file ${this.file} is not a plain file; ${WAY_OUT}`);
    const uid = process.getuid?.();
    if (uid === undefined) return;
    if (info.uid !== uid) {
      throw new Error(
        `the token cache file ${this.file} belongs to another user, so its tokens may not be yours; ${WAY_OUT}`,
      );
    }
    if (info.mode & 0o022) {
      throw new Error(
        `the token cache file ${this.file} may be written by other users, so its tokens may not be yours; ${WAY_OUT}`,
      );
    }
    if (info.mode & 0o044) await file.chmod(FILE_MODE);
  }

  async save(session: StoredSession): Promise<void> {
    await mkdir(this.#directory, { recursive: true, mode: DIRECTORY_MODE });
    await this.#makeDirectoryOwnerOnly();
    const temporary = `${this.file}.${randomBytes(4).toString('hex')}.tmp`;
    await writeFile(temporary, `${JSON.stringify(session, null, 2)}\n`, { mode: FILE_MODE });
    // The mode given to writeFile is filtered by the umask; make it exact.
    await chmod(temporary, FILE_MODE);
    await rename(temporary, this.file);
  }

  /** mkdir's mode applies only to directories it creates, and is filtered by the umask. */
  async #makeDirectoryOwnerOnly(): Promise<void> {
    const { mode } = await stat(this.#directory);
    if (mode & STICKY_BIT) {
      // Tightening /tmp (or any shared directory) to 0700 would lock everyone else out of it.
      throw new Error(
        `the token cache directory ${this.#directory} is shared (sticky bit, like /tmp); set MCP_CACHE_DIR to a directory of its own`,
      );
    }
    if ((mode & 0o777) === DIRECTORY_MODE) return;
    // Tighten only a directory that is the cache's alone: MCP_CACHE_DIR=~ (or `.`) must not
    // quietly make a home or a checkout owner-only.
    const others = (await readdir(this.#directory)).filter((name) => !CACHE_FILE.test(name));
    if (others.length > 0) {
      throw new Error(
        `the token cache directory ${this.#directory} is not owner-only and holds other files (${others.slice(0, 3).join(', ')}${others.length > 3 ? ', …' : ''}); set MCP_CACHE_DIR to a directory of its own`,
      );
    }
    try {
      await chmod(this.#directory, DIRECTORY_MODE);
    } catch (error) {
      throw new Error(
        `cannot make the token cache directory ${this.#directory} owner-only (${(error as NodeJS.ErrnoException).code}); set MCP_CACHE_DIR to a directory of your own`,
        { cause: error },
      );
    }
  }

  async clear(): Promise<void> {
    await rm(this.file, { force: true });
  }
}
