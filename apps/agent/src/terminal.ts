/**
 * Text from the model or from an MCP server, made safe to print on a terminal: control
 * characters other than newline and tab are dropped. Escape sequences in such text can set the
 * clipboard (OSC 52), hide text, rewrite what is already on screen or retitle the window, and
 * neither the model nor a third-party server is trusted to write to the user's terminal.
 */
export function forTerminal(text: string): string {
  return text.replace(/(?![\n\t])\p{Cc}/gu, '');
}
