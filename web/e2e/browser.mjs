// Debian's Chromium, driven by playwright-core (no browser download): what
// the end-to-end journey and the bench's paint timing both launch.
import { chromium } from 'playwright-core'

export const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium'

export async function launch() {
  // No sandbox: it needs user namespaces that root, and many containers, do
  // not have, and this browser only ever opens the stack's loopback pages.
  const args = ['--disable-background-networking', '--disable-dev-shm-usage', '--no-sandbox']
  return chromium.launch({ executablePath: CHROMIUM, headless: true, args })
}

/** A phone-sized context: the app must work at 360 px wide. */
export async function phone(browser) {
  return browser.newContext({ viewport: { width: 360, height: 780 }, deviceScaleFactor: 2 })
}
