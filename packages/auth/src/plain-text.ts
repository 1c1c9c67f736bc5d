/**
 * Characters that make text read differently from what it holds: bidirectional overrides and
 * isolates (U+202E shows "txt.exe" as "exe.txt"), zero-width and invisible ones, the BOM, and
 * unpaired surrogates (which storage would silently turn into U+FFFD). Joiners (U+200C, U+200D)
 * stay allowed: emoji sequences and several scripts need them.
 */
export const DECEPTIVE_CHARACTERS = /[\u061C\u200B\u200E\u200F\u202A-\u202E\u2060-\u2064\u2066-\u2069\uFEFF\p{Cs}]/u;

/**
 * Why `text` is not plain text a person wrote (control characters, or characters that make it
 * read as something else), or undefined when it is. The rule of expense descriptions and of the
 * user ids and names of API keys.
 */
export function misleadingTextProblem(text: string): string | undefined {
  if (/\p{Cc}/u.test(text)) return 'must not contain control characters';
  if (DECEPTIVE_CHARACTERS.test(text)) {
    return 'must not contain bidirectional controls, invisible characters or unpaired surrogates';
  }
  return undefined;
}
