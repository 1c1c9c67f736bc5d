/**
 * JSON numbers that a double cannot hold exactly. `JSON.parse('12.340000000000000001')` gives
 * 12.34 without a word, so a server that must keep numbers exact (money) never sees what the
 * client meant. A decimal of 15 significant digits or fewer, within the double's range, always
 * survives the trip; only a literal with 16 or more digits, or with an exponent (1e400 becomes
 * Infinity, 1e-400 becomes 0), can be lossy, so only a body with such a literal is parsed again
 * with a reviver that compares each number's source text with its value.
 */
const MAYBE_LOSSY = /(?:\d\.?){16}|\d[eE][+-]?\d/;

/** The number literals in `text` whose value differs from what they wrote. */
export function lossyNumbers(text: string): string[] {
  if (!MAYBE_LOSSY.test(text)) return [];
  const lossy: string[] = [];
  JSON.parse(text, (_key, value: unknown, context?: { source?: string }) => {
    if (typeof value === 'number' && context?.source !== undefined) {
      if (!Number.isFinite(value) || canonicalDecimal(context.source) !== canonicalDecimal(String(value))) {
        lossy.push(context.source);
      }
    }
    return value;
  });
  return lossy;
}

/** A decimal literal as sign, significant digits and exponent: "1.50" and "15e-1" agree. */
function canonicalDecimal(literal: string): string {
  const match = /^(-?)(\d+)(?:\.(\d+))?(?:[eE]([+-]?\d+))?$/.exec(literal);
  if (!match) return literal;
  const [, sign = '', whole = '', fraction = '', exponent = '0'] = match;
  const digits = (whole + fraction).replace(/^0+/, '');
  if (digits === '') return '0';
  const significant = digits.replace(/0+$/, '');
  return `${sign}${significant}e${Number(exponent) - fraction.length + (digits.length - significant.length)}`;
}
