// The end-to-end journey of two people in real Chromium against a running
// stack: sign up, upload two photos (progress seen), post, talk under the post
// live, survive a realtime restart without a gap or a duplicate, like, follow,
// see the post at home, stay signed in across a reload, sign out.
//
//   node web/e2e/journey.mjs   (tests/test_web_client.py runs it)
//
// Environment: BASE_URL (the gateway), OUT_DIR (screenshots), PHOTOS (two
// image paths, comma-separated). The harness that runs it restarts stack
// components on request: this script prints "@restart <component>" and waits
// for a line on stdin.
import { mkdirSync } from 'node:fs'
import { createInterface } from 'node:readline'
import { launch, phone } from './browser.mjs'

const BASE = process.env.BASE_URL
const OUT = process.env.OUT_DIR
const PHOTOS = (process.env.PHOTOS || '').split(',').filter(Boolean)
if (!BASE || !OUT || PHOTOS.length !== 2) {
  console.error('BASE_URL, OUT_DIR and PHOTOS (two paths) are required')
  process.exit(2)
}
mkdirSync(OUT, { recursive: true })

const harness = createInterface({ input: process.stdin })[Symbol.asyncIterator]()
/** Asks the harness to act on the stack and waits until it has. */
async function ask(command) {
  console.log(`@${command}`)
  const { value, done } = await harness.next()
  if (done || value.trim() !== 'done') throw new Error(`the harness did not do: ${command}`)
}

const problems = []
/** Every page: a CSP violation or an uncaught error fails the journey. */
function watch(page, who) {
  page.on('console', (message) => {
    if (message.type() === 'error' && /Content.Security.Policy|Refused to/i.test(message.text())) {
      problems.push(`${who}: ${message.text()}`)
    }
  })
  page.on('pageerror', (error) => problems.push(`${who}: uncaught ${error.message}`))
}

async function shot(page, name) {
  await page.screenshot({ path: `${OUT}/${name}.png`, fullPage: true })
}

function step(name) {
  console.log(`- ${name}`)
}

const stamp = Date.now().toString(36)
const people = {
  ann: { username: `ann_${stamp}`, password: `ann-secret-${stamp}` },
  bob: { username: `bob_${stamp}`, password: `bob-secret-${stamp}` },
}

async function signUp(page, person) {
  await page.goto(`${BASE}/signup`)
  await page.getByLabel('Username', { exact: true }).fill(person.username)
  await page.getByLabel('Email').fill(`${person.username}@example.com`)
  await page.getByLabel('Password').fill(person.password)
  await page.getByRole('button', { name: 'Create account' }).click()
  await page.getByRole('button', { name: 'Sign out' }).waitFor()
}

