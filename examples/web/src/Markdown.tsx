import { Streamdown } from "streamdown";

/**
 * Model output as Markdown. Streamdown completes constructs that are still open while streaming
 * (`**bol` renders bold, an open code fence renders as code) and sanitizes what it renders: model
 * output never reaches the DOM as raw HTML.
 */
export function Markdown({ text, streaming = false }: { text: string; streaming?: boolean }) {
  return (
    <Streamdown
      className="markdown"
      mode={streaming ? "streaming" : "static"}
      isAnimating={streaming}
      caret={streaming ? "block" : undefined}
      controls={false}
    >
      {text}
    </Streamdown>
  );
}
