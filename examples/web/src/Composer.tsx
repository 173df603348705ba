import { useState } from "react";

/** The message box: Enter sends, Shift+Enter adds a line, Esc (or Stop) stops the answer. */
export function Composer({ busy, onSend, onStop }: { busy: boolean; onSend: (text: string) => void; onStop: () => void }) {
  const [text, setText] = useState("");
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
          } else if (event.key === "Escape" && busy) {
            event.preventDefault();
            onStop();
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