const browser = await launch()
try {
  const annContext = await phone(browser)
  const bobContext = await phone(browser)
  const ann = await annContext.newPage()
  const bob = await bobContext.newPage()
  watch(ann, 'ann')
  watch(bob, 'bob')

  step('the global feed, signed out')
  await ann.goto(`${BASE}/`)
  await ann.getByRole('link', { name: 'Sign in' }).first().waitFor()
  await shot(ann, '01-feed-signed-out')

  step('ann signs up')
  await signUp(ann, people.ann)

  step('ann uploads two photos, with a progress bar each, and posts')
  // Uploads slow enough to watch: about 1 MB/s up.
  const cdp = await annContext.newCDPSession(ann)
  await cdp.send('Network.enable')
  await cdp.send('Network.emulateNetworkConditions', {
    offline: false,
    latency: 20,
    downloadThroughput: 50e6,
    uploadThroughput: 1e6,
  })
  await ann.goto(`${BASE}/compose`)
  await ann.getByLabel('Photos').setInputFiles(PHOTOS)
  await ann.getByLabel('Alt text for photo 1').fill('A red square on white')
  await ann.getByLabel('Alt text for photo 2').fill('A blue circle on white')
  await ann.getByLabel('Caption').fill(`Two shapes ${stamp}`)
  const bars = ann.getByTestId('upload-progress')
  const seen = new Set()
  let shown = false
  const post = ann.getByRole('button', { name: 'Post', exact: true })
  await post.click()
  // Partway values seen on the bars while the bytes go up.
  const until = Date.now() + 30_000
  while (!/\/p\//.test(ann.url()) && Date.now() < until) {
    for (const value of await bars.evaluateAll((els) => els.map((e) => e.value / e.max))) {
      seen.add(Math.round(value * 10) / 10)
    }
    if (!shown && [...seen].some((v) => v > 0 && v < 1)) {
      await shot(ann, '02-compose-uploading')
      shown = true
    }
    await ann.waitForTimeout(50)
  }
  await cdp.send('Network.emulateNetworkConditions', {
    offline: false,
    latency: 0,
    downloadThroughput: -1,
    uploadThroughput: -1,
  })
  await ann.waitForURL(/\/p\/[0-9a-f-]{36}$/)
  const partway = [...seen].filter((v) => v > 0 && v < 1)
  if (partway.length === 0) throw new Error(`no upload progress seen: ${[...seen]}`)
  const postUrl = ann.url()
  const postId = postUrl.split('/p/')[1]
  await ann.getByRole('img', { name: 'A red square on white' }).waitFor()
  await ann.getByRole('img', { name: 'A blue circle on white' }).waitFor()

  step('bob signs up and opens the post')
  await signUp(bob, people.bob)
  await bob.goto(postUrl)
  await bob.getByTestId('live-status').filter({ hasText: 'live' }).waitFor()
  await ann.getByTestId('live-status').filter({ hasText: 'live' }).waitFor()

  step("ann's message arrives live on bob's page")
  async function send(text) {
    await ann.getByLabel('Message').fill(text)
    await ann.getByRole('button', { name: 'Send' }).click()
    await ann.getByTestId('message').filter({ hasText: text }).waitFor()
  }
  await send(`hello bob ${stamp}`)
  await bob.getByTestId('message').filter({ hasText: `hello bob ${stamp}` }).waitFor()
  await shot(bob, '03-post-live')

  step('realtime restarts: the messages sent meanwhile appear once each')
  const restarted = ask('restart realtime')
  const missed = [1, 2, 3].map((n) => `while you were away ${n} ${stamp}`)
  for (const text of missed) await send(text)
  await restarted
  for (const text of missed) {
    await bob.getByTestId('message').filter({ hasText: text }).waitFor({ timeout: 30_000 })
  }
  await bob.getByTestId('live-status').filter({ hasText: 'live' }).waitFor({ timeout: 30_000 })
  const texts = await bob.getByTestId('message').allInnerTexts()
  for (const text of [`hello bob ${stamp}`, ...missed]) {
    const count = texts.filter((t) => t.includes(text)).length
    if (count !== 1) throw new Error(`"${text}" shown ${count} times on bob's page`)
  }

  step('bob likes the post (the count moves at once and stays after a reload)')
  const likes = bob.getByTestId('like-count').first()
  const before = Number(await likes.innerText())
  await bob.getByTestId('like-button').first().click()
  await bob.waitForFunction(
    ([el, n]) => Number(el.textContent) === n,
    [await likes.elementHandle(), before + 1],
  )
  await bob.reload()
  await bob.getByTestId('like-count').filter({ hasText: String(before + 1) }).first().waitFor()

  step('ann is told: a notification badge')
  await ann.getByTestId('notification-count').filter({ hasText: /^[1-9]/ }).waitFor()
  await ann.getByTestId('notification-count').click()
  await ann.waitForURL(/\/notifications$/)
  await shot(ann, '04-notifications')

  step("bob follows ann and sees her post at home")
  await bob.goto(`${BASE}/u/${people.ann.username}`)
  await bob.getByRole('button', { name: 'Follow', exact: true }).click()
  await bob.getByRole('button', { name: 'Unfollow' }).waitFor()
  await shot(bob, '05-profile')
  await bob.goto(`${BASE}/`)
  await bob.getByTestId('post-card').filter({ hasText: `Two shapes ${stamp}` }).waitFor()
  await shot(bob, '06-home-feed')

  step('a reload keeps bob signed in')
  await bob.reload()
  await bob.getByRole('button', { name: 'Sign out' }).waitFor()
  await bob.getByTestId('post-card').filter({ hasText: `Two shapes ${stamp}` }).waitFor()

  step('the API reference renders under the same policy')
  await bob.goto(`${BASE}/api/docs`)
  await bob.getByText('/api/v1/posts', { exact: true }).first().waitFor()
  await shot(bob, '07-api-docs')

  step('bob signs out, and a reload does not sign him back in')
  await bob.goto(`${BASE}/`)
  await bob.getByRole('button', { name: 'Sign out' }).click()
  await bob.getByRole('link', { name: 'Sign in' }).first().waitFor()
  await bob.reload()
  await bob.getByRole('link', { name: 'Sign in' }).first().waitFor()

  if (problems.length) throw new Error(`the pages reported:\n${problems.join('\n')}`)
  console.log(`ok: post ${postId}; screenshots in ${OUT}`)
} catch (error) {
  for (const [i, context] of browser.contexts().entries()) {
    for (const page of context.pages()) await shot(page, `failure-${i}`).catch(() => {})
  }
  console.error(error.stack || String(error))
  process.exitCode = 1
} finally {
  await browser.close()
  process.exit()
}
