// A form's submission: busy while it runs (the button is disabled), and its
// failure as a sentence to show beside the form.
import { ref } from 'vue'
import { describeError } from '../lib/api'

export function useSubmit(task: () => Promise<void>, onFailure?: (failure: unknown) => void) {
  const busy = ref(false)
  const error = ref('')
  async function submit(): Promise<void> {
    busy.value = true
    error.value = ''
    try {
      await task()
    } catch (failure) {
      error.value = describeError(failure)
      onFailure?.(failure)
    } finally {
      busy.value = false
    }
  }
  return { busy, error, submit }
}
