import { useEffect, useRef, useState } from "react";

/** The message box: Enter sends, Shift+Enter adds a line, Esc (or Stop) stops the answer. */
export function Composer({ busy, onSend, onStop }: { busy: boolean; onSend: (text: string) => void; onStop: () => void }) {
  const [text, setText] = useState("");
  // Esc stops the answer from anywhere on the page.
  const stopRef = useRef(onStop);
  stopRef.current = onStop;
  useEffect(() => {
    if (!busy) return;
    const onKey = (event: KeyboardEvent) => {
      if (event.key === "Escape") stopRef.current();
    };
    window.addEventListener("keydown", onKey);
    return () => window.removeEventListener("keydown", onKey);
  }, [busy]);
  const submit = () => {
    const value = text.trim();
    if (!value || busy) return;
    onSend(value);
    setText("");
  };
  return (
    <form className="composer" onSubmit={(event) => { event.preventDefault(); submit(); }}>
      <textarea
        aria-label="Message"
        placeholder="Message (Enter to send, Shift+Enter for a new line, Esc to stop)"
        rows={2}
        value={text}
        onChange={(event) => setText(event.target.value)}
        onKeyDown={(event) => {
          if (event.key === "Enter" && !event.shiftKey && !event.nativeEvent.isComposing) {
            event.preventDefault();
            submit();
          }
        }}
      />
      <div className="composer-buttons">
        <button type="submit" className="primary" disabled={busy || !text.trim()}>Send</button>
        <button type="button" onClick={onStop} disabled={!busy}>Stop</button>
      </div>
    </form>
  );
}
