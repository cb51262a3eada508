// Loads the next page while a sentinel element near the end of a list is in
// (or close to) view, again and again until it leaves view or nothing is left.
import { onBeforeUnmount, watch, type Ref } from 'vue'

export function useInfiniteScroll(
  sentinel: Ref<HTMLElement | null>,
  loadMore: () => Promise<void>,
  hasMore: () => boolean,
): void {
  let visible = false
  let running = false

  async function pump(): Promise<void> {
    if (running) return
    running = true
    try {
      while (visible && hasMore()) await loadMore()
    } catch {
      // The caller reports its own failures; stop until the sentinel shows again.
    } finally {
      running = false
    }
  }

  const observer =
    typeof IntersectionObserver === 'undefined'
      ? null
      : new IntersectionObserver(
          (entries) => {
            visible = entries.some((entry) => entry.isIntersecting)
            void pump()
          },
          { rootMargin: '800px 0px' },
        )

  watch(sentinel, (element, previous) => {
    if (previous) observer?.unobserve(previous)
    if (element) observer?.observe(element)
  })
  onBeforeUnmount(() => observer?.disconnect())
}
