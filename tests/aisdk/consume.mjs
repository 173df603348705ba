// Drives the AI SDK's own chat client against a running backend and prints what it assembled.
//
// It uses `AbstractChat` (the class behind `useChat`) with an in-memory state, the way
// `@ai-sdk/react`'s `Chat` does, and `DefaultChatTransport`, so the request body, the SSE
// parsing, the chunk validation and the message assembly are all the SDK's code, not ours.
//
//   node consume.mjs --api http://127.0.0.1:8000/api/chat --model mock/echo --text hi [--text again] [--resume 1]
//                    [--files '[{"type":"file","mediaType":"image/png","filename":"a.png","url":"data:..."}]']
//
// Each `--text` is sent as one user message, in order, in the same chat (so later requests carry
// the assistant messages the client assembled). `--resume 1` then calls `resumeStream()`, as
// `useChat({resume: true})` does on mount. Prints one JSON object on stdout:
//   {status, error, messages, finishes: [{finishReason, isError, isAbort, isDisconnect}], requests, resumed}
// and exits 0 whatever the chat's outcome (the caller judges it); 2 on bad arguments or a hang.

import { DefaultChatTransport } from 'ai';
import { NodeChat } from './node_chat.mjs';

function parseArgs(argv) {
  const args = { api: null, model: null, texts: [], body: {}, timeoutMs: 60000, resume: false, files: [] };
  for (let i = 0; i < argv.length; i += 2) {
    const [flag, value] = [argv[i], argv[i + 1]];
    if (value === undefined) throw new Error(`missing value for ${flag}`);
    if (flag === '--api') args.api = value;
    else if (flag === '--model') args.model = value;
    else if (flag === '--text') args.texts.push(value);
    else if (flag === '--body') args.body = JSON.parse(value);
    else if (flag === '--timeout-ms') args.timeoutMs = Number(value);
    else if (flag === '--resume') args.resume = value === '1';
    else if (flag === '--files') args.files = JSON.parse(value); // FileUIParts sent with the first text
    else throw new Error(`unknown flag ${flag}`);
  }
  if (!args.api || args.texts.length === 0) throw new Error('--api and at least one --text are required');
  return args;
}

async function main() {
  let args;
  try {
    args = parseArgs(process.argv.slice(2));
  } catch (err) {
    process.stderr.write(`consume.mjs: ${err.message}\n`);
    process.exit(2);
  }
  const guard = setTimeout(() => {
    process.stderr.write(`consume.mjs: no result after ${args.timeoutMs} ms\n`);
    process.exit(2);
  }, args.timeoutMs);

  const requests = [];
  const finishes = [];
  const recordingFetch = async (url, init) => {
    if (init?.body) requests.push(JSON.parse(init.body));
    return fetch(url, init);
  };
  const body = args.model ? { ...args.body, model: args.model } : args.body;
  const chat = new NodeChat({
    transport: new DefaultChatTransport({ api: args.api, body, fetch: recordingFetch }),
    onFinish: ({ finishReason, isError, isAbort, isDisconnect }) => {
      finishes.push({ finishReason: finishReason ?? null, isError, isAbort, isDisconnect });
    },
  });

  for (const [index, text] of args.texts.entries()) {
    await chat.sendMessage(index === 0 && args.files.length ? { text, files: args.files } : { text });
    if (chat.status === 'error') break;
  }
  let resumed = null;
  if (args.resume && chat.status !== 'error') {
    await chat.resumeStream();
    resumed = { status: chat.status, error: chat.snapshotState.error?.message ?? null,
                messages: chat.snapshotState.messages.length };
  }
  clearTimeout(guard);
  const state = chat.snapshotState;
  process.stdout.write(JSON.stringify({
    status: chat.status,
    error: state.error ? { name: state.error.name, message: state.error.message } : null,
    messages: state.messages,
    finishes,
    requests,
    resumed,
  }) + '\n');
}

await main();
