/**
 * Builds a `WWW-Authenticate: Bearer` header value (RFC 6750 section 3) from parameters,
 * quoting each value and escaping what a quoted-string cannot hold as is.
 */
export function bearerChallenge(parameters: Record<string, string | undefined>): string {
  const parts: string[] = [];
  for (const [name, value] of Object.entries(parameters)) {
    if (value === undefined) continue;
    parts.push(`${name}="${value.replace(/[\\"]/g, (char) => `\\${char}`).replace(/[\r\n]/g, ' ')}"`);
  }
  return parts.length > 0 ? `Bearer ${parts.join(', ')}` : 'Bearer';
}
