import { getToolName, type DynamicToolUIPart, type ToolUIPart } from "ai";

type ToolPart = ToolUIPart | DynamicToolUIPart;

const STATE_LABELS: Record<string, string> = {
  "input-streaming": "preparing input…",
  "input-available": "running…",
  "approval-requested": "waiting for your approval",
  "approval-responded": "answered",
  "output-available": "done",
  "output-error": "failed",
  "output-denied": "denied",
};

function Json({ value }: { value: unknown }) {
  const text = typeof value === "string" ? value : JSON.stringify(value, null, 2);
  return <pre className="tool-json">{text ?? "—"}</pre>;
}

/** One tool call as a collapsible card: input, output or error, and approve/deny when asked. */
export function ToolCard({ part, onApproval }: {
  part: ToolPart;
  onApproval: (approvalId: string, approved: boolean) => void;
}) {
  const name = getToolName(part);
  const needsAnswer = part.state === "approval-requested";
  return (
    <details className={`tool-card tool-${part.state}`} open={needsAnswer || part.state === "output-error"}>
      <summary>
        <span className="tool-name">{part.title ?? name}</span>
        <span className="tool-state">{STATE_LABELS[part.state] ?? part.state}</span>
      </summary>
      <div className="tool-body">
        <div className="tool-section-label">Input</div>
        <Json value={part.input} />
        {part.state === "output-available" && (
          <>
            <div className="tool-section-label">Output</div>
            <Json value={part.output} />
          </>
        )}
        {part.state === "output-error" && <p className="tool-error" role="alert">{part.errorText}</p>}
        {part.state === "output-denied" && <p className="tool-note">The call was denied.</p>}
        {part.state === "approval-responded" && (
          <p className="tool-note">{part.approval.approved ? "Approved" : "Denied"}{part.approval.reason ? `: ${part.approval.reason}` : ""}</p>
        )}
        {needsAnswer && (
          <div className="tool-approval" role="group" aria-label={`Approve the call to ${name}?`}>
            {"reason" in part.approval && part.approval.reason ? <p>{String(part.approval.reason)}</p> : null}
            <button type="button" className="primary" onClick={() => onApproval(part.approval.id, true)}>Approve</button>
            <button type="button" onClick={() => onApproval(part.approval.id, false)}>Deny</button>
          </div>
        )}
      </div>
    </details>
  );
}
