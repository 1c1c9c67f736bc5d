// The MCP client's browser login moved to packages/testing, where the Playwright specs in e2e/
// use it too; the node:test files here keep importing it from this module.
export {
  type BrowserOAuthOptions,
  BrowserOAuthProvider,
  connectWithOAuth,
  keycloakAdminToken,
  keycloakUserId,
  type LoginUser,
  startCimdDocument,
} from '@mcp-auth-stack/testing/mcp-oauth';
