/**
 * The agent's tool-call middleware with tools of the test's own (what each call did is
 * counted) and the scripted model: when a failed call is sent again after a new token, and
 * when the person is asked before a call runs.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { tool } from '@langchain/core/tools';
import { type ScriptedLlm, startScriptedLlm } from '@mcp-auth-stack/testing/scripted-llm';
import { ExpensesAgent, NOT_ASKED } from '../src/agent.ts';
import { loadConfig } from '../src/config.ts';
import { buildChatModelOptions, createChatModel } from '../src/model.ts';
import { scriptedModelEnv } from './helpers/agent.ts';

let llm: ScriptedLlm;
before(async () => {
  llm = await startScriptedLlm();
});
after(async () => {
  await llm?.close();
});

const model = () => createChatModel(buildChatModelOptions(loadConfig(scriptedModelEnv(llm.baseUrl)).model));

/** A read-only tool that fails as `failure(call)` says (a thrown error), or answers. */
function countedTool(failure: (call: number) => string | undefined) {
  let calls = 0;
  const counted = tool(
    async () => {
      calls += 1;
      const message = failure(calls);
      if (message !== undefined) throw new Error(message);
      return 'answered';
    },
    {
      name: 'look_up',
      description: 'Looks something up',
      schema: { type: 'object', properties: {} },
      metadata: { annotations: { readOnlyHint: true } },
    },
  );
  return { counted, calls: () => calls };
}

/** One turn that calls `look_up` once, then answers. */
async function oneCall(agent: ExpensesAgent) {
  llm.script([{ toolCalls: [{ name: 'look_up', arguments: {} }] }, { content: 'Done.' }]);
  return await agent.run('look it up');
}

describe('a call that failed while a new token came is sent again', () => {
  test('refused for authorization (the SDK gave up on it): sent again, and answered', async () => {
    let epoch = 0;
    const { counted, calls } = countedTool((call) => {
      if (call > 1) return undefined;
      epoch += 1; // the provider got a new token meanwhile
      return 'Error calling tool look_up: Error: Unauthorized';
    });
    const agent = new ExpensesAgent({ model: model(), tools: [counted], authorizationEpoch: () => epoch });
    const turn = await oneCall(agent);
    assert.equal(calls(), 2);
    assert.equal(turn.toolCalls[0]?.isError, false);
  });

  test('at most twice, however many new tokens come', async () => {
    let epoch = 0;
    const { counted, calls } = countedTool(() => {
      epoch += 1;
      return 'Error calling tool look_up: Error: Unauthorized';
    });
    const agent = new ExpensesAgent({ model: model(), tools: [counted], authorizationEpoch: () => epoch });
    const turn = await oneCall(agent);
    assert.equal(calls(), 3, 'the call and two more');
    assert.equal(turn.toolCalls[0]?.isError, true);
  });

  test('never when it may have run: a timeout, or an error the server answered with', async () => {
    for (const failure of [
      'Error calling tool look_up: McpError: MCP error -32001: Request timed out',
      "MCP tool 'look_up' on server 'expenses' returned an error: Unauthorized to read this",
      // A tool or server name with a quote in it (MCP does not forbid one) is still an answer.
      "MCP tool 'it's_mine' on server 'expenses' returned an error: Unauthorized to read this",
    ]) {
      let epoch = 0;
      const { counted, calls } = countedTool(() => {
        epoch += 1;
        return failure;
      });
      const agent = new ExpensesAgent({ model: model(), tools: [counted], authorizationEpoch: () => epoch });
      const turn = await oneCall(agent);
      assert.equal(calls(), 1, failure);
      assert.equal(turn.toolCalls[0]?.isError, true, failure);
    }
  });

  test('never without a new token', async () => {
    const { counted, calls } = countedTool(() => 'Error calling tool look_up: Error: Unauthorized');
    const agent = new ExpensesAgent({ model: model(), tools: [counted], authorizationEpoch: () => 0 });
    await oneCall(agent);
    assert.equal(calls(), 1);
  });
});

