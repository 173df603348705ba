import { Streamdown, type Components } from "streamdown";

// Streamdown draws bold as a span with a Tailwind class; this page has no Tailwind, and <strong>
// says what it is to screen readers and to the tests.
const COMPONENTS: Components = {
  strong: ({ children }) => <strong>{children}</strong>,
};

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
      components={COMPONENTS}
      linkSafety={{ enabled: false }}
    >
      {text}
    </Streamdown>
  );
}
