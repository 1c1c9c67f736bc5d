/**
 * A scripted OpenAI-compatible chat-completions server (on 127.0.0.1 unless told otherwise): the real `ChatOpenAI`
 * client, the real agent loop and the real MCP adapters run against it, and no test ever needs a
 * language model or the network. Each request gets the next step of the script; every request
 * is recorded so tests can check what the agent sent (system prompt, tool schemas, tool results).
 */
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface ScriptedToolCall {
  name: string;
  arguments: Record<string, unknown>;
}

/** What the "model" answers: tool calls, or a final text (streamed in a few chunks when asked to stream). */
export type ScriptStep = { toolCalls: ScriptedToolCall[] } | { content: string };

/** A step, or a function of the request (e.g. to quote the tool result the agent just sent back). */
export type ScriptEntry = ScriptStep | ((request: ChatRequest) => ScriptStep | Promise<ScriptStep>);

export interface ChatMessage {
  role: 'system' | 'user' | 'assistant' | 'tool';
  content: string | null | { type: string; text?: string }[];
  tool_calls?: { id: string; function: { name: string; arguments: string } }[];
  tool_call_id?: string;
}

export interface ChatRequest {
  model: string;
  stream?: boolean;
  messages: ChatMessage[];
  tools?: { type: 'function'; function: { name: string; description?: string; parameters: Record<string, unknown> } }[];
}

export interface RecordedRequest {
  path: string;
  authorization: string | undefined;
  body: ChatRequest;
}

export interface ScriptedLlm {
  /** Base URL to give `ChatOpenAI` (`…/v1`). */
  baseUrl: string;
  requests: RecordedRequest[];
  /** Replaces what is left of the script. */
  script(entries: ScriptEntry[]): void;
  /** Steps not yet consumed; a test that expects the whole script used asserts this is 0. */
  remaining(): number;
  close(): Promise<void>;
}

/**
 * `listen`: where the server listens; loopback by default. The end-to-end test of the composed
 * stack gives the host address the agent's container reaches the host by.
 */
export async function startScriptedLlm(
  entries: ScriptEntry[] = [],
  listen: { host: string; port: number } = { host: '127.0.0.1', port: 0 },
): Promise<ScriptedLlm> {
  let queue = [...entries];
  const requests: RecordedRequest[] = [];
  let callCounter = 0;

  const server: Server = createServer(async (request, response) => {
    if (request.method !== 'POST' || !request.url?.endsWith('/chat/completions')) {
      response.writeHead(404, { 'content-type': 'application/json' });
      response.end(JSON.stringify({ error: { message: `no route ${request.method} ${request.url}` } }));
      return;
    }
    const body = JSON.parse(await readBody(request)) as ChatRequest;
    requests.push({ path: request.url, authorization: request.headers.authorization, body });
    const entry = queue.shift();
    if (!entry) {
      // A loud failure the test sees, rather than a hang: the agent asked more than the script holds.
      response.writeHead(500, { 'content-type': 'application/json' });
      response.end(
        JSON.stringify({ error: { message: 'the scripted model has no more steps', type: 'server_error' } }),
      );
      return;
    }
    // A function may take its time: a test holds turns open with it.
    const step = typeof entry === 'function' ? await entry(body) : entry;
    const toolCalls =
      'toolCalls' in step
        ? step.toolCalls.map((call) => ({
            id: `call_${++callCounter}`,
            type: 'function' as const,
            function: { name: call.name, arguments: JSON.stringify(call.arguments) },
          }))
        : [];
    const content = 'content' in step ? step.content : null;
    const finishReason = toolCalls.length > 0 ? 'tool_calls' : 'stop';
    const id = `chatcmpl-${requests.length}`;
    const created = Math.floor(Date.now() / 1000);

    if (!body.stream) {
      response.writeHead(200, { 'content-type': 'application/json' });
      response.end(
        JSON.stringify({
          id,
          object: 'chat.completion',
          created,
          model: body.model,
          choices: [
            {
              index: 0,
              message: { role: 'assistant', content, ...(toolCalls.length > 0 ? { tool_calls: toolCalls } : {}) },
              finish_reason: finishReason,
            },
          ],
          usage: { prompt_tokens: 10, completion_tokens: 5, total_tokens: 15 },
        }),
      );
      return;
    }

    response.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
    const send = (delta: Record<string, unknown>, finish: string | null = null) =>
      response.write(
        `data: ${JSON.stringify({
          id,
          object: 'chat.completion.chunk',
          created,
          model: body.model,
          choices: [{ index: 0, delta, finish_reason: finish }],
        })}\n\n`,
      );
    send({ role: 'assistant', content: '' });
    for (const [index, call] of toolCalls.entries()) {
      send({
        tool_calls: [{ index, id: call.id, type: 'function', function: { name: call.function.name, arguments: '' } }],
      });
      // Arguments arrive in pieces, as real models send them.
      for (const piece of splitInto(call.function.arguments, 3)) {
        send({ tool_calls: [{ index, function: { arguments: piece } }] });
      }
    }
    if (content) for (const piece of splitInto(content, 3)) send({ content: piece });
    send({}, finishReason);
    response.write('data: [DONE]\n\n');
    response.end();
  });
  await new Promise<void>((resolve) => server.listen(listen.port, listen.host, resolve));
  const { port } = server.address() as AddressInfo;
  return {
    baseUrl: `http://${listen.host}:${port}/v1`,
    requests,
    script(next) {
      queue = [...next];
    },
    remaining: () => queue.length,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** The text of a chat message whatever its shape (string or content parts). */
export function messageText(message: ChatMessage | undefined): string {
  if (!message || message.content === null) return '';
  if (typeof message.content === 'string') return message.content;
  return message.content.map((part) => part.text ?? '').join('');
}

function splitInto(text: string, parts: number): string[] {
  const size = Math.max(1, Math.ceil(text.length / parts));
  const pieces: string[] = [];
  for (let start = 0; start < text.length; start += size) pieces.push(text.slice(start, start + size));
  return pieces;
}

function readBody(request: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    let data = '';
    request.setEncoding('utf8');
    request.on('data', (chunk: string) => (data += chunk));
    request.on('end', () => resolve(data));
    request.on('error', reject);
  });
}
