// The scripted model moved to packages/testing (the compose spec in e2e/ uses it too); the
// agent's tests keep importing it from here.
export * from '@mcp-auth-stack/testing/scripted-llm';
