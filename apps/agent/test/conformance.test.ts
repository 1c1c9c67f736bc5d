/**
 * The agent's OAuth client judged by the official MCP conformance suite: for each scenario the
 * suite starts an MCP server and an authorization server that behave as the scenario says
 * (metadata in each of its places, scopes named or not, step-up, a pre-registered or a
 * client-credentials client, and the attacks: another resource, a wrong or missing `iss`,
 * metadata with another issuer, endless 403s), runs the agent against them
 * (`helpers/conformance-client.ts`) and records what the agent did. Every recorded check must
 * pass except the few listed with their reason; the agent must reach the scenario's tool where
 * the expectation says so, and where it does not, it must have stopped for the reason given
 * (a crash or a hang is not a refusal).
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { runConformance, unsuccessful } from '@mcp-auth-stack/testing/conformance';
import { CONFORMANCE_CLIENT, CONFORMANCE_TOOL_CALLED } from './helpers/agent.ts';

interface Expectation {
  /** The agent signs in and calls the scenario's tool. */
  calls: boolean;
  /** When it does not: why it stopped, as the agent said it (so a crash cannot pass for a refusal). */
  refusal?: RegExp;
  /** Checks that do not succeed, each with the reason that is kept. */
  kept?: Record<string, string>;
}

const RFC_9207 = /AuthorizationCallbackError: the authorization answer .*\(RFC 9207\)/;

const SCENARIOS: Record<string, Expectation> = {
  'auth/metadata-default': { calls: true },
  'auth/metadata-var1': { calls: true },
  'auth/metadata-var2': { calls: true },
  'auth/metadata-var3': { calls: true },
  'auth/basic-cimd': { calls: true },
  'auth/scope-from-www-authenticate': { calls: true },
  'auth/scope-from-scopes-supported': { calls: true },
  'auth/scope-omitted-when-undefined': { calls: true },
  'auth/scope-step-up': { calls: true },
  'auth/token-endpoint-auth-basic': { calls: true },
  'auth/token-endpoint-auth-post': { calls: true },
  'auth/token-endpoint-auth-none': { calls: true },
  'auth/pre-registration': { calls: true },
  'auth/client-credentials-basic': { calls: true },
  'auth/2025-03-26-oauth-metadata-backcompat': { calls: true },
  // Refused, as a careful client must: the suite checks that nothing was asked of the wrong party.
  'auth/scope-retry-limit': {
    calls: false,
    refusal: /Failed to load tools from server "expenses": Error: Unauthorized/,
  },
  'auth/resource-mismatch': {
    calls: false,
    refusal: /says it is the resource https:\/\/evil\.example\.com\/mcp, another server/,
  },
  'auth/iss-supported-missing': { calls: false, refusal: RFC_9207 },
  'auth/iss-wrong-issuer': { calls: false, refusal: RFC_9207 },
  'auth/iss-unexpected': { calls: false, refusal: RFC_9207 },
  'auth/iss-normalized': { calls: false, refusal: RFC_9207 },
  'auth/metadata-issuer-mismatch': {
    calls: false,
    refusal: /names the issuer https:\/\/attacker\.example\.com: not used \(RFC 8414 3\.3\)/,
  },
  // No metadata means no PKCE announced; the 2025-11-25 specification has the client stop there.
  'auth/2025-03-26-oauth-endpoint-fallback': {
    calls: false,
    refusal: /DiscoveryError: no authorization server metadata at/,
    kept: {
      'client-registration FAILURE': 'no registration where no metadata was read (decision 61)',
      'authorization-request FAILURE': 'no sign-in where PKCE is not announced (decision 59)',
      'token-request FAILURE': 'no sign-in where PKCE is not announced (decision 59)',
    },
  },
  // The sign-in passes every check; then the scenario's server speaks only MCP 2026-07-28,
  // which the MCP SDK's client does not yet.
  'auth/iss-supported': { calls: false, refusal: /Missing MCP-Protocol-Version header/ },
  'auth/iss-not-advertised': { calls: false, refusal: /Missing MCP-Protocol-Version header/ },
};

describe('the agent under the official MCP conformance suite (client scenarios)', () => {
  for (const [scenario, expected] of Object.entries(SCENARIOS)) {
    test(scenario, async () => {
      const run = await runConformance(scenario, { client: `"${process.execPath}" "${CONFORMANCE_CLIENT}"` });
      const context = `${run.output}\nthe agent said:\n${run.clientStderr}`;
      assert.equal(run.timedOut, false, context);
      assert.doesNotMatch(run.output, /Client timed out/, context);
      assert.deepEqual(unsuccessful(run).sort(), Object.keys(expected.kept ?? {}).sort(), context);
      assert.equal(run.clientStdout.includes(CONFORMANCE_TOOL_CALLED), expected.calls, context);
      if (expected.refusal) assert.match(run.clientStderr, expected.refusal, context);
    });
  }
});
