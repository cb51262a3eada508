// The one client of the REST API: JSON in and out, problem documents turned
// into ApiError, the access token attached, and one refresh-then-retry when a
// call answers 401.
import type {
  FieldError,
  FollowEntry,
  Media,
  Message,
  NewPost,
  OwnUser,
  Page,
  Post,
  ProblemDocument,
  ProfileChange,
  PublicUser,
  Session,
} from './models'

export class ApiError extends Error {
  readonly status: number
  readonly code: string
  readonly detail: string
  readonly errors: FieldError[]
  /** Seconds to wait before trying again (a 429's Retry-After). */
  readonly retryAfter: number | null

  constructor(status: number, problem: Partial<ProblemDocument>, retryAfter: number | null = null) {
    const detail = problem.detail || problem.title || `The request failed (${status}).`
    super(detail)
    this.name = 'ApiError'
    this.status = status
    this.code = problem.code ?? 'unknown'
    this.detail = detail
    this.errors = problem.errors ?? []
    this.retryAfter = retryAfter
  }
}

/** Retry-After as seconds from now: delta-seconds or an HTTP date. */
export function parseRetryAfter(value: string | null, now = Date.now()): number | null {
  if (!value) return null
  const text = value.trim()
  if (/^\d+$/.test(text)) return Number(text)
  const at = Date.parse(text)
  return Number.isNaN(at) ? null : Math.max(0, Math.ceil((at - now) / 1000))
}

/** What to tell someone about a failure, as a sentence. */
export function describeError(error: unknown): string {
  if (!(error instanceof ApiError)) {
    return error instanceof Error ? error.message : 'Something went wrong.'
  }
  let text = error.detail.endsWith('.') ? error.detail : `${error.detail}.`
  // Unless the detail already says when.
  if (error.retryAfter !== null && !/retry|try again/i.test(text)) text += ` Try again in ${error.retryAfter} s.`
  return text
}

function problemOf(status: number, contentType: string | null, body: string, retryAfter: string | null): ApiError {
  let problem: Partial<ProblemDocument> = {}
  if (contentType?.includes('json')) {
    try {
      problem = JSON.parse(body) as Partial<ProblemDocument>
    } catch {
      // Not a problem document after all: fall back to the status.
    }
  }
  return new ApiError(status, problem, parseRetryAfter(retryAfter))
}

const unreachable = () =>
  new ApiError(0, { code: 'network', detail: 'The server could not be reached. Check your connection' })

/** How the client learns the access token and renews it (set by the auth store). */
export interface AuthHooks {
  token(): string | null
  /** A fresh token after `stale` was refused, or null when the session is over. */
  refresh(stale: string): Promise<string | null>
}

let hooks: AuthHooks = { token: () => null, refresh: async () => null }

export function setAuthHooks(next: AuthHooks): void {
  hooks = next
}

type Query = Record<string, string | number | null | undefined>

export interface RequestOptions {
  method?: string
  body?: unknown
  query?: Query
  headers?: Record<string, string>
  /** false: send no token and never refresh (the session endpoints). */
  auth?: boolean
}

function withQuery(path: string, query?: Query): string {
  const params = new URLSearchParams()
  for (const [key, value] of Object.entries(query ?? {})) {
    if (value !== null && value !== undefined && value !== '') params.set(key, String(value))
  }
  const text = params.toString()
  return text ? `${path}?${text}` : path
}

/** Runs `send` with the current token; on a 401, once more with a renewed one. */
async function withToken<R extends { status: number }>(
  useAuth: boolean,
  send: (token: string | null) => Promise<R>,
): Promise<R> {
  const token = useAuth ? hooks.token() : null
  const first = await send(token)
  if (first.status !== 401 || !token) return first
  const fresh = await hooks.refresh(token)
  return fresh ? send(fresh) : first
}

/** The response to a call (after one renewal of the token on a 401), whatever its status. */
async function fetchWithToken(path: string, options: RequestOptions = {}): Promise<Response> {
  const url = withQuery(path, options.query)
  return withToken(options.auth !== false, async (token) => {
    const headers: Record<string, string> = { Accept: 'application/json', ...options.headers }
    if (options.body !== undefined) headers['Content-Type'] = 'application/json'
    if (token) headers.Authorization = `Bearer ${token}`
    try {
      return await fetch(url, {
        method: options.method ?? 'GET',
        headers,
        body: options.body === undefined ? undefined : JSON.stringify(options.body),
        credentials: 'same-origin',
      })
    } catch {
      throw unreachable()
    }
  })
}

function failure(response: Response, body: string): ApiError {
  return problemOf(response.status, response.headers.get('Content-Type'), body, response.headers.get('Retry-After'))
}

export async function request<T>(path: string, options: RequestOptions = {}): Promise<T> {
  const response = await fetchWithToken(path, options)
  const text = await response.text()
  if (!response.ok) throw failure(response, text)
  return (text ? JSON.parse(text) : undefined) as T
}

/** The file name of a Content-Disposition header, as the API writes it (quoted), if any. */
export function filenameOf(disposition: string | null): string | null {
  return /filename="([^"]+)"/i.exec(disposition ?? '')?.[1] ?? null
}

/**
 * One's account as a JSON file to save: its body, and the name the server
 * gives it (null when it gives none).
 */
export async function exportData(): Promise<{ filename: string | null; blob: Blob }> {
  const response = await fetchWithToken('/api/v1/users/profile/export')
  if (!response.ok) throw failure(response, await response.text())
  let blob: Blob
  try {
    blob = await response.blob()
  } catch {
    // The server cuts the body off when it fails part-way.
    throw new ApiError(0, { code: 'interrupted', detail: 'The download was interrupted. Please try again' })
  }
  return { filename: filenameOf(response.headers.get('Content-Disposition')), blob }
}

