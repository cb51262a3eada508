// The alert region's messages: problems as sentences, and the odd notice.
import { defineStore } from 'pinia'
import { describeError } from '../lib/api'

export interface Toast {
  id: number
  text: string
  kind: 'error' | 'info'
}

const SHOWN_MS = 8_000
let nextId = 1

export const useToastStore = defineStore('toasts', {
  state: () => ({ toasts: [] as Toast[] }),
  actions: {
    show(text: string, kind: Toast['kind'] = 'info'): void {
      const id = nextId++
      this.toasts.push({ id, text, kind })
      setTimeout(() => this.dismiss(id), SHOWN_MS)
    },
    fail(error: unknown): void {
      this.show(describeError(error), 'error')
    },
    dismiss(id: number): void {
      this.toasts = this.toasts.filter((toast) => toast.id !== id)
    },
  },
})
