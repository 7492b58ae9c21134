// automerge-repo 2.5.6 sync server (the shape of automerge-repo-sync-server): a Repo on a
// NodeWSServerAdapter with NodeFSStorageAdapter, sharePolicy false. Bound to 127.0.0.1 on
// a port chosen at runtime; prints `listening on HOST:PORT` first.
import { Repo } from "@automerge/automerge-repo"
import { NodeWSServerAdapter } from "@automerge/automerge-repo-network-websocket"
import { NodeFSStorageAdapter } from "@automerge/automerge-repo-storage-nodefs"
import { WebSocketServer } from "ws"

const dir = process.argv[2] ?? "amrepo-data"
const wss = new WebSocketServer({ host: "127.0.0.1", port: 0 })
const repo = new Repo({
  network: [new NodeWSServerAdapter(wss)],
  storage: new NodeFSStorageAdapter(dir),
  peerId: `amrepo-server-${process.pid}`,
  sharePolicy: async () => false,
})
wss.on("listening", () => console.log(`listening on 127.0.0.1:${wss.address().port}`))
const stop = () => { wss.close(); process.exit(0) }
process.on("SIGTERM", stop)
process.on("SIGINT", stop)
void repo
