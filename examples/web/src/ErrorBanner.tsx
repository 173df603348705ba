import { describeError } from "./api";

/** An error, said plainly: what happened, the server's message, and what to do. */
export function ErrorBanner({ error, onRetry, onDismiss }: { error: unknown; onRetry?: () => void; onDismiss?: () => void }) {
  const { title, detail } = describeError(error);
  return (
    <div className="error" role="alert">
      <strong>{title}</strong>
      <p>{detail}</p>
      <div className="row">
        {onRetry && <button type="button" onClick={onRetry}>Retry</button>}
        {onDismiss && <button type="button" className="link" onClick={onDismiss}>Dismiss</button>}
      </div>
    </div>
  );
}
