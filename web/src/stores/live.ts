// The tab's live connection, following the session: connects once signed in,
// reconnects at once when the token is renewed or the network comes back.
import { defineStore } from 'pinia'
import { onScopeDispose, ref, watch, type WatchSource } from 'vue'
import { LiveClient, type LiveEvent, type LiveState } from '../lib/live'
import { useAuthStore } from './auth'

function socketUrl(): string {
  return `${location.protocol === 'https:' ? 'wss:' : 'ws:'}//${location.host}/ws`
}

export const useLiveStore = defineStore('live', () => {
  const auth = useAuthStore()
  const state = ref<LiveState>('closed')
  const client = new LiveClient({
    url: socketUrl(),
    token: () => auth.accessToken,
    onState: (next) => (state.value = next),
  })

  watch(
    () => auth.accessToken,
    (token, previous) => {
      if (!token) client.disconnect()
      else if (!previous) client.connect()
      else client.reconnectNow()
    },
    { immediate: true },
  )
  window.addEventListener('online', () => client.reconnectNow())

  function subscribe(channel: string, handler: (event: LiveEvent) => void, refetch?: () => void) {
    return client.subscribe(channel, handler, refetch)
  }
  return { state, subscribe }
})

/**
 * Watches a channel for as long as the calling component (or effect scope)
 * lives; a null channel watches nothing.
 */
export function useChannel(
  channel: WatchSource<string | null>,
  handler: (event: LiveEvent) => void,
  refetch?: () => void,
): void {
  const live = useLiveStore()
  let stop: (() => void) | undefined
  watch(
    channel,
    (name) => {
      stop?.()
      stop = name ? live.subscribe(name, handler, refetch) : undefined
    },
    { immediate: true },
  )
  onScopeDispose(() => stop?.())
}
