// How soon a phone shows a photo: the time from navigation to the first post
// image painted on the feed (the Element Timing of the image marked
// elementtiming="post-image"), signed out, in headless Chromium.
//
//   BASE_URL=http://127.0.0.1:8000 LOADS=10 node web/e2e/paint.mjs
//
// Cold: each load in a new context (empty cache, new connections). Warm: the
// same context loads the page again (hashed files from its cache). Prints one
// JSON line: {"cold_ms": [...], "warm_ms": [...]}. `make bench` runs it
// (tools/bench/web_bench.py).
import { launch, phone } from './browser.mjs'

const BASE = process.env.BASE_URL
const LOADS = Number(process.env.LOADS || 10)
const TIMEOUT_MS = 15_000

async function firstImagePaint(page) {
  await page.goto(`${BASE}/`, { waitUntil: 'commit' })
  return page.evaluate(
    (timeout) =>
      new Promise((resolve, reject) => {
        setTimeout(() => reject(new Error('no post image painted')), timeout)
        new PerformanceObserver((list) => {
          for (const entry of list.getEntries()) {
            if (entry.identifier === 'post-image') resolve(entry.renderTime || entry.loadTime)
          }
        }).observe({ type: 'element', buffered: true })
      }),
    TIMEOUT_MS,
  )
}

const browser = await launch()
try {
  const cold = []
  for (let i = 0; i < LOADS; i++) {
    const context = await phone(browser)
    cold.push(await firstImagePaint(await context.newPage()))
    await context.close()
  }
  const context = await phone(browser)
  const page = await context.newPage()
  await firstImagePaint(page)
  const warm = []
  for (let i = 0; i < LOADS; i++) warm.push(await firstImagePaint(page))
  console.log(JSON.stringify({ cold_ms: cold, warm_ms: warm }))
} finally {
  await browser.close()
}
