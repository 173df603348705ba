// Drives the AI SDK's own chat client through a tool turn against a running backend.
//
// `AbstractChat` (the class behind `useChat`) with `DefaultChatTransport`, `onToolCall` +
// `addToolOutput` for client tools, `sendAutomaticallyWhen` (lastAssistantMessageIsCompleteWithToolCalls
// or ...WithApprovalResponses) and `addToolApprovalResponse`: every request body, SSE parse,
// chunk validation and message assembly is the SDK's code.
//
//   node tools.mjs --api URL --text hi [--body JSON] [--client-output JSON] [--approve yes|no]
//
// --client-output: the output `onToolCall` gives every client tool call (through addToolOutput).
// --approve: the answer to every tool approval request (through addToolApprovalResponse).
// Prints {status, error, messages, finishes, requests} as JSON; exits 0 whatever the chat's outcome.

import {
  DefaultChatTransport,
  lastAssistantMessageIsCompleteWithApprovalResponses,
  lastAssistantMessageIsCompleteWithToolCalls,
} from 'ai';
import { NodeChat } from './node_chat.mjs';

function parseArgs(argv) {
  const args = { api: null, text: null, body: {}, clientOutput: undefined, approve: null, timeoutMs: 60000 };
  for (let i = 0; i < argv.length; i += 2) {
    const [flag, value] = [argv[i], argv[i + 1]];
    if (value === undefined) throw new Error(`missing value for ${flag}`);
    if (flag === '--api') args.api = value;
    else if (flag === '--text') args.text = value;
    else if (flag === '--body') args.body = JSON.parse(value);
    else if (flag === '--client-output') args.clientOutput = JSON.parse(value);
    else if (flag === '--approve') args.approve = value === 'yes';
    else if (flag === '--timeout-ms') args.timeoutMs = Number(value);
    else throw new Error(`unknown flag ${flag}`);
  }
  if (!args.api || args.text === null) throw new Error('--api and --text are required');
  return args;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function main() {
  let args;
  try {
    args = parseArgs(process.argv.slice(2));
  } catch (err) {
    process.stderr.write(`tools.mjs: ${err.message}\n`);
    process.exit(2);
  }
  const guard = setTimeout(() => {
    process.stderr.write(`tools.mjs: no result after ${args.timeoutMs} ms\n`);
    process.exit(2);
  }, args.timeoutMs);

  const requests = [];
  const finishes = [];
  let inFlight = 0;
  const recordingFetch = async (url, init) => {
    if (init?.body) requests.push(JSON.parse(init.body));
    inFlight += 1;
    try {
      return await fetch(url, init);
    } finally {
      inFlight -= 1;
    }
  };
  const answered = new Set();
  let chat;
  chat = new NodeChat({
    transport: new DefaultChatTransport({ api: args.api, body: args.body, fetch: recordingFetch }),
    sendAutomaticallyWhen: (options) =>
      lastAssistantMessageIsCompleteWithToolCalls(options) || lastAssistantMessageIsCompleteWithApprovalResponses(options),
    onToolCall: async ({ toolCall }) => {
      if (args.clientOutput !== undefined) {
        // Not awaited inside onToolCall, as the SDK's docs advise (it would deadlock the job queue).
        chat.addToolOutput({ tool: toolCall.toolName, toolCallId: toolCall.toolCallId, output: args.clientOutput });
      }
    },
    onFinish: ({ message, finishReason, isError }) => {
      finishes.push({ finishReason: finishReason ?? null, isError, messageId: message.id });
      if (args.approve === null) return;
      for (const part of message.parts) {
        if (part.state === 'approval-requested' && !answered.has(part.approval.id)) {
          answered.add(part.approval.id);
          setTimeout(() => chat.addToolApprovalResponse({ id: part.approval.id, approved: args.approve }), 0);
        }
      }
    },
  });

  await chat.sendMessage({ text: args.text });
  // Automatic follow-up requests (tool outputs, approval answers): wait until the chat is idle.
  let idleSince = Date.now();
  while (Date.now() - idleSince < 500) {
    await sleep(50);
    if (inFlight > 0 || chat.status === 'streaming' || chat.status === 'submitted') idleSince = Date.now();
  }
  clearTimeout(guard);
  const state = chat.snapshotState;
  process.stdout.write(JSON.stringify({
    status: chat.status,
    error: state.error ? { name: state.error.name, message: state.error.message } : null,
    messages: state.messages,
    finishes,
    requests,
  }) + '\n');
}

await main();
