import { createPinia, setActivePinia } from 'pinia'
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import type { Post } from '../lib/models'
import { jsonResponse, stubFetch } from '../test-utils'
import { useFeedStore } from './feed'

const post = (id: string): Post => ({
  id,
  author: { id: 'u1', username: 'ada', display_name: 'Ada' },
  caption: '',
  media: [],
  like_count: 0,
  message_count: 0,
  created_at: '2030-01-01T00:00:00Z',
})
const page = (ids: string[], next: string | null) => jsonResponse(200, { items: ids.map(post), next_cursor: next })

beforeEach(() => setActivePinia(createPinia()))
afterEach(() => vi.unstubAllGlobals())

describe('feed store', () => {
  it('appends cursor pages without duplicates until the last', async () => {
    const fetch = stubFetch((url) =>
      url.includes('cursor=c1') ? page(['p3', 'p4'], 'c2') : url.includes('cursor=c2') ? page(['p4', 'p5'], null) : page(['p1', 'p2', 'p3'], 'c1'),
    )
    const feed = useFeedStore()
    await feed.open('global')
    await feed.loadMore()
    await feed.loadMore()
    expect(feed.items.map((p) => p.id)).toEqual(['p1', 'p2', 'p3', 'p4', 'p5'])
    expect(feed.done).toBe(true)
    await feed.loadMore()
    expect(fetch).toHaveBeenCalledTimes(3)
    expect(fetch.mock.calls.map((call) => call[0])).toEqual(['/api/v1/posts', '/api/v1/posts?cursor=c1', '/api/v1/posts?cursor=c2'])
  })

  it('loads one page at a time', async () => {
    const fetch = stubFetch(() => page(['p1'], 'c1'))
    const feed = useFeedStore()
    await feed.open('home')
    await Promise.all([feed.loadMore(), feed.loadMore()])
    expect(fetch).toHaveBeenCalledTimes(2)
    expect(fetch.mock.calls[0]![0]).toBe('/api/v1/feed')
  })

  it('counts announced posts once, and puts them first when shown', async () => {
    let newest = ['p1', 'p2']
    stubFetch(() => page(newest, 'c1'))
    const feed = useFeedStore()
    await feed.open('home')
    feed.announce('p0')
    feed.announce('p0')
    feed.announce('p1') // Already shown.
    feed.announce('q')
    expect(feed.newCount).toBe(2)
    newest = ['q', 'p0', 'p1']
    await feed.showNew()
    expect(feed.items.map((p) => p.id)).toEqual(['q', 'p0', 'p1', 'p2'])
    expect(feed.newCount).toBe(0)
  })

  it('keeps a loaded feed when reopened, and starts over for another', async () => {
    const fetch = stubFetch((url) => page(url.startsWith('/api/v1/feed') ? ['h1'] : ['g1'], null))
    const feed = useFeedStore()
    await feed.open('home')
    await feed.open('home')
    expect(fetch).toHaveBeenCalledTimes(1)
    await feed.open('global')
    expect(feed.items.map((p) => p.id)).toEqual(['g1'])
  })

  it('ignores a page that answers after the feed was switched', async () => {
    let release: (r: Response) => void = () => {}
    stubFetch((url) => (url.startsWith('/api/v1/feed') ? new Promise<Response>((resolve) => (release = resolve)) : page(['g1'], null)))
    const feed = useFeedStore()
    const slow = feed.open('home')
    await feed.open('global')
    release(page(['h1'], null))
    await slow
    expect(feed.kind).toBe('global')
    expect(feed.items.map((p) => p.id)).toEqual(['g1'])
  })
})
