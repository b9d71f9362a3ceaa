/**
 * Reading errors from @kubernetes/client-node: their HTTP status, and a short description that is
 * safe to put in a log line, a condition, an Event or a CLI message. The one place the operator,
 * its runtime and the CLI read API errors.
 *
 * Why not log the error object itself, nor its `message`: an `ApiException` carries the whole
 * response body and every response header in its message, and a thrown object from domain code may
 * carry a connection config. Outputs get the HTTP status, the API's short reason and message,
 * nothing more.
 */

/** The HTTP status of a failed API call or watch, when there is one. */
export function statusCodeOf(err: unknown): number | undefined {
  if (typeof err !== "object" || err === null) return undefined;
  const candidate = err as { code?: unknown; statusCode?: unknown };
  // ApiException uses `code`; Watch's errors use `statusCode`. Other errors have codes that
  // are not HTTP statuses: Node's socket errors a string ("ECONNREFUSED"), an aborted
  // request's DOMException a legacy number (23 for a timeout).
  if (isHttpStatus(candidate.statusCode)) return candidate.statusCode;
  if (!(err instanceof DOMException) && isHttpStatus(candidate.code)) return candidate.code;
  return undefined;
}

function isHttpStatus(value: unknown): value is number {
  return typeof value === "number" && Number.isInteger(value) && value >= 100 && value <= 599;
}

export const isNotFound = (err: unknown): boolean => statusCodeOf(err) === 404;
export const isConflict = (err: unknown): boolean => statusCodeOf(err) === 409;

export interface ErrorSummary {
  message: string;
  status?: number;
  reason?: string;
}

/** A one-line description of `err` that is safe to put in a log line. */
export function describeError(err: unknown): ErrorSummary {
  const status = statusCodeOf(err);
  const { message, reason } = kubernetesStatusOf(err) ?? {};
  if (message !== undefined) return { message, status, reason };
  if (status !== undefined) return { message: `HTTP ${status}`, status, reason };
  if (err instanceof Error) return { message: shortMessage(err) };
  return { message: String(err) };
}

/**
 * The one-line message of an API error for conditions, Events and the CLI: the API server's own
 * message when it sent one, else the HTTP status, else the error's first line. Never the
 * ApiException's message, which holds the response headers and body (see the header comment).
 */
export function apiErrorMessage(err: unknown): string {
  return describeError(err).message;
}

interface KubernetesStatus {
  message?: string;
  reason?: string;
}

/** The `Status` object the API server sends with an error, if `err` carries one. */
function kubernetesStatusOf(err: unknown): KubernetesStatus | undefined {
  if (typeof err !== "object" || err === null || !("body" in err)) return undefined;
  let body: unknown = (err as { body: unknown }).body;
  if (typeof body === "string") {
    try {
      body = JSON.parse(body);
    } catch {
      return undefined;
    }
  }
  if (typeof body !== "object" || body === null) return undefined;
  const { message, reason } = body as { message?: unknown; reason?: unknown };
  return {
    message: typeof message === "string" ? message : undefined,
    reason: typeof reason === "string" ? reason : undefined,
  };
}

/**
 * fetch (the library's watches use it) wraps socket errors: "fetch failed" alone says nothing, its
 * cause says why. Only the first line of each: a multi-line message (an ApiException whose code is
 * not an HTTP status would be one) continues with what must not be shown.
 */
function shortMessage(err: Error): string {
  const firstLine = (text: string) => text.split("\n", 1)[0] ?? "";
  const cause = (err as { cause?: unknown }).cause;
  const causeText = cause instanceof Error ? `: ${firstLine(cause.message)}` : "";
  return `${firstLine(err.message)}${causeText}`.slice(0, 500);
}
