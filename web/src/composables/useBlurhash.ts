// Paints a blurhash into a canvas: 32x32 pixels, stretched by CSS.
import { decode } from 'blurhash'
import { onMounted, watch, type Ref } from 'vue'

export const BLURHASH_SIZE = 32

export function useBlurhash(canvas: Ref<HTMLCanvasElement | null>, hash: () => string): void {
  function paint(): void {
    const element = canvas.value
    const value = hash()
    const context = element?.getContext('2d')
    if (!context || !value) return
    try {
      const pixels = decode(value, BLURHASH_SIZE, BLURHASH_SIZE)
      const image = context.createImageData(BLURHASH_SIZE, BLURHASH_SIZE)
      image.data.set(pixels)
      context.putImageData(image, 0, 0)
    } catch {
      // An invalid hash leaves the plain background.
    }
  }
  onMounted(paint)
  watch(hash, paint)
}
