#!/usr/bin/env node
/**
 * `pnpm agent "yesterday I bought a laptop for $1200 using my visa"`: one request.
 * `pnpm agent`: a chat, with the answer streamed and every tool call shown.
 */
import { createInterface } from 'node:readline/promises';
import type { BaseMessage } from '@langchain/core/messages';
import { type ConfirmDestructive, NOT_ASKED, type TurnEvents } from './agent.ts';
import { ConfigError, loadConfig } from './config.ts';
import { type RunningAgent, startAgent } from './runtime.ts';
import { forTerminal } from './terminal.ts';

export const HELP = `Usage: pnpm agent [message…]

  With a message, the expenses assistant handles that one request and exits.
  Without one, it starts a chat (type "exit" or press Ctrl-D to leave).

  pnpm agent "yesterday I bought a laptop for $1200 using my visa"
  pnpm agent "how much did I spend on food this month?"

Model provider (API_HOST):
  openai   OPENAI_API_KEY, OPENAI_MODEL, OPENAI_BASE_URL (any OpenAI-compatible endpoint)
  azure    AZURE_OPENAI_ENDPOINT, AZURE_OPENAI_CHAT_DEPLOYMENT, AZURE_OPENAI_API_KEY (omit: Entra ID, keyless)
  github   GITHUB_TOKEN, GITHUB_MODEL (GitHub Models)
  ollama   OLLAMA_BASE_URL (default http://localhost:11434/v1), OLLAMA_MODEL

MCP server: MCP_SERVER_URL (default http://localhost:8000/mcp), and MCP_AUTH:
  oauth               sign in through the browser (default); tokens cached in ~/.cache/mcp-auth-stack/agent
  client_credentials  MCP_CLIENT_ID (default expenses-agent), MCP_CLIENT_SECRET
  key                 MCP_API_KEY (from \`pnpm keys create\`)
  More servers: MCP_EXTRA_SERVERS='{"name": {"url": "…", "headers": {"Authorization": "Bearer …"}}}'

A call that may delete data (AGENT_DESTRUCTIVE_TOOLS=ask, the default) runs only once you
confirm it: the chat asks on its next line, a one-shot run on its terminal.

HTTP mode for a container: node apps/agent/src/serve.ts (GET /health, POST /chat {"message": …};
a delete is put to the caller: 202, then POST /chat {"confirmation": id, "approve": true}).
See apps/agent/README.md for every variable.
`;

const args = process.argv.slice(2);
if (args.includes('--help') || args.includes('-h')) {
  process.stdout.write(HELP);
  process.exit(0);
}
const unknownFlag = args.find((arg) => arg.startsWith('--'));
if (unknownFlag) {
  process.stderr.write(`Unknown option ${unknownFlag}\n\n${HELP}`);
  process.exit(64); // EX_USAGE
}

/** How the person is asked to confirm a call that may delete or overwrite data (set below). */
let askPerson: ((question: string) => Promise<string | undefined>) | undefined;
const confirmDestructive: ConfirmDestructive = async (call) => {
  if (!askPerson) return NOT_ASKED;
  const question = `  ? ${forTerminal(`${call.name} ${JSON.stringify(call.args)}`)} may delete or overwrite data. Run it? [y/N] `;
  // No answer (the input ended, Ctrl-D at the question) is no.
  const answer = await askPerson(question).catch(() => undefined);
  return /^\s*y(es)?\s*$/i.test(answer ?? '');
};

let running: RunningAgent;
try {
  running = await startAgent(loadConfig(), { confirmDestructive });
} catch (error) {
  process.stderr.write(
    // A start error may carry what a server answered (its error body): filtered like model text.
    `${error instanceof ConfigError ? error.message : `The agent could not start: ${forTerminal((error as Error).message)}`}\n`,
  );
  process.exit(error instanceof ConfigError ? 78 : 1); // 78: EX_CONFIG
}

/** Streams the answer to stdout and shows each tool call and a short result on its own lines. */
function terminalEvents(): TurnEvents & { finish(): void } {
  let atLineStart = true;
  const line = (text: string) => {
    process.stdout.write(`${atLineStart ? '' : '\n'}${text}\n`);
    atLineStart = true;
  };
  return {
    onText(text) {
      const shown = forTerminal(text);
      process.stdout.write(shown);
      if (shown) atLineStart = shown.endsWith('\n');
    },
    onToolCall(call) {
      line(`  → ${forTerminal(`${call.name} ${JSON.stringify(call.args)}`)}`);
    },
    onToolResult(record) {
      line(`  ${record.isError ? '✗' : '←'} ${forTerminal(record.name)}: ${forTerminal(record.result)}`);
    },
    finish() {
      if (!atLineStart) process.stdout.write('\n');
      atLineStart = true;
    },
  };
}