describe('confirmation', () => {
  test('a tool the agent does not have is not asked about: the model reads that it does not exist', async () => {
    const { counted } = countedTool(() => undefined);
    const agent = new ExpensesAgent({
      model: model(),
      tools: [counted],
      confirmDestructive: async () => assert.fail('nobody is asked about a tool that does not exist'),
    });
    llm.script([{ toolCalls: [{ name: 'drop_everything', arguments: {} }] }, { content: 'Done.' }]);
    const turn = await agent.run('drop everything');
    assert.equal(turn.toolCalls[0]?.isError, true);
    assert.match(turn.toolCalls[0]?.result ?? '', /drop_everything/);
    assert.doesNotMatch(turn.toolCalls[0]?.result ?? '', /not confirmed/);
  });

  test('a call the person refused is not put to them again in the same turn; another call, or the next turn, is', async () => {
    let deleted = 0;
    const remove = tool(
      async () => {
        deleted += 1;
        return 'deleted';
      },
      {
        name: 'remove_item',
        description: 'Removes an item',
        schema: { type: 'object', properties: { id: { type: 'string' }, hard: { type: 'boolean' } } },
        metadata: { annotations: { destructiveHint: true } },
      },
    );
    const asked: Record<string, unknown>[] = [];
    const agent = new ExpensesAgent({
      model: model(),
      tools: [remove],
      confirmDestructive: async (call) => {
        asked.push(call.args);
        return false;
      },
    });
    // The model asks again after the no: the same arguments in another order, the same id in
    // capitals (PostgreSQL reads a uuid in any case), then another item, then text in capitals.
    const id = '3f2b8c1e-9d4a-4e6b-8a7c-1d2e3f4a5b6c';
    llm.script([
      { toolCalls: [{ name: 'remove_item', arguments: { id, hard: true } }] },
      { toolCalls: [{ name: 'remove_item', arguments: { hard: true, id } }] },
      { toolCalls: [{ name: 'remove_item', arguments: { id: id.toUpperCase(), hard: true } }] },
      { toolCalls: [{ name: 'remove_item', arguments: { id: 'b', hard: true } }] },
      { toolCalls: [{ name: 'remove_item', arguments: { id: 'B', hard: true } }] },
      { content: 'I could not remove them.' },
    ]);
    const turn = await agent.run('remove a');
    assert.deepEqual(asked, [
      { id, hard: true },
      { id: 'b', hard: true },
      { id: 'B', hard: true },
    ]);
    assert.equal(deleted, 0);
    assert.deepEqual(
      turn.toolCalls.map((call) => [call.isError, /already refused in this turn/.test(call.result)]),
      [
        [true, false],
        [true, true],
        [true, true],
        [true, false],
        [true, false],
      ],
    );
    // A new turn is a new request from the person: asked again.
    llm.script([{ toolCalls: [{ name: 'remove_item', arguments: { id, hard: true } }] }, { content: 'Not done.' }]);
    await agent.run('remove a, really');
    assert.equal(asked.length, 4);
  });

  test('a call nobody could be asked about is not remembered as refused: the next request of it is put to the person', async () => {
    const remove = tool(async () => 'deleted', {
      name: 'remove_item',
      description: 'Removes an item',
      schema: { type: 'object', properties: { id: { type: 'string' } } },
      metadata: { annotations: { destructiveHint: true } },
    });
    // First nobody can be asked (too many questions waiting, in HTTP mode), then the person says no.
    const answers: (boolean | typeof NOT_ASKED)[] = [NOT_ASKED, false];
    let asked = 0;
    const agent = new ExpensesAgent({
      model: model(),
      tools: [remove],
      confirmDestructive: async () => {
        asked += 1;
        if (answers.length === 0) assert.fail('asked a third time');
        return answers.shift() as boolean | typeof NOT_ASKED;
      },
    });
    llm.script([
      { toolCalls: [{ name: 'remove_item', arguments: { id: 'a' } }] },
      { toolCalls: [{ name: 'remove_item', arguments: { id: 'a' } }] },
      { toolCalls: [{ name: 'remove_item', arguments: { id: 'a' } }] },
      { content: 'Not removed.' },
    ]);
    const turn = await agent.run('remove a');
    assert.equal(asked, 2);
    assert.deepEqual(
      turn.toolCalls.map((call) => /already refused in this turn/.test(call.result)),
      [false, false, true],
    );
  });
});
