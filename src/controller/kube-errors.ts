/** Reading errors from @kubernetes/client-node 2.x, whose ApiException carries `code` and `body`. */
export function httpStatus(err: unknown): number | undefined {
  const code = (err as { code?: unknown })?.code;
  return typeof code === "number" ? code : undefined;
}

export const isNotFound = (err: unknown) => httpStatus(err) === 404;
export const isConflict = (err: unknown) => httpStatus(err) === 409;

/** A one-line description of an API error for conditions and logs (the body's message when there is one). */
export function apiErrorMessage(err: unknown): string {
  const body = (err as { body?: unknown })?.body;
  if (typeof body === "string") {
    try {
      const parsed = JSON.parse(body) as { message?: string };
      if (parsed.message) return parsed.message;
    } catch {
      /* not JSON */
    }
  } else if (body && typeof body === "object" && "message" in body) {
    return String((body as { message: unknown }).message);
  }
  return err instanceof Error ? err.message.split("\n")[0]! : String(err);
}
