import { flushPromises, mount, type VueWrapper } from '@vue/test-utils'
import { createPinia, setActivePinia } from 'pinia'
import { afterEach, describe, expect, it, vi } from 'vitest'
import { nextTick } from 'vue'
import { createMemoryHistory, createRouter } from 'vue-router'
import { setAuthHooks } from '../lib/api'
import { useAuthStore } from '../stores/auth'
import { useToastStore } from '../stores/toasts'
import { header, jsonResponse, problem, stubFetch } from '../test-utils'
import SettingsView from './SettingsView.vue'

const user = { id: 'u1', username: 'ada', display_name: 'Ada', bio: '', follower_count: 0, following_count: 0, created_at: '', email: 'a@x' }
const archive = '{"profile":{"username":"ada"}}'

let wrapper: VueWrapper | undefined

afterEach(() => {
  wrapper?.unmount()
  wrapper = undefined
  vi.unstubAllGlobals()
  setAuthHooks({ token: () => null, refresh: async () => null })
})

/** The page for a signed-in Ada, on /settings. */
async function open() {
  const pinia = createPinia()
  setActivePinia(pinia)
  const auth = useAuthStore()
  auth.accessToken = 't1'
  auth.user = { ...user }
  setAuthHooks({ token: () => auth.accessToken, refresh: async () => null })
  const blank = { render: () => null }
  const router = createRouter({
    history: createMemoryHistory(),
    routes: [
      { path: '/', name: 'home', component: blank },
      { path: '/settings', name: 'settings', component: blank },
    ],
  })
  await router.push('/settings')
  wrapper = mount(SettingsView, { global: { plugins: [pinia, router] } })
  return { page: wrapper, auth, router, toasts: useToastStore() }
}

const button = (page: VueWrapper, text: string) => {
  const found = page.findAll('button').find((b) => b.text() === text)
  if (!found) throw new Error(`No button “${text}”`)
  return found
}

/** What was handed to the browser as a download: the object URL's blob, and the link's name. */
function catchDownloads() {
  const blobs: Blob[] = []
  const links: { href: string; download: string }[] = []
  vi.spyOn(URL, 'createObjectURL').mockImplementation((blob) => {
    blobs.push(blob as Blob)
    return 'blob:archive'
  })
  vi.spyOn(URL, 'revokeObjectURL').mockImplementation(() => {})
  vi.spyOn(HTMLAnchorElement.prototype, 'click').mockImplementation(function (this: HTMLAnchorElement) {
    links.push({ href: this.getAttribute('href') ?? '', download: this.getAttribute('download') ?? '' })
  })
  return { blobs, links }
}

describe('SettingsView: download your data', () => {
  it('downloads the archive under the name the server gives, busy meanwhile', async () => {
    let answer = (_response: Response) => {}
    const fetch = stubFetch(() => new Promise<Response>((resolve) => (answer = resolve)))
    const { blobs, links } = catchDownloads()
    const { page } = await open()

    await button(page, 'Download your data').trigger('click')
    const busy = button(page, 'Preparing your download…')
    expect(busy.attributes('disabled')).toBeDefined()

    answer(
      new Response(archive, {
        status: 200,
        headers: { 'Content-Type': 'application/json', 'Content-Disposition': 'attachment; filename="ada-20261206.json"' },
      }),
    )
    await flushPromises()
    const [url, init] = fetch.mock.calls[0]!
    expect(url).toBe('/api/v1/users/profile/export')
    expect(header(init, 'Authorization')).toBe('Bearer t1')
    expect(links).toEqual([{ href: 'blob:archive', download: 'ada-20261206.json' }])
    expect(await blobs[0]!.text()).toBe(archive)
    expect(button(page, 'Download your data').attributes('disabled')).toBeUndefined()
    expect(page.find('[role="alert"]').exists()).toBe(false)
  })

  it('falls back to <username>-export.json when the server names no file', async () => {
    stubFetch(() => new Response(archive, { status: 200, headers: { 'Content-Type': 'application/json' } }))
    const { links } = catchDownloads()
    const { page } = await open()
    await button(page, 'Download your data').trigger('click')
    await flushPromises()
    expect(links.map((link) => link.download)).toEqual(['ada-export.json'])
  })

  it('says why a download failed, and when to try again', async () => {
    stubFetch(() => problem(429, 'rate_limited', 'Too many exports', { 'Retry-After': '600' }))
    const { links } = catchDownloads()
    const { page } = await open()
    await button(page, 'Download your data').trigger('click')
    await flushPromises()
    expect(page.find('section[aria-labelledby="export-title"] [role="alert"]').text()).toBe('Too many exports. Try again in 600 s.')
    expect(links).toEqual([])
    expect(button(page, 'Download your data').attributes('disabled')).toBeUndefined()
  })
})

