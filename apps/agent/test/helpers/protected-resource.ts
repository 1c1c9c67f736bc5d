/**
 * Until the server's Keycloak mode lands: a stand-in protected resource that behaves like an MCP
 * server in front of Keycloak as far as discovery goes. Without a token `POST /mcp` answers 401
 * with `resource_metadata`; the metadata (RFC 9728) names the real Keycloak realm. It records
 * the Authorization headers it receives; it does not verify tokens (the tests do, against the
 * realm's keys).
 */
import { createServer, type Server } from 'node:http';

export interface ProtectedResource {
  mcpUrl: string;
  metadataUrl: string;
  authorizations: string[];
  close(): Promise<void>;
}

/**
 * `scopes` go into the metadata's `scopes_supported`; the 401 names only `challengeScope` (what
 * any request needs), as a server that asks for more per tool would.
 */
export async function startProtectedResource(
  port: number,
  realmUrl: string,
  scopes: string[],
  challengeScope = 'mcp:access',
): Promise<ProtectedResource> {
  const origin = `http://127.0.0.1:${port}`;
  const mcpUrl = `${origin}/mcp`;
  const metadataUrl = `${origin}/.well-known/oauth-protected-resource/mcp`;
  const authorizations: string[] = [];
  const server: Server = createServer((request, response) => {
    if (request.method === 'GET' && request.url === '/.well-known/oauth-protected-resource/mcp') {
      response.setHeader('content-type', 'application/json');
      response.end(
        JSON.stringify({
          resource: mcpUrl,
          authorization_servers: [realmUrl],
          scopes_supported: scopes,
          bearer_methods_supported: ['header'],
        }),
      );
      return;
    }
    if (request.url === '/mcp') {
      request.resume();
      const authorization = request.headers.authorization;
      if (authorization) authorizations.push(authorization);
      response.writeHead(401, {
        'www-authenticate': `Bearer resource_metadata="${metadataUrl}", scope="${challengeScope}"`,
        'content-type': 'application/json',
      });
      response.end(JSON.stringify({ error: 'invalid_token' }));
      return;
    }
    response.writeHead(404).end();
  });
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
  return {
    mcpUrl,
    metadataUrl,
    authorizations,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
