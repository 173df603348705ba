import { useRef, useState } from "react";

import { authHeaders, BACKEND_URL, checkedFetch } from "./api";
import { Composer } from "./Composer";
import { ErrorBanner } from "./ErrorBanner";
import { Markdown } from "./Markdown";

type Turn = { role: "user" | "assistant"; content: string };

/**
 * The same chat for clients without the AI SDK: `POST /api/chat/sse` with `fetch`, reading
 * `data: {"content": ...}`, `data: {"error": ...}` and `data: [DONE]`; Stop aborts the request.
 * Stateless: the whole conversation is sent each time.
 */
export function SsePage({ model }: { model: string }) {
  const [turns, setTurns] = useState<Turn[]>([]);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);
  const controller = useRef<AbortController | null>(null);

  const appendToAnswer = (delta: string) =>
    setTurns((current) => {
      const last = current.at(-1)!;
      return [...current.slice(0, -1), { ...last, content: last.content + delta }];
    });

  async function send(text: string) {
    const history: Turn[] = [...turns, { role: "user", content: text }];
    setTurns([...history, { role: "assistant", content: "" }]);
    setError(null);
    setBusy(true);
    const abort = new AbortController();
    controller.current = abort;
    try {
      const response = await checkedFetch(`${BACKEND_URL}/api/chat/sse`, {
        method: "POST",
        headers: { "content-type": "application/json", ...authHeaders() },
        body: JSON.stringify({ messages: history, ...(model ? { model } : {}) }),
        signal: abort.signal,
      });
      const reader = response.body!.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        // Events end with a blank line; keep an unfinished one for the next read.
        const events = buffer.split(/\r?\n\r?\n/);
        buffer = events.pop() ?? "";
        for (const event of events) {
          const data = event.split(/\r?\n/).filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trimStart()).join("\n");
          if (!data || data === "[DONE]") continue;
          const parsed = JSON.parse(data) as { content?: string; error?: string | { message?: string } };
          if (parsed.content) appendToAnswer(parsed.content);
          if (parsed.error) {
            setError(new Error(typeof parsed.error === "string" ? parsed.error : parsed.error.message ?? "error"));
          }
        }
      }
    } catch (err) {
      if (!(err instanceof DOMException && err.name === "AbortError")) setError(err);
    } finally {
      setBusy(false);
      controller.current = null;
      // Drop an empty answer (a failure before the first token) so the next send starts clean.
      setTurns((current) => (current.at(-1)?.role === "assistant" && !current.at(-1)!.content ? current.slice(0, -1) : current));
    }
  }

  return (
    <section className="chat" aria-label="Plain SSE conversation">
      <div className="messages" aria-live="polite" aria-busy={busy}>
        {turns.length === 0 && (
          <div className="empty">
            <h2>Plain SSE</h2>
            <p><code>fetch</code> + <code>POST {BACKEND_URL}/api/chat/sse</code>, no AI SDK. Nothing is stored.</p>
          </div>
        )}
        {turns.map((turn, index) => {
          const streaming = busy && index === turns.length - 1 && turn.role === "assistant";
          if (streaming && !turn.content) {
            return (
              <div key={index} className="message assistant typing" role="status" aria-label="Assistant is typing">
                <span className="dot" /><span className="dot" /><span className="dot" />
              </div>
            );
          }
          return (
            <article key={index} className={`message ${turn.role}`} data-role={turn.role} data-streaming={streaming ? "true" : undefined}>
              <div className="bubble">
                {turn.role === "user" ? <p className="user-text">{turn.content}</p> : <Markdown text={turn.content} streaming={streaming} />}
              </div>
            </article>
          );
        })}
        {error !== null && <ErrorBanner error={error} onDismiss={() => setError(null)} />}
      </div>
      <Composer busy={busy} onSend={(text) => void send(text)} onStop={() => controller.current?.abort()} />
    </section>
  );
}
