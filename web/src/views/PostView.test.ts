import { flushPromises, mount, type VueWrapper } from '@vue/test-utils'
import { createPinia, setActivePinia } from 'pinia'
import { afterEach, expect, it, vi } from 'vitest'
import { createMemoryHistory, createRouter } from 'vue-router'
import { setAuthHooks } from '../lib/api'
import type { LiveEvent } from '../lib/live'
import { useAuthStore } from '../stores/auth'
import { jsonResponse, stubFetch } from '../test-utils'
import PostView from './PostView.vue'

// The page's live events, delivered by the test instead of a socket.
const live = vi.hoisted(() => ({ handlers: [] as ((event: LiveEvent) => void)[] }))
vi.mock('../stores/live', () => ({
  useChannel: (_channel: unknown, handler: (event: LiveEvent) => void) => live.handlers.push(handler),
}))

const POST_ID = '01900000-0000-7000-8000-000000000001'
const ann = { id: 'u-ann', username: 'ann', display_name: 'Ann' }
const post = { id: POST_ID, author: ann, caption: 'Two shapes', media: [], like_count: 0, message_count: 0, created_at: '' }

let wrapper: VueWrapper | undefined

afterEach(() => {
  wrapper?.unmount()
  wrapper = undefined
  live.handlers = []
  vi.unstubAllGlobals()
  setAuthHooks({ token: () => null, refresh: async () => null })
})

it('draws a message announced while the first page of messages was still on its way', async () => {
  let answerFirstPage: (response: Response) => void = () => {}
  stubFetch((url) => {
    if (url.startsWith(`/api/v1/posts/${POST_ID}/messages`)) {
      return new Promise<Response>((resolve) => (answerFirstPage = resolve))
    }
    return jsonResponse(200, post)
  })
  const pinia = createPinia()
  setActivePinia(pinia)
  const auth = useAuthStore()
  auth.accessToken = 't1'
  setAuthHooks({ token: () => auth.accessToken, refresh: async () => null })
  const router = createRouter({ history: createMemoryHistory(), routes: [{ path: '/:p(.*)', component: { render: () => null } }] })
  wrapper = mount(PostView, { props: { id: POST_ID }, global: { plugins: [pinia, router] } })
  await flushPromises()

  // The message is sent after the page was asked for: the page will not hold it.
  const [onEvent] = live.handlers
  onEvent!({
    channel: `post:${POST_ID}`,
    id: '1-0',
    type: 'message.created',
    data: {
      message_id: '01900000-0000-7000-8000-0000000000aa',
      post_id: POST_ID,
      sender_id: ann.id,
      sender_username: ann.username,
      sender_display_name: ann.display_name,
      text: 'hello bob',
      created_at: '2026-12-06T03:00:00Z',
      post_author_id: ann.id,
    },
  })
  answerFirstPage(jsonResponse(200, { items: [], next_cursor: null }))
  await flushPromises()

  const shown = wrapper.findAll('[data-testid="message"]').map((m) => m.text())
  expect(shown).toHaveLength(1)
  expect(shown[0]).toContain('hello bob')
  expect(wrapper.text()).toContain('Messages (1)')
})
