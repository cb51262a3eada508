// The feed on the home page: cursor pages appended without duplicates, and
// the posts announced on the `feed` channel, shown on request.
import { defineStore } from 'pinia'
import { computed, ref } from 'vue'
import { api, mergeById } from '../lib/api'
import type { Page, Post } from '../lib/models'

export type FeedKind = 'home' | 'global'

const sources: Record<FeedKind, (cursor?: string | null) => Promise<Page<Post>>> = {
  home: (cursor) => api.homeFeed(cursor),
  global: (cursor) => api.globalFeed(cursor),
}

export const useFeedStore = defineStore('feed', () => {
  const kind = ref<FeedKind | null>(null)
  const items = ref<Post[]>([])
  const cursor = ref<string | null>(null)
  const done = ref(false)
  const loading = ref(false)
  /** Posts announced live and not shown yet. */
  const announced = ref<string[]>([])
  /** The live channel could not replay what it missed. */
  const stale = ref(false)
  let generation = 0

  const newCount = computed(() => announced.value.length)

  /** Forgets what is loaded (the session or whom one follows changed). */
  function invalidate(): void {
    generation++
    kind.value = null
    items.value = []
    cursor.value = null
    done.value = false
    loading.value = false
    announced.value = []
    stale.value = false
  }

  /** Shows `next`, keeping what is loaded (or loading) when it is the same feed. */
  async function open(next: FeedKind): Promise<void> {
    if (kind.value === next) return
    invalidate()
    kind.value = next
    await loadMore()
  }

  async function loadMore(): Promise<void> {
    if (!kind.value || loading.value || done.value) return
    const started = generation
    loading.value = true
    try {
      const page = await sources[kind.value](cursor.value)
      if (started !== generation) return
      items.value = mergeById(items.value, page.items, 'end')
      cursor.value = page.next_cursor
      done.value = page.next_cursor === null
    } finally {
      if (started === generation) loading.value = false
    }
  }

  function announce(postId: string): void {
    if (items.value.some((post) => post.id === postId) || announced.value.includes(postId)) return
    announced.value.push(postId)
  }

  /** The newest page, its posts not yet shown put first. */
  async function showNew(): Promise<void> {
    if (!kind.value) return
    const started = generation
    const page = await sources[kind.value](null)
    if (started !== generation) return
    items.value = mergeById(items.value, page.items, 'start')
    announced.value = []
    stale.value = false
  }

  function remove(postId: string): void {
    items.value = items.value.filter((post) => post.id !== postId)
  }

  return { kind, items, done, loading, newCount, stale, open, invalidate, loadMore, announce, showNew, remove }
})
