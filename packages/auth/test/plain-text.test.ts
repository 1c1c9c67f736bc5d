import assert from 'node:assert/strict';
import { test } from 'node:test';
import { DECEPTIVE_KINDS, lookAlikeIdProblem, misleadingTextProblem } from '../src/plain-text.ts';

// The rule of text people read (descriptions, client names, key labels). Each list is checked
// whole, so a failure names every case that went the wrong way.

/** `text` spelled in TAG characters: invisible, but a model reads it. */
const tags = (text: string) =>
  [...text].map((c) => String.fromCodePoint(0xe0000 + (c.codePointAt(0) as number))).join('');
const flag = (subdivision: string) => `\u{1F3F4}${tags(subdivision)}\u{E007F}`;
/** Bytes hidden as variation selectors (U+FE00-FE0F for 0-15, U+E0100-E01EF for 16-255). */
const selectors = (bytes: number[]) =>
  bytes.map((b) => String.fromCodePoint(b < 16 ? 0xfe00 + b : 0xe0100 + b - 16)).join('');

const invisible = `must not contain ${DECEPTIVE_KINDS}`;

test('hidden text and invisible characters are refused', () => {
  const refused: [string, string][] = [
    ['TAG text after a black flag, six letters a flag, chained', `${flag('ignore')}${flag('allpre')}${flag('vious')}`],
    ['a well-formed subdivision flag that is not England, Scotland or Wales', `Trip ${flag('usca')}`],
    ['a subdivision flag of three digits', flag('fr123')],
    ['an RGI flag with more TAG text after it', `${flag('gbeng')}${tags('run')}`],
    ['TAG text without a flag', `Lunch${tags('IGNORE PREVIOUS')}`],
    [
      'bytes hidden in variation selectors after an emoji',
      `Lunch 😀${selectors([0x69, 0x67, 0x6e, 0x6f, 0x72, 0x65])}`,
    ],
    ['a run of VS1-VS16 after a letter', `Lunch${selectors([1, 2, 3, 4])}`],
    ['two emoji-style selectors in a row', 'Heart \u2764\uFE0F\uFE0F'],
    ['VS16 after a space', 'Lunch \uFE0F'],
    ['VS16 first', '\uFE0FLunch'],
    ['an ideographic variation selector after a Latin letter', 'Lunch\u{E0100}'],
    ['two ideographic variation selectors after an ideograph', '\u845B\u{E0100}\u{E0101}'],
    ['a run of joiners between two letters (bits)', 'Lu\u200D\u200C\u200D\u200C\u200Cnch'],
    ['a leading joiner', '\u200DLunch'],
    ['a trailing joiner', 'Lunch\u200D'],
    ['a trailing non-joiner', 'Lunch\u200C'],
    ['a joiner next to a space', 'Lunch \u200D with'],
    ['the combining grapheme joiner U+034F', 'Lu\u034Fnch'],
    ['the Khmer inherent vowel U+17B4', 'Lunch\u17B4'],
    ['a Mongolian free variation selector U+180B', 'Lunch\u180B'],
    ['the unassigned default-ignorable U+2065', 'Lunch\u2065'],
    ['the reserved U+FFF0', 'Lunch\uFFF0'],
    ['the reserved U+E0000', 'Lunch\u{E0000}'],
    ['a right-to-left override', 'Lunch \u202Egnp.exe'],
    ['a zero-width space', 'Zero\u200Bwidth'],
    ['a soft hyphen', 'Lu\u00ADnch'],
    ['a line separator', 'Lunch\u2028more'],
    ['the Hangul filler', 'Lunch\u3164'],
    ['an unpaired surrogate', 'Lone \ud800'],
    ['noncharacters spelling bits', 'Lunch\uFFFE\uFFFF\uFFFF\uFFFE'],
    ['a noncharacter alone', '\uFFFF'],
    ['the noncharacter U+FDD0', 'Lunch\uFDD0'],
    ['the last code point, a noncharacter', 'Lunch\u{10FFFF}'],
  ];
  const wrong = refused.filter(([, text]) => misleadingTextProblem(text) !== invisible).map(([what]) => what);
  assert.deepEqual(wrong, []);
});

test('text that shows nothing is refused', () => {
  const refused: [string, string][] = [
    ['a joiner alone', '\u200D'],
    ['VS16 alone', '\uFE0F'],
    ['an ideographic variation selector alone', '\u{E0100}'],
    ['the blank Braille pattern', '\u2800'],
    ['blank Braille patterns and spaces', ' \u2800\u2800 '],
    ['an ideographic space', '\u3000'],
    ['the Hangul filler alone', '\u3164'],
  ];
  const wrong = refused.filter(([, text]) => misleadingTextProblem(text) === undefined).map(([what]) => what);
  assert.deepEqual(wrong, []);
  assert.equal(misleadingTextProblem('\u2800'), 'must contain at least one visible character');
});

test('the replacement character, what a decoder makes of bytes that were not UTF-8, is refused', () => {
  // Latin-1 "Café" and "Cafè" would both arrive as "Caf\uFFFD": stored, they read the same.
  for (const text of ['Caf\uFFFD', '\uFFFD', 'Lunch \uFFFD\uFFFD']) {
    assert.match(misleadingTextProblem(text) ?? '', /U\+FFFD/, JSON.stringify(text));
  }
  assert.equal(misleadingTextProblem('Café'), undefined);
});

test('control characters are refused as such', () => {
  for (const text of ['x\u001b[2Jy', 'a\rb', 'a\u0000b', 'a\u0085b', 'a\nb']) {
    assert.equal(misleadingTextProblem(text), 'must not contain control characters', JSON.stringify(text));
  }
});

