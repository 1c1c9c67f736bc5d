/**
 * URLs written into error texts, without what they may carry: an MCP server's URL may hold its key
 * (`?tavilyApiKey=…`), and errors reach the terminal, the log, /ready, /chat and the model.
 */

/**
 * `error` as a new Error (its `stack` and `cause` would still carry what the message had) of the
 * same name, whose message has every URL that carries a query, a fragment or userinfo cut to
 * its origin and path (`withoutUrlSecrets`).
 */
export function withUrlSecretsHidden(error: unknown): Error {
  const original = error instanceof Error ? error : new Error(String(error));
  const hidden = new Error(withoutUrlSecrets(original.message));
  hidden.name = original.name;
  return hidden;
}

/**
 * A URL in running text: a scheme and `//`, up to white space, a double quote, `<`, `>` or a
 * backtick, less the punctuation of the sentence around it (`…?key=s, but`).
 */
const URL_IN_TEXT = /\b[a-z][a-z0-9+.-]*:\/\/[^\s"<>`]*[^\s"<>`.,;:!)\]]/gi;

/**
 * `text` with every URL that has a query, a fragment or userinfo written as its origin and path,
 * with markers where something was left out: `https://mcp.tavily.com/mcp/?…`, `#…`,
 * `https://…@host/`. What is left is enough to tell which server failed, and holds no key. A
 * URL that does not parse is cut after its scheme, since where its secret ends is unknown.
 */
export function withoutUrlSecrets(text: string): string {
  return text.replace(URL_IN_TEXT, (found) => {
    if (!URL.canParse(found)) return `${found.slice(0, found.indexOf('//') + 2)}…`;
    const url = new URL(found);
    if (!url.search && !url.hash && !url.username && !url.password) return found;
    const userinfo = url.username || url.password ? '…@' : '';
    return `${url.protocol}//${userinfo}${url.host}${url.pathname}${url.search ? '?…' : ''}${url.hash ? '#…' : ''}`;
  });
}
