// Notifications from the `user` channel (messages and likes on one's posts),
// kept for the session.
import { defineStore } from 'pinia'
import { computed, ref } from 'vue'
import type { LiveEvent } from '../lib/live'
import type { MessageCreatedData, PostLikedData } from '../lib/models'

export interface Notification {
  id: string
  postId: string
  text: string
  at: string
  read: boolean
}

const KEPT = 100

export const useNotificationStore = defineStore('notifications', () => {
  const items = ref<Notification[]>([])
  const unread = computed(() => items.value.filter((item) => !item.read).length)

  /** Takes an event of the `user` channel; `me` is the signed-in user's id. */
  function receive(event: LiveEvent, me: string | undefined): void {
    const notification = describe(event, me)
    if (!notification) return
    items.value = [notification, ...items.value].slice(0, KEPT)
  }

  function markAllRead(): void {
    for (const item of items.value) item.read = true
  }

  function clear(): void {
    items.value = []
  }

  return { items, unread, receive, markAllRead, clear }
})

function describe(event: LiveEvent, me: string | undefined): Notification | null {
  const at = new Date().toISOString()
  if (event.type === 'message.created') {
    const data = event.data as unknown as MessageCreatedData
    if (data.sender_id === me) return null
    const text = data.text ? `New message on your post: “${data.text}”` : 'New message on your post'
    return { id: event.id, postId: data.post_id, text, at: data.created_at ?? at, read: false }
  }
  if (event.type === 'post.liked') {
    const data = event.data as unknown as PostLikedData
    if (data.user_id === me) return null
    const count = Number(data.like_count ?? 0)
    const text = `Someone liked your post (${count} ${count === 1 ? 'like' : 'likes'})`
    return { id: event.id, postId: data.post_id, text, at, read: false }
  }
  return null
}
