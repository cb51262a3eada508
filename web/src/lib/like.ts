// Liking is optimistic: the post changes at once and changes back if the
// server refuses.
import { api } from './api'
import type { Post } from './models'

const pending = new Set<string>()

/** Flips the caller's like of `post` (a reactive object); one request at a time per post. */
export async function toggleLike(post: Post): Promise<void> {
  if (pending.has(post.id)) return
  pending.add(post.id)
  const liked = !post.liked_by_me
  post.liked_by_me = liked
  post.like_count += liked ? 1 : -1
  try {
    const now = await api.like(post.id, liked)
    post.like_count = now.like_count
    post.liked_by_me = now.liked_by_me ?? liked
  } catch (error) {
    post.liked_by_me = !liked
    post.like_count -= liked ? 1 : -1
    throw error
  } finally {
    pending.delete(post.id)
  }
}
