// The session: the access token lives here, in memory only; the refresh token
// is an HttpOnly cookie the browser sends to /api/v1/users/token/*.
import { defineStore } from 'pinia'
import { ApiError, api, setAuthHooks } from '../lib/api'
import type { OwnUser, Session } from '../lib/models'

/** Renew this long before the access token runs out. */
const RENEW_AHEAD_MS = 60_000
/** After a refresh that failed for another reason than a refusal. */
const RETRY_MS = 10_000

/** Refresh tokens are single use: tabs must not spend the same cookie twice. */
function acrossTabs<T>(task: () => Promise<T>): Promise<T> {
  const locks = typeof navigator !== 'undefined' ? navigator.locks : undefined
  // request() resolves with what the callback's promise resolves with.
  return locks ? locks.request('social-fleet-refresh', task).then((result) => result) : task()
}

export const useAuthStore = defineStore('auth', {
  state: () => ({
    accessToken: null as string | null,
    expiresAt: 0,
    user: null as OwnUser | null,
    /** The start-up refresh has answered. */
    ready: false,
    /** Why the session ended on its own, to say on the sign-in page. */
    endedReason: null as string | null,
  }),
  getters: {
    signedIn: (state) => state.accessToken !== null,
  },
  actions: {
    /** On app start: one refresh says whether a session is there. */
    async start(): Promise<void> {
      setAuthHooks({ token: () => this.accessToken, refresh: (stale) => this.renew(stale) })
      try {
        if (await this.refresh()) await this.loadUser()
      } finally {
        this.ready = true
      }
    },

    async login(login: string, password: string): Promise<void> {
      const body = login.includes('@') ? { email: login, password } : { username: login, password }
      this.adopt(await api.login(body))
      this.endedReason = null
      await this.loadUser()
    },

    async loadUser(): Promise<void> {
      this.user = await api.profile()
    },

    /**
     * One refresh at a time: every caller during a refresh shares its outcome.
     * True when a new access token was received.
     */
    refresh(): Promise<boolean> {
      inflight ??= acrossTabs(() => api.refresh())
        .then((session) => {
          this.adopt(session)
          return true
        })
        .catch((error: unknown) => {
          if (error instanceof ApiError && (error.status === 401 || error.status === 403)) {
            this.end(this.accessToken ? 'Your session has ended. Please sign in again.' : null)
            return false
          }
          if (this.accessToken && Date.now() < this.expiresAt) {
            this.schedule(RETRY_MS)
          } else {
            this.end(this.accessToken ? 'Your session could not be renewed. Please sign in again.' : null)
          }
          return false
        })
        .finally(() => {
          inflight = null
        })
      return inflight
    },

    /** For the API client: a token to retry with after `stale` got a 401. */
    async renew(stale: string): Promise<string | null> {
      // Another call's refresh may already have replaced the stale token.
      if (this.accessToken && this.accessToken !== stale) return this.accessToken
      return (await this.refresh()) ? this.accessToken : null
    },

    async logout(): Promise<void> {
      try {
        await api.revoke()
      } finally {
        this.end(null)
      }
    },

    adopt(session: Session): void {
      this.accessToken = session.access_token
      this.expiresAt = Date.now() + session.expires_in * 1000
      this.schedule(Math.max(5_000, session.expires_in * 1000 - RENEW_AHEAD_MS))
    },

    schedule(delay: number): void {
      clearTimeout(timer)
      timer = setTimeout(() => void this.refresh(), delay)
    },

    end(reason: string | null): void {
      clearTimeout(timer)
      this.accessToken = null
      this.expiresAt = 0
      this.user = null
      this.endedReason = reason
    },
  },
})

let inflight: Promise<boolean> | null = null
let timer: ReturnType<typeof setTimeout> | undefined
