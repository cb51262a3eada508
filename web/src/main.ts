import { createPinia } from 'pinia'
import { createApp } from 'vue'
import App from './App.vue'
import { createAppRouter } from './router'
import { useAuthStore } from './stores/auth'
import { useToastStore } from './stores/toasts'
import './style.css'

const app = createApp(App)
app.use(createPinia())
const started = useAuthStore()
  .start()
  .catch((error: unknown) => useToastStore().fail(error))
app.use(createAppRouter(started))
app.mount('#app')