/** A multipart upload through XMLHttpRequest, for its progress events. */
export function uploadMedia(
  file: File,
  description: string,
  onProgress: (fraction: number) => void,
): Promise<Media> {
  const send = (token: string | null) =>
    new Promise<XMLHttpRequest>((resolve, reject) => {
      const xhr = new XMLHttpRequest()
      xhr.open('POST', '/api/v1/media')
      xhr.setRequestHeader('Accept', 'application/json')
      if (token) xhr.setRequestHeader('Authorization', `Bearer ${token}`)
      xhr.upload.onprogress = (event) => {
        if (event.lengthComputable) onProgress(event.loaded / event.total)
      }
      xhr.onload = () => resolve(xhr)
      xhr.onerror = () => reject(unreachable())
      const form = new FormData()
      if (description) form.set('description', description)
      form.set('file', file)
      xhr.send(form)
    })
  return withToken(true, send).then((xhr) => {
    if (xhr.status >= 200 && xhr.status < 300) return JSON.parse(xhr.responseText) as Media
    throw problemOf(xhr.status, xhr.getResponseHeader('Content-Type'), xhr.responseText, xhr.getResponseHeader('Retry-After'))
  })
}

const COOKIE_MODE = { 'X-Refresh-Cookie': '1' }
const enc = encodeURIComponent
type Cursor = string | null | undefined

export const api = {
  register: (body: { username: string; email: string; password: string }) =>
    request<OwnUser>('/api/v1/users/register', { method: 'POST', body, auth: false }),
  login: (body: { username?: string; email?: string; password: string }) =>
    request<Session>('/api/v1/users/login', { method: 'POST', body, headers: COOKIE_MODE, auth: false }),
  refresh: () =>
    request<Session>('/api/v1/users/token/refresh', { method: 'POST', headers: COOKIE_MODE, auth: false }),
  revoke: () =>
    request<void>('/api/v1/users/token/revoke', { method: 'POST', headers: COOKIE_MODE, auth: false }),

  profile: () => request<OwnUser>('/api/v1/users/profile'),
  updateProfile: (body: ProfileChange) => request<OwnUser>('/api/v1/users/profile', { method: 'PATCH', body }),
  /** Deletes the account for good, confirmed by its password; every session ends. */
  deleteAccount: (password: string) => request<void>('/api/v1/users/profile', { method: 'DELETE', body: { password } }),
  user: (username: string) => request<PublicUser>(`/api/v1/users/${enc(username)}`),
  follow: (username: string, on: boolean) =>
    request<void>(`/api/v1/users/${enc(username)}/follow`, { method: on ? 'POST' : 'DELETE' }),
  follows: (username: string, which: 'followers' | 'following', cursor?: Cursor) =>
    request<Page<FollowEntry>>(`/api/v1/users/${enc(username)}/${which}`, { query: { cursor } }),

  globalFeed: (cursor?: Cursor, limit?: number) => request<Page<Post>>('/api/v1/posts', { query: { cursor, limit } }),
  homeFeed: (cursor?: Cursor, limit?: number) => request<Page<Post>>('/api/v1/feed', { query: { cursor, limit } }),
  userPosts: (username: string, cursor?: Cursor) =>
    request<Page<Post>>(`/api/v1/users/${enc(username)}/posts`, { query: { cursor } }),
  describeMedia: (id: string, description: string) =>
    request<Media>(`/api/v1/media/${enc(id)}`, { method: 'PATCH', body: { description } }),
  post: (id: string) => request<Post>(`/api/v1/posts/${enc(id)}`),
  deletePost: (id: string) => request<void>(`/api/v1/posts/${enc(id)}`, { method: 'DELETE' }),
  like: (id: string, on: boolean) =>
    request<Post>(`/api/v1/posts/${enc(id)}/like`, { method: on ? 'POST' : 'DELETE' }),
  createPost: (body: NewPost, idempotencyKey: string) =>
    request<Post>('/api/v1/posts', { method: 'POST', body, headers: { 'Idempotency-Key': idempotencyKey } }),

  messages: (postId: string, query: { cursor?: Cursor; order?: 'asc' | 'desc'; limit?: number } = {}) =>
    request<Page<Message>>(`/api/v1/posts/${enc(postId)}/messages`, { query }),
  sendMessage: (postId: string, message: string, idempotencyKey: string) =>
    request<Message>(`/api/v1/posts/${enc(postId)}/messages`, {
      method: 'POST',
      body: { message },
      headers: { 'Idempotency-Key': idempotencyKey },
    }),
  deleteMessage: (postId: string, messageId: string) =>
    request<void>(`/api/v1/posts/${enc(postId)}/messages/${enc(messageId)}`, { method: 'DELETE' }),
}

/** A fresh Idempotency-Key (randomUUID needs a secure context; this does not). */
export function newIdempotencyKey(): string {
  if (typeof crypto.randomUUID === 'function') return crypto.randomUUID()
  return Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, '0')).join('')
}

/** `existing` with those of `incoming` it lacks (by id), at the start or the end. */
export function mergeById<T extends { id: string }>(existing: T[], incoming: T[], at: 'start' | 'end'): T[] {
  const seen = new Set(existing.map((item) => item.id))
  const fresh = incoming.filter((item) => !seen.has(item.id) && seen.add(item.id))
  return at === 'start' ? [...fresh, ...existing] : [...existing, ...fresh]
}
