import { isToolUIPart, type UIMessage } from "ai";
import { useState } from "react";

import { Markdown } from "./Markdown";
import { ToolCard } from "./ToolCard";

/** What the backend puts in `message.metadata` (see the README's `POST /api/chat`). */
export type ChatMetadata = {
  model?: string;
  provider?: string;
  deployment?: string;
  fallbacks?: { deployment: string; error: string }[];
  usage?: { inputTokens?: number | null; outputTokens?: number | null; totalTokens?: number | null };
  costUsd?: number;
  incomplete?: boolean;
  status?: string;
};

export type ChatMessage = UIMessage<ChatMetadata>;

export function messageText(message: UIMessage): string {
  return message.parts.map((part) => (part.type === "text" ? part.text : "")).join("");
}

function formatCost(usd: number): string {
  if (usd === 0) return "$0";
  return usd < 0.01 ? `$${usd.toPrecision(2)}` : `$${usd.toFixed(4)}`;
}

function MetadataLine({ metadata }: { metadata: ChatMetadata }) {
  const items: string[] = [];
  if (metadata.model) items.push(metadata.model);
  if (metadata.deployment && metadata.deployment !== metadata.model) items.push(`via ${metadata.deployment}`);
  const usage = metadata.usage;
  if (usage && (usage.inputTokens != null || usage.outputTokens != null)) {
    items.push(`${usage.inputTokens ?? "?"} in / ${usage.outputTokens ?? "?"} out tokens`);
  }
  if (typeof metadata.costUsd === "number") items.push(formatCost(metadata.costUsd));
  const fallbacks = metadata.fallbacks ?? [];
  if (items.length === 0 && fallbacks.length === 0) return null;
  return (
    <div className="meta" data-testid="message-metadata">
      <span>{items.join(" · ")}</span>
      {fallbacks.length > 0 && (
        <span className="fallbacks">
          {" "}· fell back from {fallbacks.map((f) => `${f.deployment} (${f.error})`).join(", ")}
        </span>
      )}
      {metadata.incomplete && <span className="incomplete"> · incomplete</span>}
    </div>
  );
}

type Props = {
  message: ChatMessage;
  streaming: boolean;
  canEdit: boolean;
  canRegenerate: boolean;
  onEdit: (text: string) => void;
  onRegenerate: () => void;
  onApproval: (approvalId: string, approved: boolean) => void;
};

export function Message({ message, streaming, canEdit, canRegenerate, onEdit, onRegenerate, onApproval }: Props) {
  const [editing, setEditing] = useState<string | null>(null);
  const isUser = message.role === "user";
  const lastTextIndex = message.parts.findLastIndex((part) => part.type === "text");

  return (
    <article
      className={`message ${message.role}`}
      data-role={message.role}
      data-streaming={streaming ? "true" : undefined}
      aria-label={isUser ? "Your message" : "Assistant message"}
    >
      {editing !== null ? (
        <form
          className="edit-form"
          onSubmit={(event) => {
            event.preventDefault();
            if (editing.trim()) onEdit(editing.trim());
            setEditing(null);
          }}
        >
          <textarea aria-label="Edit message" value={editing} rows={3} onChange={(e) => setEditing(e.target.value)}
            onKeyDown={(e) => { if (e.key === "Escape") setEditing(null); }} autoFocus />
          <div className="row">
            <button type="submit" className="primary">Save and resend</button>
            <button type="button" onClick={() => setEditing(null)}>Cancel</button>
          </div>
        </form>
      ) : (
        <div className="bubble">
          {message.parts.map((part, index) => {
            if (part.type === "text") {
              return isUser
                ? <p key={index} className="user-text">{part.text}</p>
                : <Markdown key={index} text={part.text} streaming={streaming && index === lastTextIndex} />;
            }
            if (part.type === "reasoning") {
              return (
                <details key={index} className="reasoning" open={streaming && part.state === "streaming"}>
                  <summary>Reasoning</summary>
                  <Markdown text={part.text} streaming={streaming && part.state === "streaming"} />
                </details>
              );
            }
            if (isToolUIPart(part)) {
              return <ToolCard key={part.toolCallId} part={part} onApproval={onApproval} />;
            }
            if (part.type === "source-url") {
              return <a key={index} className="source" href={part.url} target="_blank" rel="noreferrer noopener">{part.title ?? part.url}</a>;
            }
            if (part.type === "file") {
              return <a key={index} className="source" href={part.url} target="_blank" rel="noreferrer noopener">{part.filename ?? part.mediaType}</a>;
            }
            return null;
          })}
        </div>
      )}
      {!isUser && message.metadata && <MetadataLine metadata={message.metadata} />}
      {editing === null && (canEdit || canRegenerate) && (
        <div className="message-actions">
          {canEdit && <button type="button" className="link" onClick={() => setEditing(messageText(message))}>Edit</button>}
          {canRegenerate && <button type="button" className="link" onClick={onRegenerate}>Regenerate</button>}
        </div>
      )}
    </article>
  );
}
