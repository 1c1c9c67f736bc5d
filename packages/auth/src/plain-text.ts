/**
 * Characters that make text read differently from what it holds: every format character
 * (\p{Cf}: bidirectional overrides and isolates, U+202E shows "txt.exe" as "exe.txt"; zero-width
 * ones; the BOM; the soft hyphen; TAG characters, which carry text no one sees), line and
 * paragraph separators (a new line inside "one line"), the Hangul fillers (blank letters) and
 * unpaired surrogates (which storage would silently turn into U+FFFD). Joiners (U+200C, U+200D)
 * stay allowed: emoji sequences and several scripts need them.
 */
const DECEPTIVE_CHARACTERS = /(?![\u200C\u200D])[\p{Cf}\p{Zl}\p{Zp}\p{Cs}\u115F\u1160\u3164\uFFA0]/u;

/**
 * A subdivision flag (UTS #51 emoji tag sequence): the black flag, a subdivision id in TAG
 * characters (a region, two letters or three digits, then one to four letters or digits: "gbsct"),
 * CANCEL TAG. The flags of England, Scotland and Wales are written so; TAG characters anywhere
 * else, or spelling anything longer, are hidden text.
 */
const FLAG_TAG_SEQUENCE =
  /\u{1F3F4}(?:[\u{E0061}-\u{E007A}]{2}|[\u{E0030}-\u{E0039}]{3})[\u{E0030}-\u{E0039}\u{E0061}-\u{E007A}]{1,4}\u{E007F}/gu;

/** What the refusals name. */
export const DECEPTIVE_KINDS =
  'bidirectional controls, invisible characters, line or paragraph separators or unpaired surrogates';

/** Whether `text` holds a character that makes it read as something else (above). */
export function hasDeceptiveCharacters(text: string): boolean {
  return DECEPTIVE_CHARACTERS.test(text.replace(FLAG_TAG_SEQUENCE, '\u{1F3F4}'));
}

/**
 * Why `text` is not plain text a person wrote (control characters, or characters that make it
 * read as something else), or undefined when it is. The rule of expense descriptions and of the
 * user ids and names of API keys.
 */
export function misleadingTextProblem(text: string): string | undefined {
  if (/\p{Cc}/u.test(text)) return 'must not contain control characters';
  if (hasDeceptiveCharacters(text)) return `must not contain ${DECEPTIVE_KINDS}`;
  return undefined;
}
