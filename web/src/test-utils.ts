// Helpers for the unit tests: canned HTTP answers for a stubbed fetch.
import { vi } from 'vitest'

export function jsonResponse(status: number, body?: unknown, headers: Record<string, string> = {}): Response {
  const problem = status >= 400
  return new Response(body === undefined ? null : JSON.stringify(body), {
    status,
    headers: { 'Content-Type': problem ? 'application/problem+json' : 'application/json', ...headers },
  })
}

export function problem(status: number, code: string, detail: string, headers: Record<string, string> = {}): Response {
  return jsonResponse(status, { type: 'about:blank', title: code, status, code, detail }, headers)
}

export type Route = (url: string, init: RequestInit) => Response | Promise<Response>

/** Stubs fetch with `route` and returns the mock, to inspect its calls. */
export function stubFetch(route: Route) {
  const mock = vi.fn((input: RequestInfo | URL, init: RequestInit = {}) => Promise.resolve(route(String(input), init)))
  vi.stubGlobal('fetch', mock)
  return mock
}

export function header(init: RequestInit | undefined, name: string): string | undefined {
  return (init?.headers as Record<string, string> | undefined)?.[name]
}
