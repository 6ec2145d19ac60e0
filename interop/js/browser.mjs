// A js-libp2p peer in a real browser for the interop suite: page.mjs, bundled by esbuild and
// served on 127.0.0.1, in Debian's headless Chromium (/usr/bin/chromium, or $CHROMIUM) driven
// by playwright-core (no browser download), over stdin/stdout in the JSON lines of peer.mjs;
// the page dials over WebSocket (the default) or WebRTC-direct only:
//
//   node browser.mjs [--announce MULTIADDR]... [--protocol ID] [--transport ws|webrtc-direct]
//
// It prints {"event":"ready","peer":ID,"addrs":[],"agent":USER_AGENT} once the page's node runs,
// then answers register, discover, unregister (ops.mjs) and stop, one line each. The page's
// console goes to stderr.

import "./node20.mjs"
import { createServer } from "node:http"
import { mkdtemp, rm } from "node:fs/promises"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { createInterface } from "node:readline"
import { fileURLToPath } from "node:url"
import { build } from "esbuild"
import { chromium } from "playwright-core"

const args = process.argv.slice(2)
const options = (name) => args.flatMap((a, i) => (a === name ? [args[i + 1]] : []))
const protocol = options("--protocol")[0] ?? "/rendezvous/1.0.0"
const announce = options("--announce")
const transport = options("--transport")[0] ?? "ws"

const out = (value) => process.stdout.write(JSON.stringify(value) + "\n")

const bundled = await build({
	entryPoints: [fileURLToPath(new URL("page.mjs", import.meta.url))],
	bundle: true,
	format: "esm",
	platform: "browser",
	target: "chrome120",
	write: false,
	logLevel: "error",
})
const script = bundled.outputFiles[0].contents
const html =
	'<!doctype html><meta charset="utf-8"><link rel="icon" href="data:,">' +
	'<script type="module" src="/page.js"></script>'

// The page and its script, from 127.0.0.1 only (an http page may open plain ws://).
const server = createServer((request, response) => {
	if (request.url === "/page.js") {
		response.writeHead(200, { "content-type": "text/javascript" }).end(script)
	} else if (request.url === "/") {
		response.writeHead(200, { "content-type": "text/html" }).end(html)
	} else {
		response.writeHead(404).end()
	}
})
await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve))

const profile = await mkdtemp(join(tmpdir(), "rendezvous-chromium-"))
const context = await chromium.launchPersistentContext(profile, {
	executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
	headless: true,
	args: [
		"--headless",
		"--no-sandbox",
		"--disable-gpu",
		"--disable-background-networking",
		"--disable-component-update",
		"--disable-sync",
		"--no-first-run",
	],
})
const stop = async () => {
	await context.close().catch(() => {})
	server.close()
	await rm(profile, { recursive: true, force: true })
}

const page = context.pages()[0] ?? (await context.newPage())
page.on("console", (message) => process.stderr.write(`page: ${message.text()}\n`))
page.on("pageerror", (error) => process.stderr.write(`page error: ${error.message}\n`))
await page.goto(`http://127.0.0.1:${server.address().port}/`)
await page.waitForFunction(() => typeof window.start === "function")
out(await page.evaluate((config) => window.start(config), { protocol, announce, transport }))

for await (const line of createInterface({ input: process.stdin })) {
	if (line.trim() === "") continue
	const command = JSON.parse(line)
	out(await page.evaluate((c) => window.run(c), command))
	if (command.op === "stop") break
}
await stop()
process.exit(0)
