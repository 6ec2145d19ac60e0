// The client commands of @canvas-js/libp2p-rendezvous's RendezvousClient, shared by the js
// peer (peer.mjs, in Node.js) and the browser page (page.mjs, in Chromium):
//
//   register   {server, ns, ttl?}    -> {ttl}
//   discover   {server, ns, limit?}  -> {peers: [{peer, addrs}]}, records as their client checks
//                                       them (signed by the peer, standard domain)
//   unregister {server, ns}          -> {}

import { multiaddr } from "@multiformats/multiaddr"

export function clientOps(client) {
	return {
		register: ({ server, ns, ttl }) =>
			client.connect(multiaddr(server), (point) => point.register(ns, ttl ? { ttl } : {})),
		discover: async ({ server, ns, limit }) => {
			const found = await client.connect(multiaddr(server), (point) =>
				point.discover(ns, limit ? { limit } : {}),
			)
			return {
				peers: found.map((p) => ({
					peer: p.id.toString(),
					addrs: p.addresses.map((a) => a.multiaddr.toString()),
				})),
			}
		},
		// Their unregister only queues the UNREGISTER, and their stream's close right after it
		// aborts the write unless it is already under way (@libp2p/utils' closeWrite aborts the
		// source given to `sink`): the message was lost in about one browser run in ten, and the
		// server never saw it. A DISCOVER after it on the same stream keeps the stream open until
		// the server has answered, so until it has read the UNREGISTER sent before it.
		unregister: async ({ server, ns }) => {
			await client.connect(multiaddr(server), async (point) => {
				await point.unregister(ns)
				await point.discover(ns)
			})
			return {}
		},
	}
}

// Runs one command line's op from `ops` and returns its answer line (same id; ok or error).
export async function answer(ops, command) {
	try {
		const op = ops[command.op]
		if (op === undefined) throw new Error(`unknown op ${command.op}`)
		return { id: command.id, ok: true, ...(await op(command)) }
	} catch (err) {
		return { id: command.id, ok: false, error: String(err?.message ?? err) }
	}
}
