/*
 * One rule for text people read (expense descriptions, OAuth client names, API key labels): it
 * must read as what it holds. Above all, no text a model reads but a person does not see.
 *
 * How: first the few invisible characters that real text needs are removed where they belong
 * (ALLOWED_IN_CONTEXT below), then whatever invisible character is left refuses the text. Each
 * step is one regular expression over the whole text: descriptions are checked on every write.
 */

/**
 * A character that shows something: not white space, not a control or format character, not
 * default-ignorable (what a renderer draws as nothing: joiners, variation selectors, TAG
 * characters, the Hangul fillers, unassigned code points reserved as ignorable) and not the blank
 * Braille pattern U+2800. Combining marks count: they show on their base letter.
 */
const VISIBLE = String.raw`[^\p{White_Space}\p{Default_Ignorable_Code_Point}\p{Cc}\p{Cf}\p{Cs}\u2800]`;

/**
 * The three RGI subdivision flags (UTS #51), the only use of TAG characters anyone sees: the
 * black flag, "gbeng", "gbsct" or "gbwls" in TAG letters, CANCEL TAG. Any other TAG run spells
 * text no one sees (six hidden letters per flag, chained, spell an instruction to a model).
 */
const RGI_SUBDIVISION_FLAG =
  /\u{1F3F4}\u{E0067}\u{E0062}(?:\u{E0065}\u{E006E}\u{E0067}|\u{E0073}\u{E0063}\u{E0074}|\u{E0077}\u{E006C}\u{E0073})\u{E007F}/gu;

/**
 * Invisible characters that real text needs, in the one place they do something; anywhere else
 * each carries hidden bits (one variation selector is a byte, joiners spell binary):
 * - one VS15/VS16 (U+FE0E text, U+FE0F emoji style) right after a visible character: the red
 *   heart is 2764 FE0F, the keycap one 0031 FE0F 20E3;
 * - one ideographic variation selector (U+E0100-E01EF) right after an ideograph: 845B E0100 is
 *   a particular glyph of that ideograph (an Ideographic Variation Sequence);
 * - ZWNJ or ZWJ (U+200C, U+200D) between two visible characters, a VS15/VS16 counting as part
 *   of the character before it (the rainbow flag is 1F3F3 FE0F 200D 1F308): emoji sequences,
 *   Persian, the Indic scripts. Never first, last or two in a row.
 * The lookarounds see the text as it was, so removing one match never makes the next one fit.
 * Each alternative matches its character first and then looks back over it (the `.`): the
 * engine looks around only at those few characters, not at every position (ten times faster).
 */
const ALLOWED_IN_CONTEXT = new RegExp(
  [
    String.raw`[\uFE0E\uFE0F](?<=${VISIBLE}.)`,
    String.raw`[\u{E0100}-\u{E01EF}](?<=\p{Ideographic}.)`,
    String.raw`[\u200C\u200D](?<=${VISIBLE}[\uFE0E\uFE0F]?.)(?=${VISIBLE})`,
  ].join('|'),
  'gu',
);

/**
 * What is left that makes text read differently from what it holds: every format character
 * (\p{Cf}: bidirectional overrides and isolates, U+202E shows "txt.exe" as "exe.txt"; zero-width
 * ones; the BOM; the soft hyphen; TAG characters), every default-ignorable code point (variation
 * selectors, U+034F, the Mongolian free variation selectors, the Hangul fillers, the unassigned
 * ones a future Unicode may use), line and paragraph separators (a new line inside "one line"),
 * unpaired surrogates (which storage would silently turn into U+FFFD) and the 66 noncharacters
 * (U+FDD0-FDEF, U+FFFE, U+FFFF and the last two of every plane: never text, so nothing draws
 * them, and a run of U+FFFE and U+FFFF spells bits). Private-use characters stay: they draw as a
 * font's glyph or a box.
 */
const DECEPTIVE_CHARACTERS = /[\p{Cf}\p{Default_Ignorable_Code_Point}\p{Zl}\p{Zp}\p{Cs}\p{Noncharacter_Code_Point}]/u;

const HAS_VISIBLE = new RegExp(VISIBLE, 'u');

/**
 * More than eight combining marks on one character, more than real text puts there (Burmese,
 * Hebrew with cantillation and Vedic Devanagari stack four or five): drawn above and below
 * their line, over the lines, rows and buttons around the text. A joiner or an emoji-style
 * selector between two marks leaves them on the same character: they do not end the count.
 */
const STACKED_MARKS = /\p{M}(?:(?:\u200C|\u200D|\uFE0E|\uFE0F)*\p{M}){8}/u;

/** What the refusals name. */
export const DECEPTIVE_KINDS =
  'bidirectional controls, invisible characters, line or paragraph separators, unpaired surrogates or noncharacters';

/** Whether `text` holds a character that makes it read as something else (above). */
function hasDeceptiveCharacters(text: string): boolean {
  // The flag becomes its black flag, so a joiner or selector after it still has a visible neighbour.
  const allowedRemoved = text.replace(RGI_SUBDIVISION_FLAG, '\u{1F3F4}').replace(ALLOWED_IN_CONTEXT, '');
  return DECEPTIVE_CHARACTERS.test(allowedRemoved);
}

/**
 * Why `text` is not plain text a person wrote (control characters, characters that make it read
 * as something else, nothing to see at all, or marks stacked to be drawn over what is around
 * it), or undefined when it is. The rule of expense
 * descriptions, OAuth client names and the user ids and names of API keys.
 */
