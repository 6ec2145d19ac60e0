"""A py-libp2p peer for the interop suite, driven over stdin/stdout in JSON lines.

    python peer.py [--server] [--transport tcp|ws]

It prints {"event": "ready", "peer": ID, "addrs": [...]} once listening, then reads one command
a line ({"id": N, "op": ...}) and answers each with one line carrying the same id. With
--server it runs py-libp2p's RendezvousService and prints {"event": "discover", "ns": ...,
"cookie": HEX, "returned": N} for every DISCOVER it answers. Without it the peer is a client,
through py-libp2p's RendezvousClient:

    register   {server, ns, ttl?}                -> {ttl}
    discover   {server, ns, limit?, cookie?}     -> {peers: [{peer, addrs}], cookie}
    unregister {server, ns}                      -> {}
    stop       {}                                -> {} and exits 0

Records are py-libp2p 0.8's unsigned PeerInfo; cookies travel as hex.
"""

import argparse
import json
import logging
import sys

import multiaddr
import trio

from libp2p import new_host
from libp2p.discovery.rendezvous import RendezvousClient, RendezvousService
from libp2p.peer.peerinfo import info_from_p2p_addr


def out(value):
    sys.stdout.write(json.dumps(value) + "\n")
    sys.stdout.flush()


def peers_of(infos):
    return [
        {"peer": str(info.peer_id), "addrs": [str(a) for a in info.addrs]}
        for info in infos
    ]


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--server", action="store_true")
    parser.add_argument("--transport", choices=["tcp", "ws"], default="tcp")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)

    listen = "/ip4/127.0.0.1/tcp/0" + ("/ws" if args.transport == "ws" else "")
    host = new_host(listen_addrs=[multiaddr.Multiaddr(listen)])
    async with host.run([multiaddr.Multiaddr(listen)]):
        if args.server:
            service = RendezvousService(host)
            answer = service._handle_discover

            # Every DISCOVER's cookie as the service receives it.
            def handle_discover(peer_id, message):
                response = answer(peer_id, message)
                out(
                    {
                        "event": "discover",
                        "ns": message.ns,
                        "cookie": message.cookie.hex(),
                        "returned": len(response.discoverResponse.registrations),
                    }
                )
                return response

            service._handle_discover = handle_discover

        me = host.get_id()
        out(
            {
                "event": "ready",
                "peer": str(me),
                "addrs": [str(a) for a in host.get_addrs()],
            }
        )

        clients = {}

        async def client_for(server):
            info = info_from_p2p_addr(multiaddr.Multiaddr(server))
            await host.connect(info)
            if info.peer_id not in clients:
                clients[info.peer_id] = RendezvousClient(host, info.peer_id)
            return clients[info.peer_id]

        async def run(command):
            op = command["op"]
            if op == "register":
                client = await client_for(command["server"])
                ttl = await client.register(command["ns"], command.get("ttl", 7200))
                return {"ttl": ttl}
            if op == "discover":
                client = await client_for(command["server"])
                peers, cookie = await client.discover(
                    command["ns"],
                    command.get("limit", 100),
                    bytes.fromhex(command.get("cookie", "")),
                )
                return {"peers": peers_of(peers), "cookie": cookie.hex()}
            if op == "unregister":
                client = await client_for(command["server"])
                await client.unregister(command["ns"])
                return {}
            if op == "stop":
                return {}
            raise ValueError(f"unknown op {op}")

        stdin = trio.wrap_file(sys.stdin)
        while True:
            line = await stdin.readline()
            if line == "":
                return
            if not line.strip():
                continue
            command = json.loads(line)
            try:
                out({"id": command["id"], "ok": True, **(await run(command))})
            except Exception as error:  # the test reads the failure
                out({"id": command["id"], "ok": False, "error": repr(error)})
            if command["op"] == "stop":
                return


if __name__ == "__main__":
    trio.run(main)
