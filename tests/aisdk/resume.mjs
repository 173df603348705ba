// Resumable streams and the stop endpoint, judged by the AI SDK's own chat client (ai, pinned here).
//
//   node resume.mjs --api http://127.0.0.1:8000/api/chat --model 'mock/lorem?tokens=200&pace_ms=20' \
//     --scenario drop|readers|stop --chat-id c1 [--user alice] [--after 5]
//
// The requests go through a fetch built on node:http, so a scenario can destroy the real socket:
// - drop:    send a message; after `--after` text deltas destroy the socket; then `resumeStream()`
//            (what `useChat({resume: true})` runs on mount) in the same chat.
// - readers: send and drop as above; then two new chats with the same id resume at once.
// - stop:    send a message; after `--after` text deltas POST {api}/{id}/stop; the stream goes on to its end.
// Prints one JSON object: {sent, resumed: [...], stop} where each chat state is
// {status, error, messages, finishes}. Exits 0 whatever happened (the caller judges); 2 on bad arguments.

import http from 'node:http';
import { DefaultChatTransport } from 'ai';
import { NodeChat } from './node_chat.mjs';

function parseArgs(argv) {
  const args = { api: null, model: null, scenario: null, chatId: null, user: null, after: 5, timeoutMs: 60000 };
  for (let i = 0; i < argv.length; i += 2) {
    const [flag, value] = [argv[i], argv[i + 1]];
    if (value === undefined) throw new Error(`missing value for ${flag}`);
    if (flag === '--api') args.api = value;
    else if (flag === '--model') args.model = value;
    else if (flag === '--scenario') args.scenario = value;
    else if (flag === '--chat-id') args.chatId = value;
    else if (flag === '--user') args.user = value;
    else if (flag === '--after') args.after = Number(value);
    else if (flag === '--timeout-ms') args.timeoutMs = Number(value);
    else throw new Error(`unknown flag ${flag}`);
  }
  if (!args.api || !args.scenario || !args.chatId) throw new Error('--api, --scenario and --chat-id are required');
  return args;
}

// fetch over node:http; `onDeltas(count, destroy)` is called as text deltas arrive.
function httpFetch(onDeltas) {
  return (url, init = {}) => new Promise((resolve, reject) => {
    const target = new URL(url);
    const request = http.request({
      hostname: target.hostname, port: target.port, path: target.pathname + target.search,
      method: init.method ?? 'GET', headers: init.headers ?? {},
    }, (response) => {
      let deltas = 0;
      let done = false;
      const body = new ReadableStream({
        start(controller) {
          const fail = (message) => {
            if (done) return;
            done = true;
            controller.error(new TypeError(message));  // what fetch raises when the network drops
          };
          response.on('data', (buffer) => {
            if (done) return;
            controller.enqueue(new Uint8Array(buffer));
            deltas += (buffer.toString().match(/"text-delta"/g) ?? []).length;
            onDeltas?.(deltas, () => { response.socket.destroy(); fail('fetch failed: the connection was dropped'); });
          });
          response.on('end', () => { if (!done) { done = true; controller.close(); } });
          response.on('error', () => fail('fetch failed'));
          response.on('aborted', () => fail('fetch failed'));
        },
      });
      const headers = new Headers();
      for (const [name, value] of Object.entries(response.headers)) headers.set(name, String(value));
      resolve(new Response(response.statusCode === 204 ? null : body, { status: response.statusCode, headers }));
    });
    request.on('error', reject);
    if (init.body) request.write(init.body);
    request.end();
  });
}

class ResumingChat extends NodeChat {
  constructor(init) {
    super(init);
    this.finishes = [];
  }
  get result() {
    const state = this.state;
    return {
      status: this.status,
      error: state.error ? { name: state.error.name, message: state.error.message } : null,
      messages: state.messages,
      finishes: this.finishes,
    };
  }
}

function newChat(args, onDeltas) {
  const headers = args.user ? { 'x-test-user': args.user } : {};
  const chat = new ResumingChat({
    id: args.chatId,
    transport: new DefaultChatTransport({ api: args.api, body: { model: args.model }, headers, fetch: httpFetch(onDeltas) }),
    onFinish: ({ finishReason, isError, isAbort, isDisconnect }) => {
      chat.finishes.push({ finishReason: finishReason ?? null, isError, isAbort, isDisconnect });
    },
  });
  return chat;
}

async function main() {
  let args;
  try {
    args = parseArgs(process.argv.slice(2));
  } catch (err) {
    process.stderr.write(`resume.mjs: ${err.message}\n`);
    process.exit(2);
  }
  const guard = setTimeout(() => {
    process.stderr.write(`resume.mjs: no result after ${args.timeoutMs} ms\n`);
    process.exit(2);
  }, args.timeoutMs);

  const out = { sent: null, resumed: [], stop: null };
  if (args.scenario === 'drop' || args.scenario === 'readers') {
    let dropped = false;
    const chat = newChat(args, (deltas, destroy) => {
      if (!dropped && deltas >= args.after) { dropped = true; destroy(); }
    });
    await chat.sendMessage({ text: 'Tell me a long story.' });
    out.sent = { ...chat.result, dropped };
    if (args.scenario === 'drop') {
      await chat.resumeStream();
      out.resumed.push(chat.result);
    } else {
      const readers = [newChat(args), newChat(args)];
      await Promise.all(readers.map((reader) => reader.resumeStream()));
      out.resumed = readers.map((reader) => reader.result);
    }
  } else if (args.scenario === 'stop') {
    let stopping = null;
    const chat = newChat(args, (deltas) => {
      if (stopping === null && deltas >= args.after) {
        const headers = args.user ? { 'x-test-user': args.user } : {};
        stopping = fetch(`${args.api}/${encodeURIComponent(args.chatId)}/stop`, { method: 'POST', headers })
          .then(async (response) => ({ status: response.status, body: await response.text() }));
      }
    });
    await chat.sendMessage({ text: 'Tell me a long story.' });
    out.sent = chat.result;
    out.stop = stopping ? await stopping : null;
  } else {
    process.stderr.write(`resume.mjs: unknown scenario ${args.scenario}\n`);
    process.exit(2);
  }
  clearTimeout(guard);
  process.stdout.write(JSON.stringify(out) + '\n');
}

await main();
