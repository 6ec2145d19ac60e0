// Node 20 has no Promise.withResolvers (Node 22 and every current browser do); mortice and
// it-queue, which js-libp2p 2's peer store locks through, call it. Imported first by peer.mjs.
if (typeof Promise.withResolvers !== "function") {
	Promise.withResolvers = function withResolvers() {
		let resolve, reject
		const promise = new this((res, rej) => {
			resolve = res
			reject = rej
		})
		return { promise, resolve, reject }
	}
}
