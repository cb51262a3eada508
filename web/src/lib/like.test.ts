import { afterEach, describe, expect, it, vi } from 'vitest'
import { reactive } from 'vue'
import { jsonResponse, problem, stubFetch } from '../test-utils'
import { toggleLike } from './like'
import type { Post } from './models'

const make = (liked: boolean, count: number) =>
  reactive<Post>({
    id: 'p1',
    author: { id: 'u2', username: 'bob', display_name: 'Bob' },
    caption: '',
    media: [],
    like_count: count,
    message_count: 0,
    created_at: '2030-01-01T00:00:00Z',
    liked_by_me: liked,
  })

afterEach(() => vi.unstubAllGlobals())

describe('toggleLike', () => {
  it('flips at once, then takes the server’s count', async () => {
    let answer: (r: Response) => void = () => {}
    const fetch = stubFetch(() => new Promise<Response>((resolve) => (answer = resolve)))
    const post = make(false, 3)
    const pending = toggleLike(post)
    expect(post.liked_by_me).toBe(true)
    expect(post.like_count).toBe(4)
    expect(fetch.mock.calls[0]![1]?.method).toBe('POST')
    answer(jsonResponse(200, { ...post, like_count: 7, liked_by_me: true }))
    await pending
    expect(post.like_count).toBe(7)
  })

  it('unlikes with DELETE', async () => {
    const fetch = stubFetch(() => jsonResponse(200, { ...make(false, 2) }))
    const post = make(true, 3)
    await toggleLike(post)
    expect(fetch.mock.calls[0]![0]).toBe('/api/v1/posts/p1/like')
    expect(fetch.mock.calls[0]![1]?.method).toBe('DELETE')
    expect(post).toMatchObject({ liked_by_me: false, like_count: 2 })
  })

  it('rolls back when the server refuses, and passes the problem on', async () => {
    stubFetch(() => problem(429, 'rate_limited', 'Too many likes.', { 'Retry-After': '30' }))
    const post = make(false, 3)
    await expect(toggleLike(post)).rejects.toMatchObject({ status: 429, retryAfter: 30 })
    expect(post).toMatchObject({ liked_by_me: false, like_count: 3 })
  })

  it('ignores clicks while a like is on its way', async () => {
    let answer: (r: Response) => void = () => {}
    const fetch = stubFetch(() => new Promise<Response>((resolve) => (answer = resolve)))
    const post = make(false, 0)
    const first = toggleLike(post)
    await toggleLike(post)
    expect(post).toMatchObject({ liked_by_me: true, like_count: 1 })
    answer(jsonResponse(200, { ...post }))
    await first
    expect(fetch).toHaveBeenCalledTimes(1)
  })
})
