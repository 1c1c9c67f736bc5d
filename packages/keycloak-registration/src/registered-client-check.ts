import { AuthUnavailableError } from '@mcp-auth-stack/auth';
import { type KeycloakAdminApiOptions, KeycloakUnreachableError, keycloakAdminApi } from './admin-api.ts';
import { KEYCLOAK_BUILT_IN_CLIENTS } from './keycloak-client-janitor.ts';
import { DEFAULT_REDIRECT_HOSTS, isAllowedRedirectUri } from './redirect-hosts.ts';

/** Options of `keycloakRegisteredClientCheck`: the janitor's service account (`view-clients` suffices). */
export interface KeycloakRegisteredClientCheckOptions extends KeycloakAdminApiOptions {
  /** Client ids trusted without a look (the realm's own clients); Keycloak's built-in ones always are. */
  keep?: readonly string[] | undefined;
  /** Besides loopback, the hosts https redirect URIs may name (default: VS Code's web pages). */
  redirectHosts?: readonly string[] | undefined;
  /** How long a client's verdict is used before its redirect URIs are read again (default 60 s). */
  ttlSeconds?: number | undefined;
  /** How long a verdict stands in while Keycloak does not answer (default 1 h); a refusal of redirect URIs is kept. */
  staleSeconds?: number | undefined;
  /** Verdicts kept at most (default 10 000; the oldest go first). */
  maxEntries?: number | undefined;
}

interface Verdict {
  /** Why the client's tokens are refused; undefined when they are taken. */
  refusal: string | undefined;
  /** A refusal for what the client was made with, which it cannot change: kept for good. */
  lasting: boolean;
  readAt: number;
}

interface RegisteredClient {
  clientId: string;
  consentRequired?: boolean;
  redirectUris?: string[];
  protocolMappers?: { protocolMapper?: string }[];
}

/**
 * Keycloak 26.7.3 asks DNS whether a registered redirect URI is loopback (decision 74): a
 * stranger registers `https://his.host/cb` while his DNS record says 127.0.0.1, points it at his
 * server afterwards, and receives the code of everyone who approves his client's consent page.
 * This repository's realm refuses such a registration with an executor of its own (decision 75);
 * a realm without it, or a client made otherwise with consent required, is what this check is for.
 * It refuses the tokens of such a client here: for a client the realm's anonymous registration
 * made (consent required, not in `keep`), every redirect URI must name a loopback host or an
 * allowed https host, compared as text. This is sound because the realm refuses every change a
 * client makes to itself (its registration access token): the redirect URIs read here are the
 * ones it had when its code was sent. A verdict is used `ttlSeconds` (an administrator may fix
 * a client meanwhile, and a client that was gone may be made again); a refusal of its redirect
 * URIs is kept. Returns the refusal's description, or undefined for a
 * client whose tokens are taken.
 */
export function keycloakRegisteredClientCheck(
  options: KeycloakRegisteredClientCheckOptions,
): (clientId: string | undefined) => Promise<string | undefined> {
  const adminApi = keycloakAdminApi(options);
  const now = options.now ?? Date.now;
  const keep = new Set([...KEYCLOAK_BUILT_IN_CLIENTS, options.clientId, ...(options.keep ?? [])]);
  const redirectHosts = options.redirectHosts ?? DEFAULT_REDIRECT_HOSTS;
  const ttlMs = (options.ttlSeconds ?? 60) * 1000;
  const staleMs = (options.staleSeconds ?? 3600) * 1000;
  const maxEntries = options.maxEntries ?? 10_000;
  const verdicts = new Map<string, Verdict>();
  const reading = new Map<string, Promise<Verdict>>();

  async function read(clientId: string): Promise<Verdict> {
    const bearer = await adminApi.token();
    const found = (await adminApi.call(bearer, `/clients?clientId=${encodeURIComponent(clientId)}&search=false`)) as
      | RegisteredClient[]
      | undefined;
    const client = found?.find((candidate) => candidate.clientId === clientId);
    // A client that is gone may come back under the same id: a metadata document's URL is the
    // id of every user's client made from it, which Keycloak makes again at the next sign-in
    // after the janitor deleted it. Its absence is a verdict for `ttlSeconds` only, as a
    // taken client's: kept for good, one token of the moment it was gone would refuse
    // everyone's tokens of that id until the server restarts.
    if (!client) {
      return {
        refusal: 'The access token was issued to a client the realm does not have.',
        lasting: false,
        readAt: now(),
      };
    }
    const refusal = refusalOf(client);
    return { refusal, lasting: refusal !== undefined, readAt: now() };
  }

  function refusalOf(client: RegisteredClient): string | undefined {
    // Keycloak adds a pairwise sub mapper to a client registered with `subject_type: pairwise`,
    // after the realm's registration policies ran: its `sub` is then a value of its own per
    // client, not the user's id, whoever made the client.
    if (client.protocolMappers?.some((mapper) => mapper.protocolMapper?.endsWith('-pairwise-sub-mapper'))) {
      return 'The access token was issued to a client whose sub is pairwise, not the user id.';
    }
    if (client.consentRequired !== true) return undefined; // made by an administrator, not registered anonymously
    // A relative redirect URI (resolved by Keycloak against the client's root URL) is no URL
    // here, so it is refused as well.
    for (const uri of client.redirectUris ?? []) {
      if (!isAllowedRedirectUri(uri, redirectHosts)) {
        return 'The access token was issued to a client whose redirect URIs name a host this resource does not trust.';
      }
    }
    return undefined;
  }

  function remember(clientId: string, verdict: Verdict): void {
    verdicts.delete(clientId);
    verdicts.set(clientId, verdict);
    if (verdicts.size > maxEntries) verdicts.delete(verdicts.keys().next().value as string);
  }

  return async (clientId) => {
    if (clientId === undefined) return 'The access token names no client (azp).';
    if (keep.has(clientId)) return undefined;
    const known = verdicts.get(clientId);
    // A refusal of its redirect URIs is kept: the realm lets no client change them itself
    // (registered-clients-stay-as-registered), so one seen outside shows what it was made for.
    if (known && (known.lasting || now() - known.readAt < ttlMs)) return known.refusal;
    let pending = reading.get(clientId);
    if (!pending) {
      pending = read(clientId).finally(() => reading.delete(clientId));
      reading.set(clientId, pending);
    }
    try {
      const verdict = await pending;
      remember(clientId, verdict);
      return verdict.refusal;
    } catch (error) {
      // Only while Keycloak does not answer: an answer about this client that cannot be read
      // (its own representation past the size limit) must not keep an old verdict standing.
      if (known && error instanceof KeycloakUnreachableError && now() - known.readAt < staleMs) return known.refusal;
      throw new AuthUnavailableError(`The realm's client ${clientId} could not be read: ${(error as Error).message}`, {
        cause: error,
      });
    }
  };
}
