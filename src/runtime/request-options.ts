/**
 * Per-request options for @kubernetes/client-node's generated API clients.
 *
 * Why: the generated clients have no request timeout. Against a frozen or half-open API server
 * a call hangs forever, and a leader that hangs while renewing cannot notice its renew
 * deadline passing. The clients do let a middleware set an AbortSignal on the request, which
 * undici honours.
 */
import {
  Observable,
  type ConfigurationOptions,
  type RequestContext,
  type ResponseContext,
} from "@kubernetes/client-node";

/** Options that make one API call abort when `signal` aborts. */
export function abortableRequest(signal: AbortSignal): ConfigurationOptions {
  return {
    middleware: [
      {
        pre: (request: RequestContext) => {
          request.setSignal(signal);
          return new Observable(Promise.resolve(request));
        },
        post: (response: ResponseContext) => new Observable(Promise.resolve(response)),
      },
    ],
    // Keep any middleware the KubeConfig installed.
    middlewareMergeStrategy: "append",
  };
}

/** Options that make one API call fail after `timeoutMs`. */
export function requestTimeout(timeoutMs: number): ConfigurationOptions {
  return abortableRequest(AbortSignal.timeout(timeoutMs));
}
