import { describe, expect, it, vi } from 'vitest'
import { ApiError } from '../lib/api'
import { useSubmit } from './useSubmit'

describe('useSubmit', () => {
  it('is busy while the task runs and clears the last error', async () => {
    let finish = () => {}
    const { busy, error, submit } = useSubmit(() => new Promise<void>((resolve) => (finish = resolve)))
    error.value = 'an old failure'
    const running = submit()
    expect([busy.value, error.value]).toEqual([true, ''])
    finish()
    await running
    expect(busy.value).toBe(false)
  })

  it("shows a failure as the problem's sentence and hands it on", async () => {
    const refused = new ApiError(429, { detail: 'Too many sign-ins' }, 30)
    const seen = vi.fn()
    const { busy, error, submit } = useSubmit(() => Promise.reject(refused), seen)
    await submit()
    expect(error.value).toBe('Too many sign-ins. Try again in 30 s.')
    expect(busy.value).toBe(false)
    expect(seen).toHaveBeenCalledWith(refused)
  })
})
