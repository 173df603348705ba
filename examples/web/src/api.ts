// Everything the page asks the backend, outside the chat stream itself (which useChat reads).
import type { UIMessage } from "ai";

// Where the backend is: `?backend=` wins, then the build-time VITE_BACKEND_URL, then the page's
// own origin (the page served by `make dev`), or the local dev server when run by `vite dev`.
function resolveBackendUrl(): string {
  const fromQuery = new URLSearchParams(window.location.search).get("backend");
  const fromBuild = import.meta.env.VITE_BACKEND_URL as string | undefined;
  const fallback = import.meta.env.DEV ? "http://127.0.0.1:8000" : window.location.origin;
  return (fromQuery || fromBuild || fallback).replace(/\/+$/, "");
}

export const BACKEND_URL = resolveBackendUrl();

const API_KEY_STORAGE = "chat-example.apiKey";

/** The API key or JWT the user pasted (kept in this browser only), or "" for none. */
export function getApiKey(): string {
  try {
    return window.localStorage.getItem(API_KEY_STORAGE) ?? "";
  } catch {
    return "";
  }
}

export function setApiKey(value: string): void {
  try {
    if (value) window.localStorage.setItem(API_KEY_STORAGE, value);
    else window.localStorage.removeItem(API_KEY_STORAGE);
  } catch {
    // Storage may be disabled: the key then lasts until reload.
  }
}

export function authHeaders(): Record<string, string> {
  const key = getApiKey();
  return key ? { authorization: `Bearer ${key}` } : {};
}

/** A non-2xx answer, with what the page shows: status, the server's message and when to retry. */
export class HttpError extends Error {
  readonly status: number;
  readonly code: string | undefined;
  readonly retryAfterS: number | undefined;

  constructor(status: number, message: string, code?: string, retryAfterS?: number) {
    super(message);
    this.name = "HttpError";
    this.status = status;
    this.code = code;
    this.retryAfterS = retryAfterS;
  }

  static async from(response: Response): Promise<HttpError> {
    const text = await response.text().catch(() => "");
    let message = text.trim() || response.statusText || `HTTP ${response.status}`;
    let code: string | undefined;
    try {
      const body = JSON.parse(text) as { error?: { message?: string; code?: string } | string };
      if (typeof body.error === "string") message = body.error;
      else if (body.error?.message) {
        message = body.error.message;
        code = body.error.code;
      }
    } catch {
      // Not JSON: keep the text.
    }
    return new HttpError(response.status, message, code, retryAfterSeconds(response.headers));
  }
}

/** Seconds to wait, from `Retry-After` (seconds or an HTTP date) or `X-RateLimit-Reset` (epoch seconds). */
export function retryAfterSeconds(headers: Headers): number | undefined {
  const retryAfter = headers.get("retry-after");
  if (retryAfter) {
    const seconds = Number(retryAfter);
    if (Number.isFinite(seconds)) return Math.max(0, seconds);
    const date = Date.parse(retryAfter);
    if (!Number.isNaN(date)) return Math.max(0, Math.ceil((date - Date.now()) / 1000));
  }
  const reset = Number(headers.get("x-ratelimit-reset"));
  if (reset > 0) return Math.max(0, Math.ceil(reset - Date.now() / 1000));
  return undefined;
}

/** `fetch` that turns a non-2xx answer into an `HttpError` (useChat keeps the thrown error as is). */
export const checkedFetch: typeof fetch = async (input, init) => {
  let response: Response;
  try {
    response = await fetch(input, init);
  } catch (err) {
    if (err instanceof TypeError) {
      throw new TypeError(`Cannot reach the backend at ${BACKEND_URL} (${err.message}).`);
    }
    throw err;
  }
  if (!response.ok) throw await HttpError.from(response);
  return response;
};

async function request<T>(path: string, init: RequestInit = {}): Promise<T> {
  const headers = { ...authHeaders(), ...(init.body ? { "content-type": "application/json" } : {}) };
  const response = await checkedFetch(`${BACKEND_URL}${path}`, { ...init, headers });
  return (response.status === 204 ? undefined : await response.json()) as T;
}

export type ModelInfo = {
  id: string;
  owned_by: string;
  kind?: "alias" | "tier" | "deployment" | "mock" | string;
  available?: boolean;
  tier?: string;
  chain?: string[];
};

export async function listModels(): Promise<ModelInfo[]> {
  const body = await request<{ data: ModelInfo[] }>("/v1/models");
  return body.data;
}

export type ConversationSummary = {
  id: string;
  title: string | null;
  createdAt: string;
  updatedAt: string;
  model: string | null;
  messageCount: number;
};

export async function listConversations(): Promise<ConversationSummary[]> {
  const body = await request<{ conversations: ConversationSummary[] }>("/api/conversations?limit=50");
  return body.conversations;
}

export async function getConversation(id: string): Promise<ConversationSummary & { messages: UIMessage[] }> {
  return request(`/api/conversations/${encodeURIComponent(id)}`);
}

export async function renameConversation(id: string, title: string): Promise<void> {
  await request(`/api/conversations/${encodeURIComponent(id)}`, { method: "PATCH", body: JSON.stringify({ title }) });
}

export async function deleteConversation(id: string): Promise<void> {
  await request(`/api/conversations/${encodeURIComponent(id)}`, { method: "DELETE" });
}

/** Ask the server to stop generating (for resumable streams); a server without the endpoint answers 404. */
export function requestServerStop(chatId: string): void {
  fetch(`${BACKEND_URL}/api/chat/${encodeURIComponent(chatId)}/stop`, { method: "POST", headers: authHeaders() })
    .catch(() => undefined);
}

/** A sentence for a person, for any error the page can meet. */
export function describeError(error: unknown): { title: string; detail: string } {
  if (error instanceof HttpError) {
    const { status, message, retryAfterS } = error;
    if (status === 429) {
      const wait = retryAfterS === undefined ? "" : ` Retry in ${retryAfterS} s.`;
      return { title: "Rate limited (429)", detail: `${message}${wait}` };
    }
    if (status === 401 || status === 403) {
      return { title: `Not authorized (${status})`, detail: `${message} Set an API key or token in Settings.` };
    }
    if (status >= 500) return { title: `Server error (${status})`, detail: message };
    return { title: `Request refused (${status})`, detail: message };
  }
  if (error instanceof Error) {
    if (error instanceof TypeError && /backend/.test(error.message)) {
      return { title: "Network error", detail: error.message };
    }
    // An error chunk inside the stream: useChat keeps the partial answer above it.
    return { title: "The answer stopped with an error", detail: error.message };
  }
  return { title: "Error", detail: String(error) };
}