describe('SettingsView: delete your account', () => {
  const zone = 'section[aria-labelledby="delete-title"]'

  it('asks for the password before the button can be used', async () => {
    stubFetch(() => jsonResponse(204))
    const { page } = await open()
    const input = page.find<HTMLInputElement>(`${zone} input#delete-password`)
    expect(page.find(`${zone} label[for="delete-password"]`).exists()).toBe(true)
    expect(input.attributes('type')).toBe('password')
    expect(input.attributes('autocomplete')).toBe('current-password')
    const submit = button(page, 'Delete my account permanently')
    expect(submit.attributes('disabled')).toBeDefined()
    await input.setValue('correct horse battery')
    expect(submit.attributes('disabled')).toBeUndefined()
  })

  it('sends the password, then forgets the session and goes home', async () => {
    const fetch = stubFetch(() => jsonResponse(204))
    const { page, auth, router, toasts } = await open()
    await page.find(`${zone} input#delete-password`).setValue('correct horse battery')
    await page.find(`${zone} form`).trigger('submit')
    await flushPromises()

    expect(fetch).toHaveBeenCalledTimes(1) // Not the revocation: the sessions are gone with the account.
    const [url, init] = fetch.mock.calls[0]!
    expect(url).toBe('/api/v1/users/profile')
    expect(init?.method).toBe('DELETE')
    expect(header(init, 'Authorization')).toBe('Bearer t1')
    expect(JSON.parse(String(init?.body))).toEqual({ password: 'correct horse battery' })
    expect(auth.signedIn).toBe(false)
    expect(auth.user).toBeNull()
    expect(auth.endedReason).toBeNull()
    expect(toasts.toasts.map((toast) => [toast.kind, toast.text])).toEqual([['info', 'Your account was deleted.']])
    expect(router.currentRoute.value.path).toBe('/')
  })

  it('says so when the password is wrong, and stays signed in', async () => {
    stubFetch(() => problem(403, 'wrong_password', 'The current password is wrong.'))
    const { page, auth, router, toasts } = await open()
    await page.find(`${zone} input#delete-password`).setValue('nope')
    await page.find(`${zone} form`).trigger('submit')
    await flushPromises()

    expect(page.find(`${zone} [role="alert"]`).text()).toBe('The current password is wrong.')
    expect(auth.signedIn).toBe(true)
    expect(toasts.toasts).toEqual([])
    expect(router.currentRoute.value.path).toBe('/settings')
    expect(button(page, 'Delete my account permanently').attributes('disabled')).toBeUndefined()
  })

  it('is busy while the deletion runs', async () => {
    let answer = (_response: Response) => {}
    stubFetch(() => new Promise<Response>((resolve) => (answer = resolve)))
    const { page } = await open()
    await page.find(`${zone} input#delete-password`).setValue('correct horse battery')
    await page.find(`${zone} form`).trigger('submit')
    await nextTick()
    expect(button(page, 'Delete my account permanently').attributes('disabled')).toBeDefined()
    answer(jsonResponse(204))
    await flushPromises()
  })
})
