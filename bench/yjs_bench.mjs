// The peer workload against Hocuspocus (Yjs), mirroring src/bin/peer_bench.rs: for each
// scene size a fresh server process, upload of an N-node × 20-parm scene, late joins, then
// per client count C push-only editors at --hz (editor 0 is the probe writer A) and one
// receiver B. Raw Hocuspocus protocol over `ws` (auth token message, y-protocols sync),
// so editors never apply what the server fans out (as the Rust editors). B applies
// updates to its Y.Doc and matches the probe values A wrote.
// Prints one JSON line per (size, clients); appends latency samples to --samples.
import { spawn } from "node:child_process"
import fs from "node:fs"
import readline from "node:readline"
import WebSocket from "ws"
import * as Y from "yjs"
import * as encoding from "lib0/encoding"
import * as decoding from "lib0/decoding"
import * as syncProtocol from "y-protocols/sync"

const args = process.argv.slice(2)
const opt = (name, dflt) => { const i = args.indexOf(name); return i >= 0 ? args[i + 1] : dflt }
const list = (s) => s.split(",").map(Number)
const NAME = opt("--name", "hocuspocus")
const NODES = list(opt("--nodes", "1000"))
const CLIENTS = list(opt("--clients", "1,10"))
const HZ = Number(opt("--hz", "60"))
const SECONDS = Number(opt("--seconds", "3"))
const JOINS = Number(opt("--joins", "3"))
const SAMPLES = opt("--samples", null)
const DATA = opt("--data", "/tmp/hocuspocus-bench")
const LATE_AFTER_MS = 5000
const LOST_AFTER_MS = 30000
const sleep = (ms) => new Promise((r) => setTimeout(r, ms))
const now = () => performance.now()

function pct(v, p) {
  if (!v.length) return NaN
  const s = [...v].sort((a, b) => a - b)
  return s[Math.round((s.length - 1) * p)]
}

function startServer() {
  const child = spawn(process.execPath, [new URL("./hocuspocus_server.mjs", import.meta.url).pathname, DATA],
    { stdio: ["ignore", "pipe", "inherit"] })
  return new Promise((resolve, reject) => {
    const rl = readline.createInterface({ input: child.stdout })
    rl.on("line", (l) => {
      const m = l.match(/^listening on (.*)$/)
      if (m) resolve({ child, addr: m[1].trim() })
    })
    child.on("exit", (c) => reject(new Error(`server exited ${c}`)))
  })
}
function stopServer(s) {
  try { s.child.kill("SIGTERM") } catch {}
  return new Promise((r) => {
    const t = setTimeout(() => { try { s.child.kill("SIGKILL") } catch {}; r() }, 3000)
    s.child.on("exit", () => { clearTimeout(t); r() })
  })
}
function procStatus(pid, key) {
  try {
    const l = fs.readFileSync(`/proc/${pid}/status`, "utf8").split("\n").find((x) => x.startsWith(key))
    return Number(l.split(/\s+/)[1]) * 1024
  } catch { return 0 }
}
function procCpu(pid) {
  try {
    const s = fs.readFileSync(`/proc/${pid}/stat`, "utf8")
    const f = s.slice(s.lastIndexOf(")") + 2).split(" ")
    return (Number(f[11]) + Number(f[12])) / 100
  } catch { return 0 }
}

// One Hocuspocus connection for one document, raw protocol.
class YConn {
  constructor(url, docName, doc, { apply = true } = {}) {
    this.url = url; this.name = docName; this.doc = doc; this.apply = apply
    this.sent = 0; this.received = 0; this.onSynced = null; this.onStatus = null
  }
  open() {
    return new Promise((resolve, reject) => {
      this.ws = new WebSocket(this.url, { perMessageDeflate: false })
      this.ws.binaryType = "nodebuffer"
      this.ws.on("open", () => {
        this.send((e) => { encoding.writeVarUint(e, 2); encoding.writeVarUint(e, 0); encoding.writeVarString(e, ""); encoding.writeVarString(e, "4.7.0") })
        resolve()
      })
      this.ws.on("error", reject)
      this.ws.on("message", (data) => this.onMessage(data))
    })
  }
  send(body) {
    const e = encoding.createEncoder()
    encoding.writeVarString(e, this.name)
    body(e)
    const buf = encoding.toUint8Array(e)
    this.sent += buf.length
    this.ws.send(buf)
  }
  step1() { this.send((e) => { encoding.writeVarUint(e, 0); syncProtocol.writeSyncStep1(e, this.doc) }) }
  update(u) { this.send((e) => { encoding.writeVarUint(e, 0); syncProtocol.writeUpdate(e, u) }) }
  onMessage(data) {
    this.received += data.length
    if (!this.apply) return
    const d = decoding.createDecoder(new Uint8Array(data))
    decoding.readVarString(d)
    const type = decoding.readVarUint(d)
    if (type === 0 || type === 4) {
      const reply = encoding.createEncoder()
      const t = syncProtocol.readSyncMessage(d, reply, this.doc, this)
      if (encoding.length(reply) > 0) this.send((e) => { encoding.writeVarUint(e, 0); encoding.writeUint8Array(e, encoding.toUint8Array(reply)) })
      if (t === 1 && this.onSynced) this.onSynced()
    } else if (type === 8 && this.onStatus) {
      this.onStatus()
    }
  }
  close() { try { this.ws.close() } catch {} }
}

