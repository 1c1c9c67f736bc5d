/**
 * Text from the model or from an MCP server, made safe to print on a terminal: control
 * characters other than newline and tab are dropped. Escape sequences in such text can set the
 * clipboard (OSC 52), hide text, rewrite what is already on screen or retitle the window, and
 * neither the model nor a third-party server is trusted to write to the user's terminal.
 * Unicode's explicit direction controls (embeddings, overrides, isolates) are shown as their code
 * points: they reorder what follows them on screen, so a tool call's arguments shown for a
 * confirmation could read otherwise than what is sent (`{"q":"all ‮LLA"}`).
 */
export function forTerminal(text: string): string {
  return text
    .replace(/(?![\n\t])\p{Cc}/gu, '')
    .replace(
      /[\u202a-\u202e\u2066-\u2069]/g,
      (control) => `<U+${(control.codePointAt(0) as number).toString(16).toUpperCase()}>`,
    );
}
