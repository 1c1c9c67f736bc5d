/**
 * One chat model class for every provider: each `API_HOST` speaks the OpenAI chat-completions
 * protocol, so only the base URL, the model name and the credential differ.
 */
import { DefaultAzureCredential, getBearerTokenProvider, type TokenCredential } from '@azure/identity';
import { ChatOpenAI } from '@langchain/openai';
import type { ModelProviderConfig } from './config.ts';

/** The Entra ID scope Azure OpenAI accepts tokens for. */
export const AZURE_COGNITIVE_SERVICES_SCOPE = 'https://cognitiveservices.azure.com/.default';

/** `apiKey` is sent as `Authorization: Bearer …`; a function is called before each request (Entra tokens expire). */
export type ApiKey = string | (() => Promise<string>);

export interface ChatModelOptions {
  baseURL: string;
  model: string;
  apiKey: ApiKey;
  /** How the credential was chosen, for logs and `--help` (never the credential itself). */
  credential: 'api-key' | 'entra-id' | 'github-token' | 'none';
}

export interface ModelDependencies {
  /** Made only for keyless Azure; tests pass a fake so nothing reaches Entra ID. */
  azureCredential?: () => TokenCredential;
}

/**
 * Pure apart from constructing (not calling) an Azure credential: tests check the result
 * without any network.
 */
export function buildChatModelOptions(config: ModelProviderConfig, deps: ModelDependencies = {}): ChatModelOptions {
  switch (config.host) {
    case 'openai':
      return {
        baseURL: config.baseUrl ?? 'https://api.openai.com/v1',
        model: config.model,
        apiKey: config.apiKey,
        credential: 'api-key',
      };
    case 'azure': {
      // The v1 API of Azure OpenAI is OpenAI-compatible: the deployment name is the model.
      const baseURL = `${config.endpoint}/openai/v1`;
      if (config.apiKey !== undefined) {
        return { baseURL, model: config.deployment, apiKey: config.apiKey, credential: 'api-key' };
      }
      const credential = (deps.azureCredential ?? (() => new DefaultAzureCredential()))();
      return {
        baseURL,
        model: config.deployment,
        apiKey: getBearerTokenProvider(credential, AZURE_COGNITIVE_SERVICES_SCOPE),
        credential: 'entra-id',
      };
    }
    case 'github':
      return { baseURL: config.baseUrl, model: config.model, apiKey: config.token, credential: 'github-token' };
    case 'ollama':
      // Ollama ignores the key, but the OpenAI client refuses to start without one.
      return { baseURL: config.baseUrl, model: config.model, apiKey: 'ollama', credential: 'none' };
  }
}

export function createChatModel(
  options: ChatModelOptions,
  { timeoutMs = 60_000 }: { timeoutMs?: number } = {},
): ChatOpenAI {
  return new ChatOpenAI({
    model: options.model,
    // Chat completions everywhere: Ollama, GitHub Models and compatible servers have no Responses API.
    useResponsesApi: false,
    configuration: { baseURL: options.baseURL, apiKey: options.apiKey },
    maxRetries: 2,
    // Until the answer starts (the OpenAI client stops timing once headers arrive), each
    // attempt. Its own default is 10 minutes: a model that stalls should fail a turn, not hold
    // it (and one of the HTTP mode's few turn slots) for half an hour.
    timeout: timeoutMs,
  });
}
