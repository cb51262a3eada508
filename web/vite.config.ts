/// <reference types="vitest/config" />
import { defineConfig } from 'vite'
import vue from '@vitejs/plugin-vue'
import tailwindcss from '@tailwindcss/vite'

const gateway = 'http://127.0.0.1:8000'

export default defineConfig({
  base: '/',
  plugins: [vue(), tailwindcss()],
  server: {
    host: '127.0.0.1',
    port: 5173,
    strictPort: true,
    proxy: {
      '/api': gateway,
      '/media': gateway,
      '/.well-known': gateway,
      '/ws': { target: 'ws://127.0.0.1:8000', ws: true },
    },
  },
  build: {
    // Everything in files of its own: the pages' Content-Security-Policy
    // allows no inline script or style.
    assetsInlineLimit: 0,
    modulePreload: { polyfill: false },
    // The API reference page bundles Swagger UI whole.
    chunkSizeWarningLimit: 2000,
    rollupOptions: {
      // The app's entry is named index (assets/index-<hash>.js), as the
      // serving tests look for it.
      input: { index: 'index.html', docs: 'docs.html' },
    },
  },
  test: {
    environment: 'happy-dom',
    include: ['src/**/*.test.ts'],
    restoreMocks: true,
  },
})
