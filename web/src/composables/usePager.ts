// A list read in cursor pages: items appended without duplicates.
import { ref, shallowRef, type Ref } from 'vue'
import { mergeById } from '../lib/api'
import type { Page } from '../lib/models'

export function usePager<T extends { id: string }>(fetchPage: (cursor: string | null) => Promise<Page<T>>) {
  const items = ref([]) as Ref<T[]>
  const loading = ref(false)
  const done = ref(false)
  const error = shallowRef<unknown>(null)
  let cursor: string | null = null
  let generation = 0

  async function more(): Promise<void> {
    if (loading.value || done.value) return
    const started = generation
    loading.value = true
    error.value = null
    try {
      const page = await fetchPage(cursor)
      if (started !== generation) return
      items.value = mergeById(items.value, page.items, 'end')
      cursor = page.next_cursor
      done.value = cursor === null
    } catch (failure) {
      if (started === generation) error.value = failure
      throw failure
    } finally {
      if (started === generation) loading.value = false
    }
  }

  /** From the first page again. */
  function reload(): Promise<void> {
    generation++
    items.value = []
    cursor = null
    done.value = false
    loading.value = false
    return more()
  }

  return { items, loading, done, error, more, reload }
}
