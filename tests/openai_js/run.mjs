// Drives the official `openai` npm client against a running backend and prints what it saw.
//
//   node run.mjs --base-url http://127.0.0.1:8000/v1 --scenario stream --model mock/echo --text hi
//
// Scenarios: `stream` (stream with include_usage), `complete` (non-streaming), `models` (list),
// `tools` (a client tool round trip: the streamed call accumulated by the client's own
// `chat.completions.stream` helper, then the answer to the tool message; `--tool-output` is what the
// tool "returned").
// Prints one JSON object on stdout: {ok, text, chunks, finishReasons, usage, model, headers, error,
// toolCalls}
// where `error` is {name, status, code, message} for whatever the client raised (for the caller to
// judge), and exits 0; 2 on bad arguments or a hang.

import OpenAI from 'openai';

function parseArgs(argv) {
  const args = { baseURL: null, scenario: 'stream', model: 'mock/echo', text: 'hello', timeoutMs: 60000, headers: {},
    toolOutput: '{}' };
  for (let i = 0; i < argv.length; i += 2) {
    const [flag, value] = [argv[i], argv[i + 1]];
    if (value === undefined) throw new Error(`missing value for ${flag}`);
    if (flag === '--base-url') args.baseURL = value;
    else if (flag === '--scenario') args.scenario = value;
    else if (flag === '--model') args.model = value;
    else if (flag === '--text') args.text = value;
    else if (flag === '--header') { const [k, ...v] = value.split(':'); args.headers[k] = v.join(':'); }
    else if (flag === '--timeout-ms') args.timeoutMs = Number(value);
    else if (flag === '--tool-output') args.toolOutput = value;
    else throw new Error(`unknown flag ${flag}`);
  }
  if (!args.baseURL) throw new Error('--base-url is required');
  return args;
}

function describe(err) {
  return {
    name: err?.constructor?.name ?? 'Error',
    status: err?.status ?? null,
    code: err?.code ?? null,
    message: err?.error?.message ?? err?.message ?? String(err),
  };
}

async function run(args) {
  const client = new OpenAI({ baseURL: args.baseURL, apiKey: 'sk-local', maxRetries: 0, defaultHeaders: args.headers });
  const messages = [{ role: 'user', content: args.text }];
  const out = { ok: false, text: '', chunks: 0, finishReasons: [], usage: null, model: null, headers: {}, error: null,
    toolCalls: null };
  try {
    if (args.scenario === 'stream') {
      const { data: stream, response } = await client.chat.completions
        .create({ model: args.model, messages, stream: true, stream_options: { include_usage: true }, temperature: 0 })
        .withResponse();
      out.headers = Object.fromEntries(response.headers.entries());
      for await (const chunk of stream) {
        out.chunks += 1;
        out.model = chunk.model;
        for (const choice of chunk.choices) {
          out.text += choice.delta?.content ?? '';
          if (choice.finish_reason) out.finishReasons.push(choice.finish_reason);
        }
        if (chunk.usage) out.usage = chunk.usage;
      }
    } else if (args.scenario === 'complete') {
      const { data, response } = await client.chat.completions
        .create({ model: args.model, messages, temperature: 0 })
        .withResponse();
      out.headers = Object.fromEntries(response.headers.entries());
      out.text = data.choices[0].message.content;
      out.finishReasons = data.choices.map((c) => c.finish_reason);
      out.usage = data.usage;
      out.model = data.model;
    } else if (args.scenario === 'tools') {
      const tools = [{ type: 'function', function: { name: 'get_weather', description: 'The weather in a city.',
        parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] } } }];
      const runner = client.chat.completions.stream({ model: args.model, messages, tools });
      runner.on('chunk', () => { out.chunks += 1; });
      const first = await runner.finalChatCompletion();
      const message = first.choices[0].message;
      out.toolCalls = message.tool_calls ?? [];
      out.finishReasons.push(first.choices[0].finish_reason);
      const history = [...messages, { role: 'assistant', content: message.content ?? null, tool_calls: out.toolCalls },
        ...out.toolCalls.map((call) => ({ role: 'tool', tool_call_id: call.id, content: args.toolOutput }))];
      const answer = await client.chat.completions.create({ model: args.model, messages: history, tools, stream: true });
      for await (const chunk of answer) {
        for (const choice of chunk.choices) {
          out.text += choice.delta?.content ?? '';
          if (choice.finish_reason) out.finishReasons.push(choice.finish_reason);
        }
      }
    } else if (args.scenario === 'models') {
      const ids = [];
      for await (const model of client.models.list()) ids.push(model.id);
      out.text = ids.join(',');
    } else {
      throw new Error(`unknown scenario ${args.scenario}`);
    }
    out.ok = true;
  } catch (err) {
    out.error = describe(err);
  }
  return out;
}

async function main() {
  let args;
  try {
    args = parseArgs(process.argv.slice(2));
  } catch (err) {
    process.stderr.write(`run.mjs: ${err.message}\n`);
    process.exit(2);
  }
  const guard = setTimeout(() => {
    process.stderr.write(`run.mjs: no result after ${args.timeoutMs} ms\n`);
    process.exit(2);
  }, args.timeoutMs);
  const out = await run(args);
  clearTimeout(guard);
  process.stdout.write(JSON.stringify(out));
}

main();
