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
  return (findLossyNumbers(text)?.lossy ?? []).map((number) => number.literal);
}

/** A number literal a double cannot hold, with where it sits in the parsed document. */
export interface LossyNumber {
  literal: string;
  /** The object or array holding it (the parsed document's own), and its key there. */
  holder: object;
  key: string;
}

/**
 * The document parsed, with its lossy number literals and where each sits, or undefined when no
 * literal in `text` can be lossy (the common case: nothing is parsed).
 */
export function findLossyNumbers(text: string): { document: unknown; lossy: LossyNumber[] } | undefined {
  if (!MAYBE_LOSSY.test(text)) return undefined;
  const lossy: LossyNumber[] = [];
  const document: unknown = JSON.parse(
    text,
    function (this: object, key: string, value: unknown, context?: { source?: string }) {
      if (typeof value === 'number' && context?.source !== undefined) {
        if (!Number.isFinite(value) || canonicalDecimal(context.source) !== canonicalDecimal(String(value))) {
          lossy.push({ literal: context.source, holder: this, key });
        }
      }
      return value;
    },
  );
  return { document, lossy };
}

/** Every object and array in `value`, itself included (the depth is bounded before this runs). */
export function containersIn(value: unknown, into = new Set<object>()): Set<object> {
  if (typeof value !== 'object' || value === null || into.has(value)) return into;
  into.add(value);
  for (const member of Object.values(value)) containersIn(member, into);
  return into;
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