const abort = new AbortController();
process.once('SIGINT', () => {
  abort.abort();
  void running.close().finally(() => process.exit(130));
});

/**
 * One reader of the input's lines, in order: a confirmation takes the next line, typed or piped.
 * On a terminal, the answer is a line entered once the question is there: lines typed ahead or
 * pasted during the turn were never an answer to it (a "y" would run a delete nobody saw), so
 * they are dropped when it is asked. Piped input is a script's, read in order.
 */
function inputLines() {
  const readline = createInterface({ input: process.stdin, output: process.stdout });
  const queued: string[] = [];
  let waiting: ((line: string | undefined) => void) | undefined;
  let ended = false;
  readline.on('line', (line) => {
    const taker = waiting;
    waiting = undefined;
    if (taker) taker(line);
    else queued.push(line);
  });
  readline.once('close', () => {
    ended = true;
    waiting?.(undefined);
    waiting = undefined;
  });
  const nextLine = (): Promise<string | undefined> => {
    const line = queued.shift();
    if (line !== undefined || ended) return Promise.resolve(line);
    return new Promise((resolve) => {
      waiting = resolve;
    });
  };
  const ask = async (question: string): Promise<string | undefined> => {
    if (process.stdin.isTTY) {
      // Typed without Enter, a "y" waits in readline's line, and Enter alone would send it.
      const started = readline.line.length > 0;
      if (started) {
        readline.write(null, { ctrl: true, name: 'e' });
        readline.write(null, { ctrl: true, name: 'u' });
      }
      const dropped = queued.length + (started ? 1 : 0);
      if (dropped > 0) {
        process.stdout.write(
          `\n  (${dropped} line(s) entered before this question are dropped, not taken as its answer)\n`,
        );
        queued.length = 0;
      }
    }
    // The question is the prompt while it waits, so readline redraws it when the answer is edited.
    const previous = readline.getPrompt();
    readline.setPrompt(question);
    readline.prompt();
    const answer = await nextLine();
    readline.setPrompt(previous);
    // No answer (Ctrl-D): what follows starts on a line of its own, not after the question.
    if (answer === undefined && process.stdin.isTTY) process.stdout.write('\n');
    return answer;
  };
  return { readline, nextLine, ask };
}

let exitCode = 0;
try {
  if (args.length > 0) {
    // A one-shot run asks on its terminal; piped or in a script there is nobody to ask. The
    // terminal is read from the start, so what is typed before a question is known as such and
    // dropped (read only at the question, a "y" typed ahead was its answer).
    const input = process.stdin.isTTY ? inputLines() : undefined;
    if (input) {
      // Ctrl-C stops the run, as it does without a terminal reader (readline takes it as a key).
      input.readline.on('SIGINT', () => process.emit('SIGINT', 'SIGINT'));
      askPerson = input.ask;
    }
    try {
      const events = terminalEvents();
      await running.agent.run(args.join(' '), { stream: true, events, signal: abort.signal });
      events.finish();
    } finally {
      input?.readline.close();
    }
  } else {
    process.stdout.write(
      `Expenses assistant, with tools: ${forTerminal(running.agent.toolNames.join(', '))}. "exit" or Ctrl-D leaves.\n`,
    );
    const { readline, nextLine, ask } = inputLines();
    let history: BaseMessage[] = [];
    readline.setPrompt('you> ');
    readline.prompt();
    askPerson = ask;
    // Ends at Ctrl-D (or the end of piped input).
    for (let line = await nextLine(); line !== undefined; line = await nextLine()) {
      const message = line.trim();
      if (message === 'exit' || message === 'quit') break;
      if (message) {
        const events = terminalEvents();
        try {
          history = (await running.agent.run(message, { history, stream: true, events, signal: abort.signal })).history;
          events.finish();
        } catch (error) {
          events.finish();
          process.stderr.write(`error: ${forTerminal((error as Error).message)}\n`);
        }
      }
      readline.prompt();
    }
    readline.close();
  }
} catch (error) {
  process.stderr.write(`error: ${forTerminal((error as Error).message)}\n`);
  exitCode = 1;
} finally {
  await running.close();
}
process.exit(exitCode);
