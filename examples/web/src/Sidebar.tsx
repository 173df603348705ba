import { useState } from "react";

import type { ConversationSummary } from "./api";

type Props = {
  conversations: ConversationSummary[] | null;
  activeId: string;
  error: string | null;
  onOpen: (id: string) => void;
  onNew: () => void;
  onRename: (id: string, title: string) => void;
  onDelete: (id: string) => void;
};

/** The stored conversations (the history API), newest first: open, rename, delete, start a new one. */
export function Sidebar({ conversations, activeId, error, onOpen, onNew, onRename, onDelete }: Props) {
  const [renaming, setRenaming] = useState<{ id: string; title: string } | null>(null);
  const [confirming, setConfirming] = useState<string | null>(null);
  return (
    <nav className="sidebar" aria-label="Conversations">
      <button type="button" className="primary new-chat" onClick={onNew}>New conversation</button>
      {error && <p className="sidebar-note" role="status">{error}</p>}
      {conversations === null && !error && <p className="sidebar-note">Loading…</p>}
      {conversations?.length === 0 && <p className="sidebar-note">No conversations yet.</p>}
      <ul>
        {conversations?.map((c) => {
          const title = c.title || "Untitled";
          if (renaming?.id === c.id) {
            return (
              <li key={c.id}>
                <form className="rename" onSubmit={(e) => { e.preventDefault(); onRename(c.id, renaming.title); setRenaming(null); }}>
                  <input aria-label="New title" value={renaming.title} autoFocus maxLength={200}
                    onChange={(e) => setRenaming({ id: c.id, title: e.target.value })}
                    onKeyDown={(e) => { if (e.key === "Escape") setRenaming(null); }} />
                  <button type="submit">Save</button>
                </form>
              </li>
            );
          }
          return (
            <li key={c.id} className={c.id === activeId ? "active" : undefined}>
              <button type="button" className="conversation" aria-current={c.id === activeId ? "page" : undefined}
                onClick={() => onOpen(c.id)} title={title}>
                {title}
              </button>
              <div className="conversation-actions">
                {confirming === c.id ? (
                  <>
                    <button type="button" className="danger" aria-label={`Confirm delete ${title}`}
                      onClick={() => { onDelete(c.id); setConfirming(null); }}>Delete?</button>
                    <button type="button" aria-label="Keep it" onClick={() => setConfirming(null)}>Keep</button>
                  </>
                ) : (
                  <>
                    <button type="button" className="icon" aria-label={`Rename ${title}`} title="Rename"
                      onClick={() => setRenaming({ id: c.id, title: c.title ?? "" })}>✎</button>
                    <button type="button" className="icon" aria-label={`Delete ${title}`} title="Delete"
                      onClick={() => setConfirming(c.id)}>×</button>
                  </>
                )}
              </div>
            </li>
          );
        })}
      </ul>
    </nav>
  );
}
