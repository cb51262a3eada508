import { nextTick } from 'vue'
import { createRouter, createWebHistory, type RouteRecordRaw } from 'vue-router'
import { useAuthStore } from './stores/auth'
import FeedView from './views/FeedView.vue'

declare module 'vue-router' {
  interface RouteMeta {
    /** Only for a signed-in user: others go to sign-in first. */
    auth?: boolean
    title?: string
  }
}

const routes: RouteRecordRaw[] = [
  { path: '/', name: 'home', component: FeedView, meta: { title: 'Home' } },
  { path: '/login', name: 'login', component: () => import('./views/LoginView.vue'), meta: { title: 'Sign in' } },
  { path: '/signup', name: 'signup', component: () => import('./views/SignupView.vue'), meta: { title: 'Sign up' } },
  { path: '/compose', name: 'compose', component: () => import('./views/ComposeView.vue'), meta: { auth: true, title: 'New post' } },
  { path: '/p/:id', name: 'post', component: () => import('./views/PostView.vue'), props: true, meta: { title: 'Post' } },
  { path: '/u/:username', name: 'profile', component: () => import('./views/ProfileView.vue'), props: true, meta: { title: 'Profile' } },
  {
    path: '/u/:username/:which(followers|following)',
    name: 'follows',
    component: () => import('./views/FollowListView.vue'),
    props: true,
    meta: { title: 'Follows' },
  },
  { path: '/settings', name: 'settings', component: () => import('./views/SettingsView.vue'), meta: { auth: true, title: 'Settings' } },
  {
    path: '/notifications',
    name: 'notifications',
    component: () => import('./views/NotificationsView.vue'),
    meta: { auth: true, title: 'Notifications' },
  },
  { path: '/:rest(.*)*', name: 'not-found', component: () => import('./views/NotFoundView.vue'), meta: { title: 'Not found' } },
]

export function createAppRouter(authStarted: Promise<void>) {
  const router = createRouter({
    history: createWebHistory(),
    routes,
    scrollBehavior: (_to, _from, saved) => saved ?? { top: 0 },
  })

  router.beforeEach(async (to) => {
    await authStarted
    if (to.meta.auth && !useAuthStore().signedIn) {
      return { name: 'login', query: { next: to.fullPath } }
    }
  })

  // Focus moves to the new page's heading, so screen readers announce it.
  let first = true
  router.afterEach((to, from) => {
    document.title = to.meta.title ? `${to.meta.title} · Social fleet` : 'Social fleet'
    if (first || to.path === from.path) {
      first = false
      return
    }
    void nextTick(() => document.querySelector<HTMLElement>('main h1')?.focus())
  })
  return router
}
