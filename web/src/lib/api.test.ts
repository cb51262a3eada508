import { afterEach, describe, expect, it, vi } from 'vitest'
import { header, jsonResponse, problem, stubFetch } from '../test-utils'
import { ApiError, api, describeError, exportData, filenameOf, mergeById, parseRetryAfter, request, setAuthHooks } from './api'

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

describe('filenameOf', () => {
  it('reads the quoted file name', () => {
    expect(filenameOf('attachment; filename="ada-20261206.json"')).toBe('ada-20261206.json')
  })
  it('is null when there is none', () => {
    expect(filenameOf(null)).toBeNull()
    expect(filenameOf('attachment')).toBeNull()
    expect(filenameOf('attachment; filename=""')).toBeNull()
  })
})

describe('exportData', () => {
  const archive = '{"profile":{"username":"ada"},"posts":[]}'
  const saved = (headers: Record<string, string> = {}) =>
    new Response(archive, { status: 200, headers: { 'Content-Type': 'application/json', ...headers } })

  it('fetches the archive with the token, as a blob named by Content-Disposition', async () => {
    const fetch = stubFetch(() => saved({ 'Content-Disposition': 'attachment; filename="ada-20261206.json"' }))
    setAuthHooks({ token: () => 't1', refresh: async () => null })
    const { filename, blob } = await exportData()
    expect(filename).toBe('ada-20261206.json')
    expect(await blob.text()).toBe(archive)
    const [url, init] = fetch.mock.calls[0]!
    expect(url).toBe('/api/v1/users/profile/export')
    expect(init?.method).toBe('GET')
    expect(header(init, 'Authorization')).toBe('Bearer t1')
    expect(init?.credentials).toBe('same-origin')
  })

  it('has no name when the server gives none', async () => {
    stubFetch(() => saved())
    await expect(exportData()).resolves.toMatchObject({ filename: null })
  })

  it('retries once with a renewed token on a 401', async () => {
    const tokens: (string | undefined)[] = []
    stubFetch((_url, init) => {
      tokens.push(header(init, 'Authorization'))
      return tokens.length === 1 ? problem(401, 'unauthorized', 'Expired.') : saved()
    })
    setAuthHooks({ token: () => 'old', refresh: async () => 'new' })
    await exportData()
    expect(tokens).toEqual(['Bearer old', 'Bearer new'])
  })

  it('turns a refusal into an ApiError, with when to retry', async () => {
    stubFetch(() => problem(429, 'rate_limited', 'Too many exports', { 'Retry-After': '600' }))
    const limited = await exportData().catch((e: unknown) => e)
    expect(limited).toMatchObject({ status: 429, code: 'rate_limited', retryAfter: 600 })
    expect(describeError(limited)).toBe('Too many exports. Try again in 600 s.')

    stubFetch(() => problem(503, 'unavailable', 'The export is unavailable; try again later.'))
    expect(describeError(await exportData().catch((e: unknown) => e))).toBe('The export is unavailable; try again later.')
  })

  it('reports a body cut off part-way as an interrupted download', async () => {
    const cut = {
      ok: true,
      status: 200,
      headers: new Headers({ 'Content-Type': 'application/json' }),
      blob: () => Promise.reject(new TypeError('terminated')),
    }
    stubFetch(() => cut as unknown as Response)
    const error = await exportData().catch((e: unknown) => e)
    expect(error).toMatchObject({ code: 'interrupted' })
    expect(describeError(error)).toBe('The download was interrupted. Please try again.')
  })
})

describe('deleteAccount', () => {
  it('sends the password with the token in a DELETE', async () => {
    const fetch = stubFetch(() => jsonResponse(204))
    setAuthHooks({ token: () => 't1', refresh: async () => null })
    await expect(api.deleteAccount('correct horse battery')).resolves.toBeUndefined()
    const [url, init] = fetch.mock.calls[0]!
    expect(url).toBe('/api/v1/users/profile')
    expect(init?.method).toBe('DELETE')
    expect(header(init, 'Authorization')).toBe('Bearer t1')
    expect(header(init, 'Content-Type')).toBe('application/json')
    expect(JSON.parse(String(init?.body))).toEqual({ password: 'correct horse battery' })
  })

  it('refuses a wrong password with its problem', async () => {
    stubFetch(() => problem(403, 'wrong_password', 'The current password is wrong.'))
    await expect(api.deleteAccount('nope')).rejects.toMatchObject({ status: 403, code: 'wrong_password' })
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