export function misleadingTextProblem(text: string): string | undefined {
  if (/\p{Cc}/u.test(text)) return 'must not contain control characters';
  // What a decoder writes for bytes that were not UTF-8 (Latin-1 "Café" arrives as "Caf\uFFFD"):
  // stored, it would stand for whatever was sent, and two different texts would read the same.
  if (text.includes('\uFFFD')) return 'must not contain U+FFFD (bytes that were not UTF-8 read as it): send UTF-8';
  if (hasDeceptiveCharacters(text)) return `must not contain ${DECEPTIVE_KINDS}`;
  // "\u2800" or spaces alone pass a length check but show nothing.
  if (!HAS_VISIBLE.test(text)) return 'must contain at least one visible character';
  if (STACKED_MARKS.test(text)) return 'must not stack more than eight combining marks on one character';
  return undefined;
}

/**
 * Blanks a browser does not collapse as it does a run of spaces: U+3000 (what a Japanese input
 * method types for a space), U+2000-200A, the no-break spaces, U+2800. One between words is
 * writing; a run of them is layout: it pushes what follows onto a line of its own.
 */
const BLANK_RUN = /(?:[\p{White_Space}\u2800]\p{M}*){2,}/gu;
const WIDE_BLANK = /(?! )[\p{White_Space}\u2800]/gu;
/** More than this many in a name is layout too, whatever stands between them. */
const MAX_WIDE_BLANKS = 8;

/**
 * `misleadingTextProblem`, and what makes a one-line name shown on a page read as more than it
 * is: a run of wide spaces breaks it into a second line of the attacker's text ("Verified
 * publisher: …"). The rule of OAuth client names.
 */
export function displayNameProblem(text: string): string | undefined {
  const problem = misleadingTextProblem(text);
  if (problem) return problem;
  for (const [run] of text.matchAll(BLANK_RUN)) {
    if ((run.match(WIDE_BLANK)?.length ?? 0) >= 2) {
      return 'must not hold a run of wide or no-break spaces (one between words is fine)';
    }
  }
  if ((text.match(WIDE_BLANK)?.length ?? 0) > MAX_WIDE_BLANKS) {
    return `must not hold more than ${MAX_WIDE_BLANKS} wide or no-break spaces`;
  }
  return undefined;
}

/**
 * Scripts whose letters pass for each other's (Latin "a", Cyrillic "а", Greek "ο" and Latin
 * "o"): an id that mixes two of them is how a look-alike of another id is written. Scripts
 * that are written together (Japanese's Han, Hiragana and Katakana, and Latin beside any of
 * them) are not among them.
 */
const LOOK_ALIKE_SCRIPTS = ['Latin', 'Greek', 'Cyrillic', 'Armenian', 'Cherokee', 'Coptic'].map(
  (script) => [script, new RegExp(String.raw`\p{Script=${script}}`, 'u')] as const,
);

/**
 * Latin letters made for phonetics that read as the plain letters of another id: the small
 * capitals (ᴀ, ʙ, ɪ, ʀ, ꞯ, …; Unicode has none for x), the alpha and script g (ɑ, ɡ), the iota
 * (ɩ), the dotless j (ȷ) and the dental click (ǀ, a bar like l). Not the IPA letters that
 * languages write names with (Hausa's ɓ and ɗ, the open ɛ and ɔ of Ewe and Akan, Turkish's
 * dotless ı): they are letters of their own.
 */
const PHONETIC_LOOK_ALIKES: Readonly<Record<string, string>> = {
  ...Object.fromEntries(
    [...'ᴀʙᴄᴅᴇꜰɢʜɪᴊᴋʟᴍɴᴏᴘʀꜱᴛᴜᴠᴡʏᴢ'].map((capital, i) => [capital, 'abcdefghijklmnoprstuvwyz'[i] as string]),
  ),
  ꞯ: 'q',
  ɑ: 'a',
  ɡ: 'g',
  ɩ: 'i',
  ȷ: 'j',
  ǀ: 'l',
};
const PHONETIC_LOOK_ALIKE = new RegExp(`[${Object.keys(PHONETIC_LOOK_ALIKES).join('')}]`, 'u');
const EVERY_PHONETIC_LOOK_ALIKE = new RegExp(PHONETIC_LOOK_ALIKE.source, 'gu');

/**
 * Why `id`, an identifier a person types and reads (an API key's user id), could read as
 * another id, or undefined when it cannot in these three ways: a compatibility character
 * (fullwidth "ａｌｉｃｅ", styled "𝐚𝐥𝐢𝐜𝐞", the ligature "ﬁ") that Unicode itself reads as a
 * plain one (NFKC), a phonetic letter that reads as a plain one ("ɑlice", "ᴀlice"), or letters
 * of two scripts that pass for each other ("аlice" with a Cyrillic "а"). An id wholly in
 * another script that happens to look like a Latin one is not caught: that takes Unicode's
 * table of confusables.
 */
export function lookAlikeIdProblem(id: string): string | undefined {
  const plain = id.normalize('NFKC');
  if (plain !== id) {
    return `must not use compatibility characters (fullwidth or styled letters, ligatures, superscripts): it reads as ${JSON.stringify(plain)}, a different id`;
  }
  if (PHONETIC_LOOK_ALIKE.test(id)) {
    const reads = id.replace(EVERY_PHONETIC_LOOK_ALIKE, (letter) => PHONETIC_LOOK_ALIKES[letter] ?? letter);
    return `must not use phonetic letters that pass for plain ones (small capitals, ɑ for a): it reads as ${JSON.stringify(reads)}, a different id`;
  }
  const scripts = LOOK_ALIKE_SCRIPTS.filter(([, letter]) => letter.test(id)).map(([script]) => script);
  if (scripts.length > 1) {
    return `must not mix ${scripts.join(' and ')} letters, which pass for each other: write it in one script`;
  }
  return undefined;
}
