// A stock automerge-repo 2.5.6 client (Node, WebSocketClientAdapter) driven by
// sync-server/tests/interop_js.rs. Usage: node js_client.mjs WS_URL DOC_ID
// It finds DOC_ID (created by the Rust side), prints it, edits it, creates a new document,
// prints that id, and stays connected until its stdin closes.
import { Repo } from "@automerge/automerge-repo";
import { WebSocketClientAdapter } from "@automerge/automerge-repo-network-websocket";

const [url, docId] = process.argv.slice(2);
const out = (o) => process.stdout.write(JSON.stringify(o) + "\n");
const repo = new Repo({ network: [new WebSocketClientAdapter(url)], sharePolicy: async () => true });

process.stdin.resume();
process.stdin.on("end", () => process.exit(0));
setTimeout(() => { out({ event: "timeout" }); process.exit(2); }, 60_000).unref();

try {
  const handle = await repo.find(docId);
  out({ event: "found", doc: handle.doc() });
  handle.change((d) => { d.from_js = "hi from js"; d.count = 1; });
  const created = repo.create({ created_by: "js", n: 7 });
  out({ event: "created", id: created.documentId });
} catch (e) {
  out({ event: "error", message: String(e) });
  process.exit(1);
}
