/**
 * How deeply JSON nests, measured before anything recursive touches it: V8's `JSON.parse`
 * copes with any depth, but `JSON.stringify`, a reviver, zod and most code that walks a value
 * recurse and throw `RangeError: Maximum call stack size exceeded` somewhere past a few thousand
 * levels. A request nested deeper than any real one is refused up front instead.
 */
export const DEFAULT_MAX_JSON_DEPTH = 64;

/** Whether the JSON text nests arrays and objects deeper than `max` (strings are skipped). */
export function jsonTextTooDeep(text: string, max = DEFAULT_MAX_JSON_DEPTH): boolean {
  let depth = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 0x5c)
        i++; // backslash: skip the escaped character
      else if (c === 0x22) inString = false;
    } else if (c === 0x22) {
      inString = true;
    } else if (c === 0x5b || c === 0x7b) {
      if (++depth > max) return true;
    } else if (c === 0x5d || c === 0x7d) {
      depth--;
    }
  }
  return false;
}

/** Whether a parsed value nests deeper than `max`; walks without recursion. */
export function jsonValueTooDeep(value: unknown, max = DEFAULT_MAX_JSON_DEPTH): boolean {
  const stack: [unknown, number][] = [[value, 0]];
  while (stack.length > 0) {
    const [current, depth] = stack.pop() as [unknown, number];
    if (typeof current !== 'object' || current === null) continue;
    if (depth + 1 > max) return true;
    for (const child of Array.isArray(current) ? current : Object.values(current)) {
      if (typeof child === 'object' && child !== null) stack.push([child, depth + 1]);
    }
  }
  return false;
}
