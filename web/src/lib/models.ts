// The API's bodies, as gateway/openapi.yaml's components.schemas define them.

export interface FieldError {
  field: string
  message: string
}

export interface ProblemDocument {
  type: string
  title: string
  status: number
  code: string
  detail?: string
  request_id?: string
  errors?: FieldError[]
}

export interface Session {
  token_type: 'Bearer'
  access_token: string
  expires_in: number
  /** Absent in cookie mode (X-Refresh-Cookie: 1). */
  refresh_token?: string
  refresh_expires_in: number
  user_id: string
}

export interface Author {
  id: string
  username: string
  display_name: string
}

export interface PublicUser extends Author {
  bio: string
  follower_count: number
  following_count: number
  created_at: string
  /** Only when a token is sent. */
  followed_by_me?: boolean
}

export interface OwnUser extends Author {
  bio: string
  follower_count: number
  following_count: number
  created_at: string
  email: string
}

export interface ProfileChange {
  display_name?: string
  bio?: string
}

export interface FollowEntry extends Author {
  followed_at: string
}

export interface Variant {
  name: string
  width: number
  height: number
  url: string
}

export interface PostMedia {
  id: string
  type: string
  url: string
  preview_url: string
  width: number
  height: number
  blurhash: string
  description: string
  variants: Variant[]
}

export interface Media extends PostMedia {
  state: 'attached' | 'pending'
  created_at: string
}

export interface Post {
  id: string
  author: Author
  caption: string
  media: PostMedia[]
  like_count: number
  message_count: number
  created_at: string
  /** Only when a token is sent. */
  liked_by_me?: boolean
}

export interface NewPost {
  caption: string
  media_ids: string[]
}

export interface Message {
  id: string
  post_id: string
  author: Author
  message: string
  created_at: string
}

/** Every list (PostPage, MessagePage, FollowPage) is a cursor page. */
export interface Page<T> {
  items: T[]
  next_cursor: string | null
}

// The WebSocket's event data (services/realtime/src/realtime/events.py: the
// events' protobuf messages as JSON; fields at their default are left out,
// int64 arrive as strings).

export interface MessageCreatedData {
  message_id: string
  post_id: string
  sender_id: string
  /** The sender as the message shows them (empty from an older server). */
  sender_username: string
  sender_display_name: string
  text: string
  created_at: string
  post_author_id: string
}

/** The message a message.created event describes, as the REST API shows it. */
export function messageFromEvent(data: MessageCreatedData): Message | null {
  if (!data.sender_username) return null
  return {
    id: data.message_id,
    post_id: data.post_id,
    author: { id: data.sender_id, username: data.sender_username, display_name: data.sender_display_name },
    message: data.text,
    created_at: data.created_at,
  }
}

export interface MessageDeletedData {
  message_id: string
  post_id: string
  sender_id: string
  post_author_id: string
}

export interface PostLikedData {
  post_id: string
  author_id: string
  user_id: string
  like_count?: string | number
}

export interface PostCreatedData {
  post_id: string
  author_id: string
  created_at?: string
  media_ids?: string[]
}
