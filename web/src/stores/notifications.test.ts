import { createPinia, setActivePinia } from 'pinia'
import { beforeEach, describe, expect, it } from 'vitest'
import { useNotificationStore } from './notifications'

beforeEach(() => setActivePinia(createPinia()))

describe('notifications store', () => {
  it('turns messages and likes of others into unread notifications, newest first', () => {
    const store = useNotificationStore()
    store.receive(
      { channel: 'user', id: '1-0', type: 'message.created', data: { message_id: 'm', post_id: 'p1', sender_id: 'bob', text: 'Hi', post_author_id: 'me' } },
      'me',
    )
    store.receive({ channel: 'user', id: '2-0', type: 'post.liked', data: { post_id: 'p2', author_id: 'me', user_id: 'bob', like_count: '1' } }, 'me')
    expect(store.items.map((n) => [n.postId, n.text])).toEqual([
      ['p2', 'Someone liked your post (1 like)'],
      ['p1', 'New message on your post: “Hi”'],
    ])
    expect(store.unread).toBe(2)
    store.markAllRead()
    expect(store.unread).toBe(0)
  })

  it('skips what one did oneself, and deletions', () => {
    const store = useNotificationStore()
    store.receive({ channel: 'user', id: '1-0', type: 'post.liked', data: { post_id: 'p', author_id: 'me', user_id: 'me' } }, 'me')
    store.receive({ channel: 'user', id: '2-0', type: 'message.deleted', data: { message_id: 'm', post_id: 'p', sender_id: 'bob' } }, 'me')
    expect(store.items).toEqual([])
  })
})
