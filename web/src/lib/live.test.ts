import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { BACKOFF_CAP_MS, HEALTHY_MS, LiveClient, backoffDelay, isAfter, type LiveEvent, type LiveState, type SocketFactory } from './live'

/** A WebSocket the test drives: it records what the client sends. */
class FakeSocket {
  static all: FakeSocket[] = []
  readyState = 0
  sent: Record<string, unknown>[] = []
  onopen: ((event: Event) => void) | null = null
  onmessage: ((event: MessageEvent) => void) | null = null
  onclose: ((event: CloseEvent) => void) | null = null
  onerror: ((event: Event) => void) | null = null
  constructor(
    readonly url: string,
    readonly protocols?: string | string[],
  ) {
    FakeSocket.all.push(this)
  }
  send(text: string): void {
    this.sent.push(JSON.parse(text))
  }
  close(): void {
    this.readyState = 3
  }
  // The server's side:
  open(): void {
    this.readyState = 1
    this.onopen?.(new Event('open'))
  }
  frame(frame: object): void {
    this.onmessage?.(new MessageEvent('message', { data: JSON.stringify(frame) }))
  }
  event(channel: string, id: string, type = 'message.created', data: object = {}): void {
    this.frame({ op: 'event', channel, id, type, data })
  }
  drop(code = 1006): void {
    this.readyState = 3
    this.onclose?.(new CloseEvent('close', { code }))
  }
}

const last = () => FakeSocket.all.at(-1)!
let token: string | null
let states: LiveState[]

function client(): LiveClient {
  return new LiveClient({
    url: 'ws://test/ws',
    token: () => token,
    WebSocket: FakeSocket as unknown as SocketFactory,
    random: () => 0.5,
    onState: (state) => states.push(state),
  })
}

beforeEach(() => {
  vi.useFakeTimers()
  FakeSocket.all = []
  token = 'tok'
  states = []
})
afterEach(() => vi.useRealTimers())

describe('event ids and backoff', () => {
  it('orders stream ids numerically', () => {
    expect(isAfter('1700000000001-0', '1700000000000-5')).toBe(true)
    expect(isAfter('10-2', '10-10')).toBe(false)
    expect(isAfter('10-10', '10-2')).toBe(true)
    expect(isAfter('10-2', '10-2')).toBe(false)
  })

  it('doubles from 0.5 s up to 15 s, jittered within the upper half', () => {
    const top = (attempt: number) => backoffDelay(attempt, () => 1)
    expect([0, 1, 2, 3, 4, 5, 6, 10].map(top)).toEqual([500, 1000, 2000, 4000, 8000, 15000, 15000, 15000])
    expect(backoffDelay(0, () => 0)).toBe(250)
    expect(backoffDelay(20, () => 0)).toBe(BACKOFF_CAP_MS / 2)
  })
})