function buildScene(n) {
  const doc = new Y.Doc()
  const nodes = doc.getMap("nodes")
  const per = Math.max(1, Math.floor(n / 1000))
  for (let i = 0; i < n; i += per) {
    doc.transact(() => {
      for (let j = i; j < Math.min(n, i + per); j++) {
        const node = new Y.Map()
        node.set("kind", "blender.object/MESH")
        node.set("name", `node${j}`)
        const parms = new Y.Map()
        for (let p = 0; p < 20; p++) parms.set(`p${p}`, p + 0.5)
        node.set("parms", parms)
        nodes.set(`n${j}`, node)
      }
    })
  }
  return doc
}

async function lateJoin(url, room, n) {
  const t0 = now()
  const doc = new Y.Doc()
  const c = new YConn(url, room, doc)
  await c.open()
  const done = new Promise((r) => { c.onSynced = () => { if (doc.getMap("nodes").size >= n) r() } })
  c.step1()
  await Promise.race([done, sleep(120000).then(() => { throw new Error("late join timed out") })])
  const ms = now() - t0
  c.close()
  return { ms, bytes: c.received }
}

async function propagation(url, room, sceneUpdate, n, clients) {
  const lat = []
  const probes = new Map()
  // B: full client.
  const bDoc = new Y.Doc()
  Y.applyUpdate(bDoc, sceneUpdate)
  const b = new YConn(url, room, bDoc)
  await b.open()
  const bSynced = new Promise((r) => { b.onSynced = r })
  b.step1()
  await bSynced
  const bStart = b.received
  const keys = [...bDoc.getMap("nodes").keys()].slice(0, Math.max(1, clients))
  const aParms = bDoc.getMap("nodes").get(keys[0]).get("parms")
  // A's probe i writes value i+1 to parm p{i % 20}. When B falls behind, one update can
  // carry two probes of the same parm and B only sees the later value: the earlier probe
  // arrived too (A's updates are causally ordered), so every probe of that parm up to the
  // value seen counts as received now.
  aParms.observe((ev) => {
    const t = now()
    for (const k of ev.keysChanged) {
      const v = aParms.get(k)
      if (typeof v !== "number") continue
      for (const [pv, t0] of probes) {
        if (pv <= v && `p${(pv - 1) % 20}` === k) { lat.push(t - t0); probes.delete(pv) }
      }
    }
  })
  // Editors: each its own replica of the scene, push-only.
  const editors = []
  for (let k = 0; k < clients; k++) {
    const doc = new Y.Doc()
    Y.applyUpdate(doc, sceneUpdate)
    const c = new YConn(url, room, doc, { apply: false })
    await c.open()
    const parms = doc.getMap("nodes").get(keys[k % keys.length]).get("parms")
    doc.on("update", (u, origin) => { if (origin !== c) c.update(u) })
    editors.push({ c, doc, parms, k })
  }
  await sleep(200)
  const count = Math.round(HZ * SECONDS)
  const period = 1000 / HZ
  let edits = 0
  const start = now() + 100
  await Promise.all(editors.map(async ({ c, parms, k }) => {
    const first = start + (k / clients) * period
    for (let i = 0; i < count; i++) {
      const due = first + i * period
      const wait = due - now()
      if (wait > 0) await sleep(wait)
      const v = i + 1 + k * 1e6
      if (k === 0) probes.set(v, now())
      parms.set(`p${i % 20}`, v)
      edits++
    }
  }))
  // As in peer_bench.rs: probes missing 5 s after the last edit are late, those missing
  // after LOST_AFTER_MS are lost (B keeps applying meanwhile).
  const end = now()
  let late = 0
  for (;;) {
    if (now() - end < LATE_AFTER_MS) late = probes.size
    if (probes.size === 0 || now() - end >= LOST_AFTER_MS) break
    await sleep(20)
  }
  const up = editors.reduce((s, e) => s + e.c.sent, 0)
  for (const e of editors) e.c.close()
  b.close()
  return { lat, late, lost: probes.size, edits, up, bBytes: b.received - bStart }
}