test('combining marks stacked past what any script writes are refused; as scripts stack them, they pass', () => {
  for (const text of [
    `Z${'\u0336\u0335\u0334'.repeat(150)}`,
    `e${'\u0301'.repeat(9)}`,
    // Joiners and emoji-style selectors, allowed after a visible character, split the run but not the stack.
    `Z${Array(49).fill('\u0336'.repeat(8)).join('\u200D')}`,
    `Z${Array(49).fill('\u0336'.repeat(8)).join('\u200C')}`,
    `Z${'\u0336\uFE0F'.repeat(20)}`,
  ]) {
    assert.equal(
      misleadingTextProblem(text),
      'must not stack more than eight combining marks on one character',
      JSON.stringify(text),
    );
  }
  // Vietnamese (two marks), decomposed; Burmese (five on one letter); Hebrew with points; eight marks.
  for (const text of ['Vie\u0302\u0323t', 'က\u103B\u103D\u102D\u102F\u1036', 'שָׁלוֹם', `e${'\u0301'.repeat(8)}`]) {
    assert.equal(misleadingTextProblem(text), undefined, JSON.stringify(text));
  }
});

test('flags, emoji sequences, variation sequences and scripts that need joiners pass', () => {
  const accepted: [string, string][] = [
    ['England, Scotland and Wales', `${flag('gbeng')} ${flag('gbsct')} ${flag('gbwls')}`],
    ['three flags in a row', `${flag('gbeng')}${flag('gbsct')}${flag('gbwls')}`],
    ['the rainbow flag (VS16 then ZWJ)', '\u{1F3F3}\uFE0F\u200D\u{1F308}'],
    ['the pirate flag', '\u{1F3F4}\u200D\u2620\uFE0F'],
    ['a family', '\u{1F468}\u200D\u{1F469}\u200D\u{1F467}'],
    ['a skin tone', '\u{1F44D}\u{1F3FD}'],
    ['a keycap', '1\uFE0F\u20E3'],
    ['a red heart (emoji style)', '\u2764\uFE0F'],
    ['a heart in text style', '\u2764\uFE0E'],
    ['an Ideographic Variation Sequence', '\u845B\u{E0100}'],
    ['Persian with ZWNJ', 'می\u200Cخواهم'],
    ['Devanagari with ZWJ', 'क्\u200Dष'],
    ['Devanagari with ZWNJ', 'क्\u200Cष'],
    ['accented Latin', 'Crème brûlée, Smørrebrød, Ärger'],
    ['Hangul syllables', '한국어 식사'],
    ['a description with emoji', 'Café with the family \u{1F468}\u200D\u{1F469}\u200D\u{1F467} \u2764\uFE0F'],
    ["a private-use character (a font's logo)", 'Charger \uF8FF'],
  ];
  const wrong = accepted
    .filter(([, text]) => misleadingTextProblem(text) !== undefined)
    .map(([what, text]) => `${what}: ${misleadingTextProblem(text)}`);
  assert.deepEqual(wrong, []);
});

test('an id that passes for another is refused: compatibility characters, and letters of scripts that look alike', () => {
  const refused: [string, RegExp][] = [
    ['\uFF41\uFF4C\uFF49\uFF43\uFF45', /compatibility characters .*: it reads as "alice", a different id/], // fullwidth
    ['\u{1D41A}\u{1D425}\u{1D422}\u{1D41C}\u{1D41E}', /reads as "alice"/], // mathematical bold
    ['\uFB01na', /reads as "fina"/], // the ligature fi
    ['bob\u00B2', /reads as "bob2"/],
    ['\u0430lice', /must not mix Latin and Cyrillic letters/], // a Cyrillic a
    ['b\u03BFb', /must not mix Latin and Greek letters/], // a Greek omicron
    ['\u0440\u0430y\u0440\u0430l', /must not mix Latin and Cyrillic letters/],
    // Latin phonetic letters, all one script (a review stored both as keys' user ids).
    ['\u0251lice', /phonetic letters that pass for plain ones .*: it reads as "alice", a different id/],
    ['\u1D00lice', /reads as "alice"/], // small capital A
    ['\u0299\u1D0F\u0299', /reads as "bob"/], // small capitals
    ['\u01C0\u1D07e', /reads as "lee"/],
    ['\uA7AFueen', /reads as "queen"/], // small capital Q
    ['\u0237ohn', /reads as "john"/], // dotless j
  ];
  const wrong = refused.filter(([id, message]) => !message.test(lookAlikeIdProblem(id) ?? ''));
  assert.deepEqual(wrong, []);
  // One script, or scripts written together, and digits and punctuation with any of them.
  const accepted = [
    'alice',
    'alice@example.com',
    'jos\u00E9',
    '\u0438\u0432\u0430\u043D-42', // иван-42
    '\u03B1\u03BB\u03AD\u03BE\u03B7\u03C2', // αλέξης
    '\u5C71\u7530\u305F\u308D\u3046', // 山田たろう: Han and Hiragana
    '\u30BF\u30ED\u30A6_tanaka', // Katakana and Latin
    '\uAE40\uBBFC\uC900-kim', // Hangul and Latin
    'f81d4fae-7dec-11d0-a765-00a0c91e6bf6',
    // IPA letters languages write names with: Hausa, Ewe and Akan, Turkish.
    '\u0253ello-\u0257an',
    'k\u0254fi-\u025Bsi',
    'ayd\u0131n',
  ];
  assert.deepEqual(
    accepted.filter((id) => lookAlikeIdProblem(id) !== undefined),
    [],
  );
});