describe('LiveClient', () => {
  it('connects with the bearer subprotocols and subscribes each channel once', () => {
    const live = client()
    const handler = vi.fn()
    live.subscribe('post:1', handler)
    live.subscribe('post:1', vi.fn())
    live.connect()
    expect(last().url).toBe('ws://test/ws')
    expect(last().protocols).toEqual(['bearer', 'tok'])
    expect(live.state).toBe('connecting')
    last().open()
    expect(live.state).toBe('open')
    expect(last().sent).toEqual([{ op: 'subscribe', channel: 'post:1' }])

    last().frame({ op: 'ack', for: 'subscribe', channel: 'post:1' })
    live.subscribe('user', vi.fn())
    expect(last().sent.at(-1)).toEqual({ op: 'subscribe', channel: 'user' })
    expect(states).toEqual(['connecting', 'open'])
  })

  it('delivers events to every subscriber of the channel only', () => {
    const live = client()
    const a = vi.fn()
    const b = vi.fn()
    const other = vi.fn()
    live.subscribe('post:1', a)
    live.subscribe('post:1', b)
    live.subscribe('post:2', other)
    live.connect()
    last().open()
    last().event('post:1', '5-0', 'message.created', { message_id: 'm1' })
    const expected: LiveEvent = { channel: 'post:1', id: '5-0', type: 'message.created', data: { message_id: 'm1' } }
    expect(a).toHaveBeenCalledWith(expected)
    expect(b).toHaveBeenCalledWith(expected)
    expect(other).not.toHaveBeenCalled()
  })

  it('drops an event at or before the last id seen on its channel', () => {
    const live = client()
    const handler = vi.fn()
    live.subscribe('post:1', handler)
    live.connect()
    last().open()
    last().event('post:1', '5-0')
    last().event('post:1', '5-0')
    last().event('post:1', '4-9')
    last().event('post:1', '5-1')
    expect(handler.mock.calls.map(([event]) => event.id)).toEqual(['5-0', '5-1'])
  })

  it('after a drop, reconnects and resumes each channel from its last event, without duplicates', async () => {
    const live = client()
    const handler = vi.fn()
    live.subscribe('post:1', handler)
    live.subscribe('user', vi.fn())
    live.connect()
    last().open()
    last().event('post:1', '7-0')
    last().event('post:1', '8-0')
    last().drop()
    expect(live.state).toBe('connecting')

    await vi.advanceTimersByTimeAsync(backoffDelay(0, () => 0.5))
    expect(FakeSocket.all).toHaveLength(2)
    last().open()
    expect(last().sent).toEqual([
      { op: 'subscribe', channel: 'post:1', since: '8-0' },
      { op: 'subscribe', channel: 'user' },
    ])
    // The server replays from since (the event itself included when kept).
    last().event('post:1', '8-0')
    last().event('post:1', '9-0')
    expect(handler.mock.calls.map(([event]) => event.id)).toEqual(['7-0', '8-0', '9-0'])
  })

  it('resumes a channel that had no event from where its subscription began', async () => {
    const live = client()
    const refetch = vi.fn()
    live.subscribe('feed', vi.fn(), refetch)
    live.connect()
    last().open()
    last().frame({ op: 'ack', for: 'subscribe', channel: 'feed', last: '0-0' })
    last().drop()
    await vi.advanceTimersByTimeAsync(BACKOFF_CAP_MS)
    last().open()
    expect(last().sent).toEqual([{ op: 'subscribe', channel: 'feed', since: '0-0' }])
    expect(refetch).not.toHaveBeenCalled()
  })

  it('asks for a refetch on a gap, and on a resumption it has no event id for', async () => {
    const live = client()
    const refetch = vi.fn()
    const quiet = vi.fn()
    live.subscribe('post:1', vi.fn(), refetch)
    live.subscribe('feed', vi.fn(), quiet)
    live.connect()
    last().open()
    last().event('post:1', '3-0')
    last().frame({ op: 'error', code: 'gap', detail: 'refetch', channel: 'post:1' })
    expect(refetch).toHaveBeenCalledTimes(1)
    expect(quiet).not.toHaveBeenCalled()

    last().drop()
    await vi.advanceTimersByTimeAsync(BACKOFF_CAP_MS)
    last().open()
    // feed had no event: what it missed while down can only come over REST.
    expect(quiet).toHaveBeenCalledTimes(1)
    expect(refetch).toHaveBeenCalledTimes(1)
  })

  it('backs off exponentially while failing, and resets after a healthy connection', async () => {
    const live = client()
    live.subscribe('user', vi.fn())
    live.connect()
    const delays: number[] = []
    for (let i = 0; i < 7; i++) {
      const before = FakeSocket.all.length
      last().drop()
      let waited = 0
      while (FakeSocket.all.length === before) {
        await vi.advanceTimersByTimeAsync(50)
        waited += 50
      }
      delays.push(waited)
    }
    // random() = 0.5: three quarters of 500, 1000, 2000 … capped at 15 s.
    expect(delays).toEqual([400, 750, 1500, 3000, 6000, 11250, 11250])

    last().open()
    await vi.advanceTimersByTimeAsync(HEALTHY_MS)
    last().drop()
    const before = FakeSocket.all.length
    await vi.advanceTimersByTimeAsync(400)
    expect(FakeSocket.all.length).toBe(before + 1)
  })

  it('reconnects at once when asked (online, renewed token), skipping the wait', async () => {
    const live = client()
    live.connect()
    last().drop()
    expect(FakeSocket.all).toHaveLength(1)
    token = 'renewed'
    live.reconnectNow()
    expect(FakeSocket.all).toHaveLength(2)
    expect(last().protocols).toEqual(['bearer', 'renewed'])
    await vi.advanceTimersByTimeAsync(BACKOFF_CAP_MS)
    expect(FakeSocket.all).toHaveLength(2)
  })

  it('pings to keep the connection alive', async () => {
    const live = client()
    live.connect()
    last().open()
    await vi.advanceTimersByTimeAsync(25_000)
    expect(last().sent).toContainEqual({ op: 'ping' })
  })

  it('unsubscribes when the last subscriber leaves', () => {
    const live = client()
    const stopA = live.subscribe('post:1', vi.fn())
    const stopB = live.subscribe('post:1', vi.fn())
    live.connect()
    last().open()
    stopA()
    expect(last().sent.at(-1)).toEqual({ op: 'subscribe', channel: 'post:1' })
    stopB()
    expect(last().sent.at(-1)).toEqual({ op: 'unsubscribe', channel: 'post:1' })
  })

  it('stays closed without a token, and closes for good on disconnect', async () => {
    token = null
    const live = client()
    live.connect()
    expect(FakeSocket.all).toHaveLength(0)
    expect(live.state).toBe('closed')

    token = 'tok'
    live.subscribe('post:1', vi.fn())
    live.connect()
    last().open()
    last().event('post:1', '2-0')
    live.disconnect()
    expect(live.state).toBe('closed')
    await vi.advanceTimersByTimeAsync(BACKOFF_CAP_MS)
    expect(FakeSocket.all).toHaveLength(1)
    // Another session starts afresh: no since from the previous one.
    live.connect()
    last().open()
    expect(last().sent).toEqual([{ op: 'subscribe', channel: 'post:1' }])
  })
})
