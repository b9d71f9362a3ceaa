/**
 * The HTTP library under the generated API clients: undici's `request` instead of `fetch`.
 *
 * Why: @kubernetes/client-node sends every typed call through undici's `fetch`, which wraps
 * each response in WHATWG streams, a Headers object and a Response before the library reads it
 * back as one string. The operator sends its patches one after another, so whatever it spends
 * per request adds to every fan-out; a CPU profile of the fan-out benchmark put most of the
 * operator's own time in that path (docs/benchmarks.md). `request` hands back a Node stream
 * and plain headers on the same dispatcher (the same kept-alive connections).
 *
 * The body is read whole before the response is handed on: every typed call reads it anyway,
 * and a body nobody reads would hold its connection. Watches do not come through here (the
 * library's Watch calls fetch itself and streams the body).
 *
 * Unlike fetch, `request` sends no Accept-Encoding, so the API server answers large lists
 * uncompressed: less CPU on both ends, more bytes on the cluster network (client-go asks
 * for gzip; kubectl can be told not to).
 */
import {
  ResponseContext,
  SelfDecodingBody,
  wrapHttpLibrary,
  type HttpLibrary,
  type RequestContext,
  type ResponseBody,
} from "@kubernetes/client-node";
import { request, type Dispatcher } from "undici";

export function undiciHttpLibrary(userAgent: string): HttpLibrary {
  return wrapHttpLibrary({
    async send(call: RequestContext): Promise<ResponseContext> {
      const response = await request(call.getUrl(), {
        method: call.getHttpMethod() as Dispatcher.HttpMethod,
        headers: withUserAgent(call.getHeaders(), userAgent),
        body: bodyOf(call),
        signal: call.getSignal(),
        dispatcher: call.getDispatcher(),
      });
      return new ResponseContext(response.statusCode, flatHeaders(response.headers), await readBody(response));
    },
  });
}

/**
 * JSON (everything the API server answers to the typed calls) is decoded straight from the
 * socket's chunks: reading it as an ArrayBuffer first allocated a copy of every response
 * outside the JS heap, which left the C heap about 16 MiB larger at 5,000 Deployments (docs/benchmarks.md).
 */
async function readBody(response: Dispatcher.ResponseData): Promise<ResponseBody> {
  const contentType = String(response.headers["content-type"] ?? "");
  if (!/json|yaml|text/.test(contentType)) {
    const bytes = Buffer.from(await response.body.arrayBuffer());
    return new SelfDecodingBody(Promise.resolve(bytes));
  }
  const text = await response.body.text();
  return { text: async () => text, binary: async () => Buffer.from(text), stream: () => null };
}

function withUserAgent(headers: Record<string, string>, userAgent: string): Record<string, string> {
  return Object.keys(headers).some((name) => name.toLowerCase() === "user-agent")
    ? headers
    : { ...headers, "user-agent": userAgent };
}

/** The Kubernetes API takes JSON (a string here); multipart bodies are for other OpenAPI services. */
function bodyOf(call: RequestContext): string | undefined {
  const body = call.getBody();
  if (body === undefined || typeof body === "string") return body;
  if (body instanceof URLSearchParams) return body.toString();
  throw new Error(`${call.getHttpMethod()} ${call.getUrl()}: multipart request bodies are not supported`);
}

/** The library's responses carry one string per header, as fetch's Headers join repeated ones. */
function flatHeaders(headers: Record<string, string | string[] | undefined>): Record<string, string> {
  const flat: Record<string, string> = {};
  for (const [name, value] of Object.entries(headers)) {
    if (value !== undefined) flat[name] = Array.isArray(value) ? value.join(", ") : value;
  }
  return flat;
}
