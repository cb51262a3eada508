import { afterEach, describe, expect, it, vi } from 'vitest'
import { header, jsonResponse, problem, stubFetch } from '../test-utils'
import { ApiError, api, describeError, mergeById, parseRetryAfter, request, setAuthHooks } from './api'

afterEach(() => {
  vi.unstubAllGlobals()
  setAuthHooks({ token: () => null, refresh: async () => null })
})

describe('parseRetryAfter', () => {
  it('reads delta-seconds', () => {
    expect(parseRetryAfter('42')).toBe(42)
    expect(parseRetryAfter(' 7 ')).toBe(7)
  })
  it('reads an HTTP date as seconds from now', () => {
    const now = Date.parse('2030-01-01T00:00:00Z')
    expect(parseRetryAfter('Tue, 01 Jan 2030 00:00:30 GMT', now)).toBe(30)
    expect(parseRetryAfter('Mon, 31 Dec 2029 23:00:00 GMT', now)).toBe(0)
  })
  it('is null when absent or unreadable', () => {
    expect(parseRetryAfter(null)).toBeNull()
    expect(parseRetryAfter('soon')).toBeNull()
  })
})

describe('request', () => {
  it('turns a problem document into an ApiError with its detail and field errors', async () => {
    stubFetch(() =>
      jsonResponse(422, {
        type: 'about:blank',
        title: 'Unprocessable',
        status: 422,
        code: 'invalid',
        detail: 'The username is taken',
        errors: [{ field: 'username', message: 'taken' }],
      }),
    )
    const error = await request('/api/v1/users/register', { method: 'POST', body: {} }).catch((e: unknown) => e)
    expect(error).toBeInstanceOf(ApiError)
    expect(error).toMatchObject({ status: 422, code: 'invalid', detail: 'The username is taken' })
    expect((error as ApiError).errors).toEqual([{ field: 'username', message: 'taken' }])
    expect(describeError(error)).toBe('The username is taken.')
  })

  it('says when to try again after a 429', async () => {
    stubFetch(() => problem(429, 'rate_limited', 'Too many requests.', { 'Retry-After': '12' }))
    const error = await api.globalFeed().catch((e: unknown) => e)
    expect((error as ApiError).retryAfter).toBe(12)
    expect(describeError(error)).toBe('Too many requests. Try again in 12 s.')
  })

  it('does not repeat when the detail already says when to retry', () => {
    const error = new ApiError(429, { detail: 'Too many requests; retry in 12 seconds.' }, 12)
    expect(describeError(error)).toBe('Too many requests; retry in 12 seconds.')
  })

  it('falls back to the status when the body is not a problem', async () => {
    stubFetch(() => new Response('<html>', { status: 502, headers: { 'Content-Type': 'text/html' } }))
    const error = (await api.globalFeed().catch((e: unknown) => e)) as ApiError
    expect(error.detail).toBe('The request failed (502).')
  })

  it('reports an unreachable server as a sentence', async () => {
    vi.stubGlobal('fetch', vi.fn(() => Promise.reject(new TypeError('Failed to fetch'))))
    const error = await api.globalFeed().catch((e: unknown) => e)
    expect(describeError(error)).toBe('The server could not be reached. Check your connection.')
  })

  it('sends the token, and on a 401 retries once with a renewed one', async () => {
    const tokens: (string | undefined)[] = []
    stubFetch((_url, init) => {
      tokens.push(header(init, 'Authorization'))
      return tokens.length === 1 ? problem(401, 'unauthorized', 'Expired.') : jsonResponse(200, { items: [], next_cursor: null })
    })
    const refresh = vi.fn(async () => 'new')
    setAuthHooks({ token: () => 'old', refresh })
    await expect(api.homeFeed()).resolves.toEqual({ items: [], next_cursor: null })
    expect(tokens).toEqual(['Bearer old', 'Bearer new'])
    expect(refresh).toHaveBeenCalledWith('old')
  })

  it('gives up with the 401 when the session cannot be renewed', async () => {
    const fetch = stubFetch(() => problem(401, 'unauthorized', 'Expired.'))
    setAuthHooks({ token: () => 'old', refresh: async () => null })
    await expect(api.homeFeed()).rejects.toMatchObject({ status: 401 })
    expect(fetch).toHaveBeenCalledTimes(1)
  })

  it('asks for the refresh token as a cookie on the session endpoints, without a token', async () => {
    const fetch = stubFetch(() => jsonResponse(204))
    setAuthHooks({ token: () => 'old', refresh: async () => 'new' })
    await api.revoke()
    const [url, init] = fetch.mock.calls[0]!
    expect(url).toBe('/api/v1/users/token/revoke')
    expect(header(init, 'X-Refresh-Cookie')).toBe('1')
    expect(header(init, 'Authorization')).toBeUndefined()
    expect(init?.credentials).toBe('same-origin')
    expect(init?.body).toBeUndefined()
  })

  it('builds the query from the defined values only', async () => {
    const fetch = stubFetch(() => jsonResponse(200, { items: [], next_cursor: null }))
    await api.globalFeed('abc/=', undefined)
    await api.messages('p1', { order: 'desc' })
    expect(fetch.mock.calls.map((call) => call[0])).toEqual([
      '/api/v1/posts?cursor=abc%2F%3D',
      '/api/v1/posts/p1/messages?order=desc',
    ])
  })
})

describe('mergeById', () => {
  const a = { id: 'a' }
  const b = { id: 'b' }
  const c = { id: 'c' }
  it('appends or prepends only what is new, once', () => {
    expect(mergeById([a, b], [b, c, c], 'end')).toEqual([a, b, c])
    expect(mergeById([b], [a, b], 'start')).toEqual([a, b])
  })
})
