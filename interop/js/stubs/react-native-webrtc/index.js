// A stand-in (see ../README.md): the names @libp2p/webrtc imports; any use throws.
const absent = () => {
	throw new Error("stubbed in the interop suite: @libp2p/webrtc runs in the browser only")
}
class Absent {
	constructor() {
		absent()
	}
}
export const IceUdpMuxListener = Absent
export const PeerConnection = Absent
export const RTCPeerConnection = Absent
export const RTCSessionDescription = Absent
export const RTCIceCandidate = Absent
export default new Proxy({}, { get: absent })
