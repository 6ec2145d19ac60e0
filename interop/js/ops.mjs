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
		unregister: async ({ server, ns }) => {
			await client.connect(multiaddr(server), (point) => point.unregister(ns))
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