async function main() {
  const out = SAMPLES ? fs.openSync(SAMPLES, "a") : null
  for (const n of NODES) {
    let t = now()
    const scene = buildScene(n)
    const sceneUpdate = Y.encodeStateAsUpdate(scene)
    console.error(`[${NAME}] built ${n}-node scene in ${((now() - t) / 1000).toFixed(2)} s (${sceneUpdate.length} B)`)
    fs.rmSync(DATA, { recursive: true, force: true })
    const server = await startServer()
    const pid = server.child.pid
    await sleep(300)
    const rssIdle = procStatus(pid, "VmRSS:"); const cpu0 = procCpu(pid)
    const url = `ws://${server.addr}/`
    const room = `scene${n}`
    // Upload; the uploader stays connected so the document stays loaded (warm), as
    // Tandem keeps a room's documents loaded.
    t = now()
    const up = new YConn(url, room, scene)
    await up.open()
    const stored = new Promise((r) => { up.onStatus = r })
    up.step1()
    await stored
    const uploadMs = now() - t
    const joins = []
    let joinBytes = 0
    for (let j = 0; j < JOINS; j++) { const r = await lateJoin(url, room, n); joins.push(r.ms); joinBytes = r.bytes }
    console.error(`[${NAME}] ${n} nodes: upload ${uploadMs.toFixed(0)} ms, late joins ${joins.map((x) => x.toFixed(0)).join(", ")} ms`)
    const rssLoaded = procStatus(pid, "VmRSS:")
    const cpuLoad = procCpu(pid) - cpu0
    for (const clients of CLIENTS) {
      const c0 = procCpu(pid); const w0 = now(); const d0 = process.cpuUsage()
      const r = await propagation(url, room, sceneUpdate, n, clients)
      const cpu = procCpu(pid) - c0; const wall = (now() - w0) / 1000
      const d1 = process.cpuUsage(d0); const driverCpu = (d1.user + d1.system) / 1e6
      if (out !== null) for (const v of r.lat) fs.writeSync(out, `${NAME},${n},${clients},propagation,${v.toFixed(4)}\n`)
      const all = r.lat.concat(new Array(r.lost).fill(Infinity))
      const line = {
        server: NAME, nodes: n, clients, hz: HZ, seconds: SECONDS,
        // Lost probes count as infinitely late; a percentile landing on one is reported as
        // the bound (prop_censored).
        prop_p50_ms: Math.min(pct(all, 0.5), LOST_AFTER_MS), prop_p99_ms: Math.min(pct(all, 0.99), LOST_AFTER_MS),
        prop_censored: pct(all, 0.99) === Infinity, prop_lost_after_ms: LOST_AFTER_MS,
        prop_samples: r.lat.length, prop_late: r.late, prop_lost: r.lost,
        ack_p50_ms: null, ack_p99_ms: null,
        join_ms: joins, join_p50_ms: pct(joins, 0.5), join_bytes: joinBytes, upload_ms: uploadMs,
        edits: r.edits, up_bytes_per_edit: r.up / Math.max(1, r.edits), down_bytes_per_edit_b: r.bBytes / Math.max(1, r.edits),
        driver_cpu_s: driverCpu, server_cpu_s: cpu, server_cpu_pct: 100 * cpu / wall, server_cpu_load_s: cpuLoad,
        rss_idle_mb: rssIdle / 1e6, rss_loaded_mb: rssLoaded / 1e6,
        rss_after_mb: procStatus(pid, "VmRSS:") / 1e6, rss_peak_mb: procStatus(pid, "VmHWM:") / 1e6,
      }
      console.log(JSON.stringify(line))
      console.error(`[${NAME}] ${n} nodes × ${clients} clients: p50 ${line.prop_p50_ms.toFixed(2)} ms p99 ${line.prop_p99_ms.toFixed(2)} ms (${r.lat.length} samples, ${r.late} late, ${r.lost} lost), cpu ${cpu.toFixed(2)} s`)
    }
    up.close()
    await stopServer(server)
  }
  if (out !== null) fs.closeSync(out)
}

main().then(() => process.exit(0), (e) => { console.error(`yjs_bench failed: ${e.stack ?? e}`); process.exit(1) })
