import { createPinia, setActivePinia } from 'pinia'
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { api } from '../lib/api'
import { header, jsonResponse, problem, stubFetch } from '../test-utils'
import { useAuthStore } from './auth'

const user = { id: 'u1', username: 'ada', display_name: 'Ada', bio: '', follower_count: 0, following_count: 0, created_at: '', email: 'a@x' }
const session = (token: string, expiresIn = 900) => ({
  token_type: 'Bearer',
  access_token: token,
  expires_in: expiresIn,
  refresh_expires_in: 2_592_000,
  user_id: 'u1',
})

beforeEach(() => {
  setActivePinia(createPinia())
  vi.useFakeTimers()
})
afterEach(() => {
  useAuthStore().end(null)
  vi.useRealTimers()
  vi.unstubAllGlobals()
})

describe('auth store', () => {
  it('starts signed in when the refresh cookie still works', async () => {
    const fetch = stubFetch((url) => (url.endsWith('/token/refresh') ? jsonResponse(200, session('t1')) : jsonResponse(200, user)))
    const auth = useAuthStore()
    await auth.start()
    expect(auth.ready).toBe(true)
    expect(auth.signedIn).toBe(true)
    expect(auth.user?.username).toBe('ada')
    const [refreshUrl, refreshInit] = fetch.mock.calls[0]!
    expect(refreshUrl).toBe('/api/v1/users/token/refresh')
    expect(refreshInit?.method).toBe('POST')
    expect(header(refreshInit, 'X-Refresh-Cookie')).toBe('1')
    expect(refreshInit?.credentials).toBe('same-origin')
    expect(header(fetch.mock.calls[1]![1], 'Authorization')).toBe('Bearer t1')
  })

  it('starts signed out on a 401, quietly', async () => {
    const fetch = stubFetch(() => problem(401, 'invalid_token', 'No session.'))
    const auth = useAuthStore()
    await auth.start()
    expect(auth.ready).toBe(true)
    expect(auth.signedIn).toBe(false)
    expect(auth.endedReason).toBeNull()
    expect(fetch).toHaveBeenCalledTimes(1)
  })

  it('refreshes once for concurrent 401s, then retries each call once', async () => {
    let refreshes = 0
    const seen: string[] = []
    stubFetch((url, init) => {
      if (url.endsWith('/token/refresh')) {
        return refreshes++ === 0 ? problem(401, 'invalid_token', 'No session.') : jsonResponse(200, session('t2'))
      }
      if (url.endsWith('/users/login')) return jsonResponse(200, session('t1'))
      if (url.endsWith('/users/profile')) return jsonResponse(200, user)
      const auth = header(init, 'Authorization')!
      seen.push(auth)
      return auth === 'Bearer t1' ? problem(401, 'invalid_token', 'Expired.') : jsonResponse(200, { items: [], next_cursor: null })
    })
    const auth = useAuthStore()
    await auth.start() // Signed out: the first refresh is refused.
    await auth.login('ada', 'correct horse battery')
    const results = await Promise.all([api.homeFeed(), api.globalFeed(), api.userPosts('ada')])
    expect(results).toHaveLength(3)
    expect(refreshes).toBe(2)
    expect(seen.filter((s) => s === 'Bearer t1')).toHaveLength(3)
    expect(seen.filter((s) => s === 'Bearer t2')).toHaveLength(3)
    expect(auth.accessToken).toBe('t2')
  })

  it('renews ahead of expiry, and signs out saying why when the renewal is refused', async () => {
    let refreshAnswer = () => jsonResponse(200, session('t2'))
    const fetch = stubFetch((url) => {
      if (url.endsWith('/users/login')) return jsonResponse(200, session('t1', 900))
      if (url.endsWith('/token/refresh')) return refreshAnswer()
      return jsonResponse(200, user)
    })
    const auth = useAuthStore()
    await auth.login('ada@example.com', 'correct horse battery')
    expect(JSON.parse(String(fetch.mock.calls[0]![1]?.body))).toEqual({ email: 'ada@example.com', password: 'correct horse battery' })

    await vi.advanceTimersByTimeAsync(839_000)
    expect(auth.accessToken).toBe('t1')
    await vi.advanceTimersByTimeAsync(1_000)
    expect(auth.accessToken).toBe('t2')

    refreshAnswer = () => problem(401, 'invalid_token', 'The session has ended.')
    await vi.advanceTimersByTimeAsync(840_000)
    expect(auth.signedIn).toBe(false)
    expect(auth.user).toBeNull()
    expect(auth.endedReason).toMatch(/sign in again/)
  })

  it('retries a renewal that failed for want of a network while the token is valid', async () => {
    let down = true
    stubFetch((url) => {
      if (url.endsWith('/users/login')) return jsonResponse(200, session('t1', 900))
      if (url.endsWith('/token/refresh')) return down ? Promise.reject(new TypeError('offline')) : jsonResponse(200, session('t2'))
      return jsonResponse(200, user)
    })
    const auth = useAuthStore()
    await auth.login('ada', 'correct horse battery')
    await vi.advanceTimersByTimeAsync(840_000)
    expect(auth.accessToken).toBe('t1')
    down = false
    await vi.advanceTimersByTimeAsync(10_000)
    expect(auth.accessToken).toBe('t2')
  })

  it('signs out by revoking the cookie and forgetting the token', async () => {
    const fetch = stubFetch((url) => (url.endsWith('/users/login') ? jsonResponse(200, session('t1')) : url.endsWith('/revoke') ? jsonResponse(204) : jsonResponse(200, user)))
    const auth = useAuthStore()
    await auth.login('ada', 'correct horse battery')
    await auth.logout()
    expect(fetch.mock.calls.at(-1)![0]).toBe('/api/v1/users/token/revoke')
    expect(auth.signedIn).toBe(false)
    expect(auth.endedReason).toBeNull()
  })
})
