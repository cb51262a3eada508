// One WebSocket per tab, shared by every subscriber. It remembers the last
// event id of each channel and, after any reconnection, subscribes again with
// `since` = that id: the server replays exactly what was missed, and events at
// or before an id already seen are dropped, so nothing is lost or doubled.

export type LiveState = 'connecting' | 'open' | 'closed'

export interface LiveEvent {
  channel: string
  id: string
  type: string
  data: Record<string, unknown>
}

type Socket = Pick<WebSocket, 'send' | 'close' | 'readyState'> & {
  onopen: ((event: Event) => void) | null
  onmessage: ((event: MessageEvent) => void) | null
  onclose: ((event: CloseEvent) => void) | null
  onerror: ((event: Event) => void) | null
}
export type SocketFactory = new (url: string, protocols?: string | string[]) => Socket

export interface LiveOptions {
  /** The ws(s):// URL of /ws. */
  url: string
  /** The access token, or null while signed out (no socket then). */
  token: () => string | null
  WebSocket?: SocketFactory
  random?: () => number
  onState?: (state: LiveState) => void
}

interface Channel {
  handlers: Set<(event: LiveEvent) => void>
  refetchers: Set<() => void>
  lastId: string | null
  /** Subscribed on a socket before: a new one may have missed something. */
  wasLive: boolean
}

export const BACKOFF_BASE_MS = 500
export const BACKOFF_CAP_MS = 15_000
/** A connection that stayed up this long resets the backoff. */
export const HEALTHY_MS = 10_000
export const PING_MS = 25_000
const OPEN = 1

/** Redis stream ids ("<ms>-<seq>") in order; true when a is after b. */
export function isAfter(a: string, b: string): boolean {
  const [am = 0, as = 0] = a.split('-').map(Number)
  const [bm = 0, bs = 0] = b.split('-').map(Number)
  return am !== bm ? am > bm : as > bs
}

/** The delay before reconnection attempt n (0-based): exponential, capped, half jittered. */
export function backoffDelay(attempt: number, random: () => number = Math.random): number {
  const ceiling = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** attempt)
  return ceiling / 2 + random() * (ceiling / 2)
}

export class LiveClient {
  state: LiveState = 'closed'
  private socket: Socket | null = null
  private channels = new Map<string, Channel>()
  private attempt = 0
  private openedAt = 0
  private retryTimer: ReturnType<typeof setTimeout> | undefined
  private pingTimer: ReturnType<typeof setInterval> | undefined
  private readonly Socket: SocketFactory
  private readonly random: () => number

  constructor(private readonly options: LiveOptions) {
    this.Socket = options.WebSocket ?? (globalThis.WebSocket as unknown as SocketFactory)
    this.random = options.random ?? Math.random
  }

  /**
   * Calls `handler` with each event of `channel`, and `refetch` when the
   * server could not replay what was missed (refetch over REST then).
   * Returns the function that ends this subscription.
   */
  subscribe(channel: string, handler: (event: LiveEvent) => void, refetch?: () => void): () => void {
    let entry = this.channels.get(channel)
    if (!entry) {
      entry = { handlers: new Set(), refetchers: new Set(), lastId: null, wasLive: false }
      this.channels.set(channel, entry)
      this.sendSubscribe(channel, entry)
    }
    const current = entry
    current.handlers.add(handler)
    if (refetch) current.refetchers.add(refetch)
    return () => {
      current.handlers.delete(handler)
      if (refetch) current.refetchers.delete(refetch)
      if (current.handlers.size === 0 && this.channels.get(channel) === current) {
        this.channels.delete(channel)
        this.send({ op: 'unsubscribe', channel })
      }
    }
  }

  /** Connects when there is a token and no socket; promptly, forgetting the backoff. */
  connect(): void {
    clearTimeout(this.retryTimer)
    this.retryTimer = undefined
    if (this.socket) return
    const token = this.options.token()
    if (!token) {
      this.setState('closed')
      return
    }
    this.setState('connecting')
    const socket = new this.Socket(this.options.url, ['bearer', token])
    this.socket = socket
    socket.onopen = () => {
      this.openedAt = Date.now()
      this.setState('open')
      for (const [name, entry] of this.channels) {
        // Without an event id to resume from, what was missed comes over REST.
        const missed = entry.wasLive && !entry.lastId
        this.sendSubscribe(name, entry)
        if (missed) for (const refetch of [...entry.refetchers]) refetch()
      }
      this.pingTimer = setInterval(() => this.send({ op: 'ping' }), PING_MS)
    }
    socket.onmessage = (event) => this.receive(String(event.data))
    socket.onclose = () => this.dropped(socket)
  }

  /** Reconnects now if not connected (after `online`, or a renewed token). */
  reconnectNow(): void {
    if (!this.socket) {
      this.attempt = 0
      this.connect()
    }
  }

  /** Closes for good (signing out): channels are kept, the socket is not. */
  disconnect(): void {
    clearTimeout(this.retryTimer)
    this.retryTimer = undefined
    const socket = this.socket
    this.socket = null
    this.stopPing()
    if (socket) {
      socket.onclose = null
      socket.close(1000)
    }
    for (const entry of this.channels.values()) {
      entry.lastId = null
      entry.wasLive = false
    }
    this.setState('closed')
  }

  private dropped(socket: Socket): void {
    if (this.socket !== socket) return
    this.socket = null
    this.stopPing()
    if (this.openedAt && Date.now() - this.openedAt >= HEALTHY_MS) this.attempt = 0
    this.openedAt = 0
    if (!this.options.token()) {
      this.setState('closed')
      return
    }
    this.setState('connecting')
    const delay = backoffDelay(this.attempt, this.random)
    this.attempt += 1
    this.retryTimer = setTimeout(() => this.connect(), delay)
  }

  private receive(text: string): void {
    let frame: {
      op?: string
      for?: string
      channel?: string
      id?: string
      last?: string
      type?: string
      data?: unknown
      code?: string
    }
    try {
      frame = JSON.parse(text)
    } catch {
      return
    }
    const entry = frame.channel ? this.channels.get(frame.channel) : undefined
    if (!entry) return
    if (frame.op === 'event' && frame.id && frame.type) {
      if (entry.lastId && !isAfter(frame.id, entry.lastId)) return
      entry.lastId = frame.id
      const event: LiveEvent = {
        channel: frame.channel!,
        id: frame.id,
        type: frame.type,
        data: (frame.data ?? {}) as Record<string, unknown>,
      }
      for (const handler of [...entry.handlers]) handler(event)
    } else if (frame.op === 'ack' && frame.for === 'subscribe' && frame.last && !entry.lastId) {
      // The channel's newest event when subscribed: a resumption starts there.
      entry.lastId = frame.last
    } else if (frame.op === 'error' && frame.code === 'gap') {
      for (const refetch of [...entry.refetchers]) refetch()
    }
  }

  private sendSubscribe(channel: string, entry: Channel): void {
    if (this.socket?.readyState === OPEN) entry.wasLive = true
    this.send(entry.lastId ? { op: 'subscribe', channel, since: entry.lastId } : { op: 'subscribe', channel })
  }

  private send(frame: object): void {
    if (this.socket && this.socket.readyState === OPEN) this.socket.send(JSON.stringify(frame))
  }

  private stopPing(): void {
    clearInterval(this.pingTimer)
    this.pingTimer = undefined
  }

  private setState(state: LiveState): void {
    if (this.state === state) return
    this.state = state
    this.options.onState?.(state)
  }
}
