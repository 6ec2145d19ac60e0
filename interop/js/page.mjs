// The browser page of the interop suite: js-libp2p over one transport only (WebSocket, or
// WebRTC-direct on Chromium's own RTCPeerConnection), with @canvas-js/libp2p-rendezvous's
// client. browser.mjs bundles it (esbuild) and drives it in headless Chromium:
// window.start(config) starts the node and returns its ready line, window.run(command) answers
// one command line (ops.mjs: register, discover, unregister).

import { createLibp2p } from "libp2p"
import { webSockets } from "@libp2p/websockets"
import { webRTCDirect } from "@libp2p/webrtc"
import { noise } from "@chainsafe/libp2p-noise"
import { yamux } from "@chainsafe/libp2p-yamux"
import { identify } from "@libp2p/identify"
import { RendezvousClient, rendezvousClient } from "@canvas-js/libp2p-rendezvous/client"
import { answer, clientOps } from "./ops.mjs"

const transports = { ws: webSockets, "webrtc-direct": webRTCDirect }

// config: {protocol, announce: [multiaddr], transport: "ws" or "webrtc-direct"}. A browser
// listens on nothing; what it registers is what it announces (their client refuses to register no address at all), as a browser
// peer announces a circuit-relay address in practice.
window.start = async ({ protocol, announce, transport }) => {
	RendezvousClient.protocol = protocol
	if (!(transport in transports)) throw new Error(`unknown transport ${transport}`)
	const node = await createLibp2p({
		addresses: { listen: [], announce },
		transports: [transports[transport]()],
		connectionEncrypters: [noise()],
		streamMuxers: [yamux()],
		// js-libp2p's browser build refuses to dial private addresses through its default
		// connection gater (2.10 lets plain /ws through, not /wss, /webrtc-direct or other
		// transports). The test's server is on 127.0.0.1: this gater refuses no address.
		connectionGater: { denyDialMultiaddr: async () => false },
		services: { identify: identify(), rendezvous: rendezvousClient({ autoDiscover: false }) },
	})
	const ops = {
		...clientOps(node.services.rendezvous),
		stop: async () => {
			await node.stop()
			return {}
		},
	}
	window.run = (command) => answer(ops, command)
	return {
		event: "ready",
		peer: node.peerId.toString(),
		addrs: node.getMultiaddrs().map((a) => a.toString()),
		agent: navigator.userAgent,
	}
}
