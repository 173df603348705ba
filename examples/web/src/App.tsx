import { generateId } from "ai";
import { useCallback, useEffect, useState } from "react";

import {
  BACKEND_URL, deleteConversation, describeError, getApiKey, getConversation, HttpError, listConversations,
  listModels, renameConversation, setApiKey, type ConversationSummary, type ModelInfo,
} from "./api";
import { Chat } from "./Chat";
import type { ChatMessage } from "./Message";
import { Sidebar } from "./Sidebar";
import { SsePage } from "./SsePage";

const params = new URLSearchParams(window.location.search);
const MODEL_STORAGE = "chat-example.model";

function initialModel(): string {
  const fromQuery = params.get("model");
  if (fromQuery !== null) return fromQuery;
  try {
    return window.localStorage.getItem(MODEL_STORAGE) ?? "";
  } catch {
    return "";
  }
}

/** The same page with one query parameter changed (keeps `?backend=` and `?model=`). */
function hrefWith(name: string, value: string | null): string {
  const next = new URLSearchParams(window.location.search);
  if (value === null) next.delete(name);
  else next.set(name, value);
  const query = next.toString();
  return `${window.location.pathname}${query ? `?${query}` : ""}`;
}

const KIND_LABELS: Record<string, string> = {
  alias: "Aliases", tier: "Tiers", deployment: "Deployments", mock: "Mock models",
};

function ModelPicker({ models, value, onChange }: { models: ModelInfo[] | null; value: string; onChange: (v: string) => void }) {
  const groups = new Map<string, ModelInfo[]>();
  for (const m of models ?? []) {
    const kind = m.kind ?? "other";
    groups.set(kind, [...(groups.get(kind) ?? []), m]);
  }
  const known = (models ?? []).some((m) => m.id === value);
  return (
    <label className="model-picker">
      <span>Model</span>
      <select value={value} onChange={(e) => onChange(e.target.value)}>
        <option value="">Server default</option>
        {value && !known && <option value={value}>{value}</option>}
        {[...groups].map(([kind, items]) => (
          <optgroup key={kind} label={KIND_LABELS[kind] ?? kind}>
            {items.map((m) => (
              <option key={m.id} value={m.id} disabled={m.available === false}>
                {m.id}{m.available === false ? " (not configured)" : ""}
              </option>
            ))}
          </optgroup>
        ))}
      </select>
    </label>
  );
}

function Settings() {
  const [key, setKey] = useState(getApiKey());
  const [saved, setSaved] = useState(false);
  return (
    <details className="settings">
      <summary>Settings</summary>
      <form onSubmit={(e) => { e.preventDefault(); setApiKey(key.trim()); setSaved(true); window.location.reload(); }}>
        <p>Backend: <code>{BACKEND_URL}</code> (change with <code>?backend=</code>)</p>
        <label>
          API key or token
          <input type="password" value={key} autoComplete="off" onChange={(e) => { setKey(e.target.value); setSaved(false); }} />
        </label>
        <button type="submit">{saved ? "Saved" : "Save"}</button>
      </form>
    </details>
  );
}

type Open = { id: string; messages: ChatMessage[] };

export function App() {
  const mode = params.get("mode") === "sse" ? "sse" : "chat";
  const [model, setModel] = useState(initialModel);
  const [models, setModels] = useState<ModelInfo[] | null>(null);
  const [modelsError, setModelsError] = useState<string | null>(null);
  const [open, setOpen] = useState<Open>(() => ({ id: generateId(), messages: [] }));
  const [conversations, setConversations] = useState<ConversationSummary[] | null>(null);
  const [historyError, setHistoryError] = useState<string | null>(null);
  const [sidebarOpen, setSidebarOpen] = useState(false);
  const [actionError, setActionError] = useState<unknown>(null);

  const refresh = useCallback(async () => {
    try {
      setConversations(await listConversations());
      setHistoryError(null);
    } catch (err) {
      setConversations([]);
      setHistoryError(err instanceof HttpError && err.status === 404
        ? "History is off on this server (MEMORY=none)."
        : describeError(err).detail);
    }
  }, []);

  useEffect(() => {
    void refresh();
    listModels().then(setModels, (err) => setModelsError(describeError(err).detail));
  }, [refresh]);

  const chooseModel = (value: string) => {
    setModel(value);
    try {
      window.localStorage.setItem(MODEL_STORAGE, value);
    } catch {
      // ignore
    }
  };

  const openConversation = async (id: string) => {
    setSidebarOpen(false);
    try {
      const conversation = await getConversation(id);
      setOpen({ id, messages: conversation.messages as ChatMessage[] });
      setActionError(null);
    } catch (err) {
      setActionError(err);
    }
  };

  const run = async (action: () => Promise<void>) => {
    try {
      await action();
      setActionError(null);
    } catch (err) {
      setActionError(err);
    }
    await refresh();
  };

  return (
    <div className={`app ${sidebarOpen ? "sidebar-open" : ""}`}>
      <header className="topbar">
        {mode === "chat" && (
          <button type="button" className="icon sidebar-toggle" aria-label="Conversations" aria-expanded={sidebarOpen}
            onClick={() => setSidebarOpen(!sidebarOpen)}>☰</button>
        )}
        <h1>Chat</h1>
        <nav className="modes" aria-label="Mode">
          <a href={hrefWith("mode", null)} aria-current={mode === "chat" ? "page" : undefined}>useChat</a>
          <a href={hrefWith("mode", "sse")} aria-current={mode === "sse" ? "page" : undefined}>Plain SSE</a>
        </nav>
        <ModelPicker models={models} value={model} onChange={chooseModel} />
        {modelsError && <span className="models-error" title={modelsError}>models unavailable</span>}
        <Settings />
      </header>
      {mode === "sse" ? (
        <main className="main single"><SsePage model={model} /></main>
      ) : (
        <main className="main">
          <Sidebar
            conversations={conversations}
            activeId={open.id}
            error={historyError}
            onOpen={(id) => void openConversation(id)}
            onNew={() => { setOpen({ id: generateId(), messages: [] }); setSidebarOpen(false); }}
            onRename={(id, title) => void run(() => renameConversation(id, title))}
            onDelete={(id) => void run(async () => {
              await deleteConversation(id);
              if (id === open.id) setOpen({ id: generateId(), messages: [] });
            })}
          />
          <div className="chat-column">
            {actionError !== null && (
              <div className="error" role="alert">
                <strong>{describeError(actionError).title}</strong>
                <p>{describeError(actionError).detail}</p>
              </div>
            )}
            <Chat key={open.id} chatId={open.id} initialMessages={open.messages} model={model} onAnswered={() => void refresh()} />
          </div>
        </main>
      )}
    </div>
  );
}
