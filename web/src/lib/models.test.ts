import { describe, expect, it } from 'vitest'
import { messageFromEvent } from './models'

const event = {
  message_id: '0190d4a0-0000-7000-8000-000000000001',
  post_id: '0190d4a0-0000-7000-8000-000000000002',
  sender_id: 'u1',
  sender_username: 'ann',
  sender_display_name: 'Ann',
  text: 'hello',
  created_at: '2026-12-05T07:00:00Z',
  post_author_id: 'u2',
}

describe('messageFromEvent', () => {
  it('draws the message the event describes, as the REST API shows it', () => {
    expect(messageFromEvent(event)).toEqual({
      id: event.message_id,
      post_id: event.post_id,
      author: { id: 'u1', username: 'ann', display_name: 'Ann' },
      message: 'hello',
      created_at: event.created_at,
    })
  })

  it('gives up when the event does not say who sent it (an older server)', () => {
    expect(messageFromEvent({ ...event, sender_username: '' })).toBeNull()
  })
})
