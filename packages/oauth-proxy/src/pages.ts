/*
 * The consent, continue and error pages: plain HTML, inline styles allowed by a per-response
 * nonce; one script, the consent page's guard against a click it did not see coming.
 */

export interface ConsentPageInput {
  nonce: string;
  action: string;
  requestId: string;
  csrf: string;
  clientName: string | undefined;
  clientId: string;
  clientKind: 'registered' | 'metadata_document';
  redirectUri: string;
  scopes: readonly { name: string; description: string | undefined }[];
  resourceName: string;
  resource: string;
  upstreamName: string;
}

export function escapeHtml(value: string): string {
  return value.replace(/[&<>"']/g, (char) => `&#${char.charCodeAt(0)};`);
}

const STYLE = `
  :root { color-scheme: light dark; --fg: #1c2024; --muted: #5d6670; --bg: #f5f6f8; --card: #fff; --line: #dde1e6;
    --accent: #2757d6; --accent-fg: #fff; --warn: #8a4b00; }
  @media (prefers-color-scheme: dark) { :root { --fg: #e8eaed; --muted: #a0a8b2; --bg: #15181c; --card: #1e2227;
    --line: #333a42; --accent: #6d95ff; --accent-fg: #0b1020; --warn: #f0b35a; } }
  * { box-sizing: border-box; }
  body { margin: 0; min-height: 100vh; display: grid; place-items: center; background: var(--bg); color: var(--fg);
    font: 16px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; padding: 24px; }
  main { width: 100%; max-width: 480px; background: var(--card); border: 1px solid var(--line); border-radius: 12px;
    padding: 28px; box-shadow: 0 1px 3px rgb(0 0 0 / 8%); }
  h1 { font-size: 1.3rem; margin: 0 0 4px; line-height: 1.3; overflow: hidden; overflow-wrap: anywhere; }
  .sub { color: var(--muted); margin: 0 0 20px; }
  dl { margin: 0 0 20px; display: grid; gap: 12px; }
  dt { font-size: .8rem; text-transform: uppercase; letter-spacing: .04em; color: var(--muted); }
  dd { margin: 2px 0 0; overflow-wrap: anywhere; overflow: hidden; }
  code { font: .9rem ui-monospace, SFMono-Regular, Menlo, monospace; }
  ul { margin: 4px 0 0; padding-left: 1.2rem; }
  .note { font-size: .9rem; color: var(--warn); margin: 0 0 20px; }
  label.remember { display: flex; gap: 8px; align-items: center; margin: 0 0 20px; font-size: .95rem; }
  .actions { display: flex; gap: 12px; }
  button { flex: 1; font: inherit; padding: 10px 16px; border-radius: 8px; border: 1px solid var(--line);
    background: transparent; color: var(--fg); cursor: pointer; }
  button.primary { background: var(--accent); border-color: var(--accent); color: var(--accent-fg); font-weight: 600; }
  button:focus-visible { outline: 3px solid var(--accent); outline-offset: 2px; }
  footer { margin-top: 20px; font-size: .85rem; color: var(--muted); }
  [hidden] { display: none; }
`;

function layout(nonce: string, title: string, body: string, head = ''): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">${head}
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="same-origin">
<title>${escapeHtml(title)}</title>
<style nonce="${nonce}">${STYLE}</style>
</head>
<body>
<main>
${body}
</main>
</body>
</html>`;
}

export function consentPage(input: ConsentPageInput): string {
  const redirect = new URL(input.redirectUri);
  const name = input.clientName?.trim() || redirect.host;
  const scopes = input.scopes
    .map(
      (scope) =>
        `<li><code>${escapeHtml(scope.name)}</code>${scope.description ? ` — ${escapeHtml(scope.description)}` : ''}</li>`,
    )
    .join('');
  const identity =
    input.clientKind === 'metadata_document'
      ? 'Its identity is the metadata document published at its client id.'
      : 'This application registered itself; its name is not verified.';
  return layout(
    input.nonce,
    `Allow ${name}?`,
    `<h1>Allow <span>${escapeHtml(name)}</span> to access ${escapeHtml(input.resourceName)}?</h1>
<p class="sub">An application wants to act on your behalf. Continue only if you started this from it.</p>
<dl>
  <dt>Application</dt>
  <dd>${escapeHtml(name)}<br><code>${escapeHtml(input.clientId)}</code></dd>
  <dt>It will receive access at</dt>
  <dd><code>${escapeHtml(input.redirectUri)}</code></dd>
  <dt>Permissions requested</dt>
  <dd><ul>${scopes || '<li>Basic access</li>'}</ul></dd>
  <dt>Resource</dt>
  <dd><code>${escapeHtml(input.resource)}</code></dd>
</dl>
<p class="note">${escapeHtml(identity)} If you approve, you will sign in with ${escapeHtml(input.upstreamName)}.</p>
<form method="post" action="${escapeHtml(input.action)}">
  <input type="hidden" name="request" value="${escapeHtml(input.requestId)}">
  <input type="hidden" name="csrf" value="${escapeHtml(input.csrf)}">
  <label class="remember"><input type="checkbox" name="remember" value="1"> Remember my decision for this application</label>
  <div class="actions">
    <button type="submit" name="decision" value="deny">Deny</button>
    <button type="submit" name="decision" value="approve" class="primary">Approve</button>
  </div>
  <p class="note" id="unseen-click" role="alert" hidden>That click came before the pointer had moved over this page. Look the request over, then click Approve again.</p>
</form>
<footer>You can revoke access later by signing out of the application.</footer>
<script nonce="${input.nonce}">${CONSENT_GUARD}</script>`,
  );
}

/**
 * Double-clickjacking: a page that put this one behind a popup of its own can close the popup on
 * the first click of a double-click and land the second on Approve, long after this page was
 * made (so past the server's `consentMinimumViewMs`). Such a click comes with no pointer moving
 * over this page before it, or one that began moving a moment before (a hand's jitter between
 * the two clicks). So a mouse click on Approve is taken once the pointer has been moving over
 * the page for half a second before the press (positions on the screen, not `movementX`, which
 * some Safari versions report as 0). Only mouse presses: a keyboard, a screen reader or voice
 * control (whose clicks come without a press), a touch or a pen are not held back, nor is Deny;
 * without script the server's check stands alone.
 */
const CONSENT_GUARD = `(() => {
  const form = document.querySelector('form');
  const approve = form.querySelector('button[value="approve"]');
  let position;
  let movingSince;
  let press;
  addEventListener('pointermove', (event) => {
    if (!event.isTrusted || event.pointerType !== 'mouse') return;
    const at = event.screenX + ',' + event.screenY;
    if (position !== undefined && position !== at && movingSince === undefined) movingSince = event.timeStamp;
    position = at;
  }, true);
  addEventListener('pointerdown', (event) => {
    if (event.isTrusted) press = { type: event.pointerType, at: event.timeStamp };
  }, true);
  form.addEventListener('submit', (event) => {
    if (event.submitter !== approve || press === undefined || press.type !== 'mouse') return;
    if (event.timeStamp - press.at > 1000) return;
    if (movingSince !== undefined && press.at - movingSince >= 500) return;
    event.preventDefault();
    document.getElementById('unseen-click').hidden = false;
  });
})();`;

/**
 * Goes on to `location` at once: a refresh (no script), and a link for a browser that does not
 * follow it. A `'` ends the refresh's URL early: written %27, as a URL may write it.
 */
export function continuePage(nonce: string, location: string, where: string): string {
  const refresh = `0; url='${location.replaceAll("'", '%27')}'`;
  return layout(
    nonce,
    `Continuing to ${where}`,
    `<h1>Continuing to ${escapeHtml(where)}…</h1>
<p class="sub"><a href="${escapeHtml(location)}">Continue</a> if nothing happens.</p>`,
    `\n<meta http-equiv="refresh" content="${escapeHtml(refresh)}">`,
  );
}

export function errorPage(nonce: string, title: string, message: string): string {
  return layout(
    nonce,
    title,
    `<h1>${escapeHtml(title)}</h1>
<p class="sub">${escapeHtml(message)}</p>
<footer>Return to the application and start again.</footer>`,
  );
}
