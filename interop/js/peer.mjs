// A js-libp2p peer for the interop suite, driven over stdin/stdout in JSON lines.
//
//   node peer.mjs [--transport tcp|ws] [--server] [--no-identify] [--no-listen]
//                 [--protocol ID]
//
// It prints {"event":"ready","peer":ID,"addrs":[...],"agent":...} once listening, then reads
// one command a line ({"id":N,"op":...}) and answers each with one line carrying the same id.
// With --server it runs @canvas-js/libp2p-rendezvous's RendezvousServer (in-memory store) and
// prints {"event":"discover","ns":...,"cookie":HEX,...} for every DISCOVER it answers, so the
// test sees the cookies a client sent. Without it the peer is a client:
//
//   register, discover, unregister        their RendezvousClient's (ops.mjs)
//   page       {server, ns, limit, cookie?}  one DISCOVER with a cookie, in their wire codec
//                                            (their client sends none)    -> {peers, cookie}
//   stop       {}                         stops the node and exits 0
//
// A peer is {peer, addrs}: the peer id and addresses of a signed record, checked as their
// client checks it (envelope signed by the peer, standard peer-record domain).

import "./node20.mjs"
import { createInterface } from "node:readline"
import { createLibp2p } from "libp2p"
import { tcp } from "@libp2p/tcp"
import { webSockets } from "@libp2p/websockets"
import { noise } from "@chainsafe/libp2p-noise"
import { yamux } from "@chainsafe/libp2p-yamux"
import { identify } from "@libp2p/identify"
import { multiaddr } from "@multiformats/multiaddr"
import { peerIdFromPublicKey } from "@libp2p/peer-id"
import { PeerRecord, RecordEnvelope } from "@libp2p/peer-record"
import * as lp from "it-length-prefixed"
import { RendezvousClient, rendezvousClient } from "@canvas-js/libp2p-rendezvous/client"
import { RendezvousServer, rendezvousServer } from "@canvas-js/libp2p-rendezvous/server"
import { Message } from "@canvas-js/libp2p-rendezvous/protocol"
import { answer, clientOps } from "./ops.mjs"

const args = process.argv.slice(2)
const flag = (name) => args.includes(name)
const option = (name, fallback) => {
	const i = args.indexOf(name)
	return i >= 0 ? args[i + 1] : fallback
}

const transport = option("--transport", "tcp")
const protocol = option("--protocol", "/rendezvous/1.0.0")
const isServer = flag("--server")

// Both classes read their protocol id from this static; canvas runs /canvas/rendezvous/1.0.0,
// the spec (and `rendezvous serve` by default) /rendezvous/1.0.0.
RendezvousClient.protocol = protocol
RendezvousServer.protocol = protocol

const listen = flag("--no-listen")
	? []
	: [transport === "ws" ? "/ip4/127.0.0.1/tcp/0/ws" : "/ip4/127.0.0.1/tcp/0"]

const services = {}
if (!flag("--no-identify")) services.identify = identify()
if (isServer) services.rendezvous = rendezvousServer({})
else services.rendezvous = rendezvousClient({ autoDiscover: false })

const node = await createLibp2p({
	addresses: { listen },
	transports: [transport === "ws" ? webSockets() : tcp()],
	connectionEncrypters: [noise()],
	streamMuxers: [yamux()],
	// A node-side js-libp2p dials private addresses (the browser build does not by default).
	services,
})

const out = (value) => process.stdout.write(JSON.stringify(value) + "\n")
const hex = (bytes) => Buffer.from(bytes ?? new Uint8Array()).toString("hex")

if (isServer) {
	// Every DISCOVER's cookie, as the store receives it (after their server's decoding).
	const store = node.services.rendezvous.store
	const discover = store.discover.bind(store)
	store.discover = (ns, limit, cookie, filter) => {
		const result = discover(ns, limit, cookie, filter)
		out({
			event: "discover",
			ns,
			cookie: hex(cookie),
			limit: Number(limit),
			returned: result.registrations.length,
		})
		return result
	}
}

out({
	event: "ready",
	peer: node.peerId.toString(),
	addrs: node.getMultiaddrs().map((a) => a.toString()),
	agent: node.services.identify === undefined ? null : "js-libp2p",
})

async function openRecord(bytes) {
	const envelope = await RecordEnvelope.openAndCertify(bytes, PeerRecord.DOMAIN)
	const { peerId, multiaddrs } = PeerRecord.createFromProtobuf(envelope.payload)
	if (!peerIdFromPublicKey(envelope.publicKey).equals(peerId)) {
		throw new Error("record signed by another peer")
	}
	return { peer: peerId.toString(), addrs: multiaddrs.map((a) => a.toString()) }
}

// One DISCOVER with a cookie on its own stream, in their wire codec.
async function page({ server, ns, limit, cookie }) {
	const connection = await node.dial(multiaddr(server))
	const stream = await connection.newStream(protocol)
	const request = Message.encode({
		type: Message.MessageType.DISCOVER,
		discover: { ns, limit: BigInt(limit ?? 0), cookie: Buffer.from(cookie ?? "", "hex") },
	})
	await stream.sink([lp.encode.single(request)])
	let response
	for await (const frame of lp.decode(stream.source)) {
		response = Message.decode(frame.subarray())
		break
	}
	await stream.close()
	if (response === undefined) throw new Error("stream ended without a response")
	if (response.type !== Message.MessageType.DISCOVER_RESPONSE) {
		throw new Error(`expected DISCOVER_RESPONSE, got ${response.type}`)
	}
	const { status, statusText, registrations, cookie: next } = response.discoverResponse
	if (status !== Message.ResponseStatus.OK) throw new Error(`${status}: ${statusText}`)
	const peers = []
	for (const registration of registrations) {
		if (registration.ns !== ns) throw new Error(`registration in ${registration.ns}, asked ${ns}`)
		peers.push({ ...(await openRecord(registration.signedPeerRecord)), ttl: Number(registration.ttl) })
	}
	return { peers, cookie: hex(next) }
}

const ops = {
	...clientOps(node.services.rendezvous),
	page,
	stop: async () => {
		await node.stop()
		return {}
	},
}

for await (const line of createInterface({ input: process.stdin })) {
	if (line.trim() === "") continue
	const command = JSON.parse(line)
	out(await answer(ops, command))
	if (command.op === "stop") process.exit(0)
}
await node.stop()
