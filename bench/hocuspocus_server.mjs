// Hocuspocus 4.7 (Yjs) server for the peer benchmark: 127.0.0.1, port chosen at runtime,
// documents persisted as one Yjs update file per document in argv[2] through the
// onLoadDocument / onStoreDocument hooks (Hocuspocus has no built-in store; its default
// store debounce is 2 s, so nothing here is acknowledged as durable). Prints
// `listening on HOST:PORT` first.
import { Server } from "@hocuspocus/server"
import * as Y from "yjs"
import fs from "node:fs"
import path from "node:path"

const dir = process.argv[2] ?? "hocuspocus-data"
fs.mkdirSync(dir, { recursive: true })
const file = (name) => path.join(dir, encodeURIComponent(name) + ".yjs")
const server = new Server({
  port: 0,
  address: "127.0.0.1",
  quiet: true,
  stopOnSignals: true,
  async onLoadDocument({ documentName, document }) {
    const f = file(documentName)
    if (fs.existsSync(f)) Y.applyUpdate(document, fs.readFileSync(f))
    return document
  },
  async onStoreDocument({ documentName, document }) {
    fs.writeFileSync(file(documentName), Y.encodeStateAsUpdate(document))
  },
})
await server.listen()
console.log(`listening on 127.0.0.1:${server.address.port}`)
