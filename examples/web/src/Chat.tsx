import { useChat } from "@ai-sdk/react";
import { DefaultChatTransport, lastAssistantMessageIsCompleteWithApprovalResponses } from "ai";
import { useEffect, useMemo, useRef } from "react";

import { authHeaders, BACKEND_URL, checkedFetch, requestServerStop } from "./api";
import { Composer } from "./Composer";
import { ErrorBanner } from "./ErrorBanner";
import { Message, messageText, type ChatMessage } from "./Message";

type Props = {
  chatId: string;
  initialMessages: ChatMessage[];
  model: string;
  onAnswered: () => void;
};

/** One conversation, driven by `useChat` over the backend's AI SDK UI message stream. */
export function Chat({ chatId, initialMessages, model, onAnswered }: Props) {
  const transport = useMemo(() => new DefaultChatTransport<ChatMessage>({
    api: `${BACKEND_URL}/api/chat`,
    headers: () => authHeaders(),
    fetch: checkedFetch,
  }), []);

  const { messages, sendMessage, regenerate, stop, status, error, clearError, addToolApprovalResponse } =
    useChat<ChatMessage>({
      id: chatId, // names the stored conversation on the server
      messages: initialMessages,
      transport,
      // After the user answers every tool approval, send the answers back automatically.
      sendAutomaticallyWhen: lastAssistantMessageIsCompleteWithApprovalResponses,
      onFinish: () => onAnswered(),
    });

  const busy = status === "submitted" || status === "streaming";
  const body = model ? { model } : {};
  const last = messages.at(-1);
  const lastUserIndex = messages.findLastIndex((m) => m.role === "user");
  // Until the first token: the request is out, or the answer has started with nothing to show yet.
  const waitingForFirstToken = status === "submitted"
    || (status === "streaming" && last?.role === "assistant" && !last.parts.some((p) =>
      (p.type === "text" && p.text) || (p.type === "reasoning" && p.text) || p.type.startsWith("tool-")));

  const stopAnswer = () => {
    stop();
    requestServerStop(chatId);
  };

  // Follow the answer while it grows, unless the reader scrolled up.
  const listRef = useRef<HTMLDivElement>(null);
  const stick = useRef(true);
  useEffect(() => {
    const list = listRef.current;
    if (list && stick.current) list.scrollTop = list.scrollHeight;
  });

  return (
    <section className="chat" aria-label="Conversation">
      <div
        className="messages"
        ref={listRef}
        aria-live="polite"
        aria-busy={busy}
        onScroll={(e) => {
          const el = e.currentTarget;
          stick.current = el.scrollHeight - el.scrollTop - el.clientHeight < 80;
        }}
      >
        {messages.length === 0 && (
          <div className="empty">
            <h2>Ask anything</h2>
            <p>Answers stream from <code>{BACKEND_URL}</code>{model ? <> with <code>{model}</code></> : null}.</p>
          </div>
        )}
        {messages.map((message, index) => {
          const isLast = index === messages.length - 1;
          if (isLast && message.role === "assistant" && waitingForFirstToken && !messageText(message)) return null;
          return (
            <Message
              key={message.id}
              message={message}
              streaming={isLast && status === "streaming" && message.role === "assistant"}
              canEdit={!busy && index === lastUserIndex}
              canRegenerate={!busy && isLast && message.role === "assistant"}
              onEdit={(text) => { clearError(); void sendMessage({ text, messageId: message.id }, { body }); }}
              onRegenerate={() => { clearError(); void regenerate({ body }); }}
              onApproval={(id, approved) => void addToolApprovalResponse({ id, approved, options: { body } })}
            />
          );
        })}
        {waitingForFirstToken && (
          <div className="message assistant typing" role="status" aria-label="Assistant is typing">
            <span className="dot" /><span className="dot" /><span className="dot" />
          </div>
        )}
        {error && (
          <ErrorBanner
            error={error}
            onRetry={() => { clearError(); void regenerate({ body }); }}
            onDismiss={clearError}
          />
        )}
      </div>
      <Composer
        busy={busy}
        onSend={(text) => {
          clearError();
          stick.current = true;
          void sendMessage({ text }, { body });
        }}
        onStop={stopAnswer}
      />
    </section>
  );
}
