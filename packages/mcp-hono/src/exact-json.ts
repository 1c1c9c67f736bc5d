/**
 * JSON numbers that a double cannot hold exactly. `JSON.parse('12.340000000000000001')` gives
 * 12.34 without a word, so a server that must keep numbers exact (money) never sees what the
 * client meant. A decimal of 15 significant digits or fewer, within the double's range, always
 * survives the trip; only a literal with 16 or more digits, or with an exponent (1e400 becomes
 * Infinity, 1e-400 becomes 0), can be lossy.
 *
 * The text is walked once, without parsing it again: a reviver would call a function for every
 * value of the body, and any caller could make that happen (one 16-digit run anywhere, even in a
 * string, made a 1 MB body take half a second of the event loop instead of 20 ms).
 */
const MAYBE_LOSSY = /(?:\d\.?){16}|\d[eE][+-]?\d/;

/** The number literals in `text` (JSON) whose value differs from what they wrote, in order. */
export function lossyNumbers(text: string): string[] {
  const lossy: string[] = [];
  if (!MAYBE_LOSSY.test(text)) return lossy;
  walkJson(text, undefined, (start, end) => {
    if (!isExactLiteral(text, start, end)) lossy.push(text.slice(start, end));
    return false;
  });
  return lossy;
}

/**
 * In a JSON-RPC request's text, the first number literal a double cannot hold where it matters:
 * its `id` (the reply could not name the request), and in its `params` (a tool's arguments:
 * money) outside `params._meta` (a progress token this stateless endpoint never uses). Literals
 * elsewhere are not checked, and the walk stops once both are found. A member given twice is
 * looked at each time, though `JSON.parse` keeps the last: a refusal, never a lossy number let
 * through.
 */
export function lossyRequestNumbers(text: string): { id?: string; param?: string } {
  const found: { id?: string; param?: string } = {};
  if (!MAYBE_LOSSY.test(text)) return found;
  let member: string | undefined;
  let paramsMember: string | undefined;
  walkJson(
    text,
    (depth, start, end) => {
      if (depth === 1) {
        member = memberName(text, start, end);
        paramsMember = undefined;
      } else if (depth === 2 && member === 'params') {
        paramsMember = memberName(text, start, end);
      }
    },
    (start, end, depth) => {
      if (depth === 1 && member === 'id') {
        if (found.id === undefined && !isExactLiteral(text, start, end)) found.id = text.slice(start, end);
      } else if (depth >= 2 && member === 'params' && paramsMember !== '_meta') {
        if (found.param === undefined && !isExactLiteral(text, start, end)) found.param = text.slice(start, end);
      }
      return found.id !== undefined && found.param !== undefined;
    },
  );
  return found;
}

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const COMMA = 0x2c;
const MINUS = 0x2d;
const DOT = 0x2e;

function isDigit(c: number): boolean {
  return c >= 0x30 && c <= 0x39;
}

/** A character that continues a number literal: a digit, `.`, `e`, `E`, `+`, `-`. */
function continuesNumber(c: number): boolean {
  return isDigit(c) || c === DOT || c === 0x65 || c === 0x45 || c === 0x2b || c === MINUS;
}

/**
 * Walks JSON text once: `onMember` for each member name (the offsets of its quoted text, and the
 * depth of its object, 1 for the outermost), `onNumber` for each number literal and the depth of
 * what holds it; `onNumber` returning true ends the walk. Strings are skipped. The text has
 * already been parsed: its grammar is not checked here.
 */
function walkJson(
  text: string,
  onMember: ((depth: number, start: number, end: number) => void) | undefined,
  onNumber: (start: number, end: number, depth: number) => boolean,
): void {
  let depth = 0;
  const isObject: boolean[] = [false];
  let nameNext = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === QUOTE) {
      const start = i;
      for (i++; i < text.length; i++) {
        const d = text.charCodeAt(i);
        if (d === BACKSLASH) i++;
        else if (d === QUOTE) break;
      }
      if (nameNext) {
        onMember?.(depth, start, i + 1);
        nameNext = false;
      }
    } else if (c === 0x7b || c === 0x5b) {
      depth++;
      isObject[depth] = c === 0x7b;
      nameNext = c === 0x7b;
    } else if (c === 0x7d || c === 0x5d) {
      depth--;
      nameNext = false;
    } else if (c === COMMA) {
      nameNext = isObject[depth] === true;
    } else if (c === MINUS || isDigit(c)) {
      const start = i;
      while (i + 1 < text.length && continuesNumber(text.charCodeAt(i + 1))) i++;
      if (onNumber(start, i + 1, depth)) return;
    }
  }
}

/** A member name from its quoted text: sliced, or decoded when it has an escape. */
function memberName(text: string, start: number, end: number): string {
  const quoted = text.slice(start, end);
  return quoted.includes('\\') ? (JSON.parse(quoted) as string) : quoted.slice(1, -1);
}

/**
 * Whether the literal at `text[start, end)` is the value it wrote. Counted without converting
 * when it has 15 digits or fewer and its value sits among the normal doubles (10^-307 to 10^308):
 * such a decimal survives the trip. Else converted, and compared in canonical form.
 */
function isExactLiteral(text: string, start: number, end: number): boolean {
  let i = start;
  if (text.charCodeAt(i) === MINUS) i++;
  let digits = 0;
  let fractionDigits = 0;
  let inFraction = false;
  for (; i < end; i++) {
    const c = text.charCodeAt(i);
    if (isDigit(c)) {
      digits++;
      if (inFraction) fractionDigits++;
    } else if (c === DOT) inFraction = true;
    else break;
  }
  let exponent = 0;
  if (i < end) {
    i++; // e or E
    const sign = text.charCodeAt(i) === MINUS ? -1 : 1;
    if (text.charCodeAt(i) === MINUS || text.charCodeAt(i) === 0x2b) i++;
    // Capped: the bounds below only need to know that it is far out.
    for (; i < end && exponent < 100_000; i++) exponent = exponent * 10 + (text.charCodeAt(i) - 0x30);
    exponent *= sign;
  }
  if (digits <= 15 && digits - fractionDigits + exponent <= 308 && exponent - fractionDigits >= -307) return true;
  const literal = text.slice(start, end);
  const value = Number(literal);
  return Number.isFinite(value) && canonicalDecimal(literal) === canonicalDecimal(String(value));
}

/**
 * A decimal literal as sign, significant digits and exponent: "1.50" and "15e-1" agree. Zeros are
 * trimmed by index, not by a regular expression: `/0+$/` backtracks quadratically over a run of
 * zeros that does not end the text, and a literal is as long as the caller makes it.
 */
function canonicalDecimal(literal: string): string {
  const match = /^(-?)(\d+)(?:\.(\d+))?(?:[eE]([+-]?\d+))?$/.exec(literal);
  if (!match) return literal;
  const [, sign = '', whole = '', fraction = '', exponent = '0'] = match;
  const digits = whole + fraction;
  let first = 0;
  while (first < digits.length && digits.charCodeAt(first) === 0x30) first++;
  if (first === digits.length) return '0';
  let end = digits.length;
  while (digits.charCodeAt(end - 1) === 0x30) end--;
  const trailingZeros = digits.length - end;
  return `${sign}${digits.slice(first, end)}e${Number(exponent) - fraction.length + trailingZeros}`;
}
