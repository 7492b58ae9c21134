//! `tandem log | show | diff | blame | checkpoint | checkpoints | restore | export`: history
//! from the command line, against a running server's HTTP API (`--server`, the default) or
//! directly on a stopped server's data directory (`--data`, read-only commands only).
//!
//! Both paths produce the same JSON (see `tandem_server::history`); `--json` prints it,
//! otherwise it is rendered as a table.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use serde_json::{Value as Json, json};
use tandem_core::LogFilter;
use tandem_server::history::{self, Query};
use tandem_server::metrics::Metrics;
use tandem_server::store::Store;

/// Where the history comes from.
#[derive(clap::Args, Clone, Debug)]
pub(crate) struct Target {
    /// Room name.
    #[arg(long, env = "TANDEM_ROOM")]
    room: String,
    /// Document id [default: the room's scene].
    #[arg(long)]
    doc: Option<String>,
    /// Server base URL, http:// or https:// (trusting public CAs and the PEM in
    /// TANDEM_CA_CERT) [default: http://127.0.0.1:7890].
    #[arg(long, env = "TANDEM_SERVER", conflicts_with = "data")]
    server: Option<String>,
    /// Read a stopped server's data directory directly (read-only commands).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Access token (`tandem token create`), sent as `Authorization: Bearer`. Needed once
    /// the server has users; the changes you make are attributed to its user.
    #[arg(
        long,
        env = "TANDEM_TOKEN",
        hide_env_values = true,
        conflicts_with = "data"
    )]
    token: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Subcommand, Debug)]
pub(crate) enum HistoryCommand {
    /// History entries (a drag is one entry), oldest first.
    Log {
        #[command(flatten)]
        target: Target,
        /// Only this user's entries.
        #[arg(long)]
        user: Option<String>,
        /// Only entries ending at or after this time (ms or RFC 3339).
        #[arg(long)]
        since: Option<String>,
        /// Only entries starting at or before this time (ms or RFC 3339).
        #[arg(long)]
        until: Option<String>,
        /// Only entries touching this node.
        #[arg(long)]
        node: Option<String>,
        /// Only the last N entries.
        #[arg(long)]
        limit: Option<usize>,
    },
    /// The scene (or one node) at a version.
    Show {
        #[command(flatten)]
        target: Target,
        /// Version: latest, change hashes, t:<ms>, an RFC 3339 time, or a checkpoint name.
        #[arg(long, default_value = "latest")]
        at: String,
        /// Only this node.
        #[arg(long)]
        node: Option<String>,
    },
    /// What changed between two versions, in scene terms.
    Diff {
        #[command(flatten)]
        target: Target,
        /// Older version.
        #[arg(long)]
        from: String,
        /// Newer version.
        #[arg(long, default_value = "latest")]
        to: String,
    },
    /// Who last changed a node, or one of its parms, and when.
    Blame {
        #[command(flatten)]
        target: Target,
        /// The node.
        #[arg(long)]
        node: String,
        /// The parm.
        #[arg(long)]
        parm: Option<String>,
    },
    /// Name the current version (server only).
    Checkpoint {
        #[command(flatten)]
        target: Target,
        /// The name.
        name: String,
        /// Why.
        #[arg(long, default_value = "")]
        comment: String,
        /// Open development mode only (a server without users): attribute the change to
        /// this name [default: server]. A secured server attributes it to the token's user.
        #[arg(long = "as")]
        user: Option<String>,
    },
    /// List checkpoints.
    Checkpoints {
        #[command(flatten)]
        target: Target,
    },
    /// Restore the scene, or one subtree, to a version, as a new change (server only).
    Restore {
        #[command(flatten)]
        target: Target,
        /// The version to go back to.
        #[arg(long)]
        at: String,
        /// Only the subtree under this node.
        #[arg(long)]
        node: Option<String>,
        /// Open development mode only (a server without users): attribute the change to
        /// this name [default: server]. A secured server attributes it to the token's user.
        #[arg(long = "as")]
        user: Option<String>,
    },
    /// Write the scene at a version for a render farm job.
    Export {
        #[command(flatten)]
        target: Target,
        /// The version.
        #[arg(long, default_value = "latest")]
        at: String,
        /// Output format (json; USD follows with the USD adapter).
        #[arg(long, default_value = "json")]
        format: String,
        /// Output file [default: stdout].
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
}

impl HistoryCommand {
    fn target(&self) -> &Target {
        match self {
            Self::Log { target, .. }
            | Self::Show { target, .. }
            | Self::Diff { target, .. }
            | Self::Blame { target, .. }
            | Self::Checkpoint { target, .. }
            | Self::Checkpoints { target }
            | Self::Restore { target, .. }
            | Self::Export { target, .. } => target,
        }
    }
}

/// Run one history command; the process exit code.
pub(crate) fn run(cmd: HistoryCommand) -> anyhow::Result<()> {
    let t = cmd.target().clone();
    let doc =
        history::resolve_doc_id(&t.room, t.doc.as_deref()).map_err(|e| anyhow!("{}", e.message))?;
    let source = match &t.data {
        Some(dir) => Source::Data {
            dir: dir.clone(),
            room: t.room.clone(),
            doc: doc.to_string(),
        },
        None => {
            let base = t
                .server
                .clone()
                .unwrap_or_else(|| "http://127.0.0.1:7890".into());
            let as_user = match &cmd {
                HistoryCommand::Checkpoint { user, .. } | HistoryCommand::Restore { user, .. } => {
                    user.clone()
                }
                _ => None,
            };
            Source::Server(Api::new(
                &base,
                &t.room,
                doc.as_str(),
                t.token.clone(),
                as_user,
            )?)
        }
    };
    match cmd {
        HistoryCommand::Log {
            user,
            since,
            until,
            node,
            limit,
            ..
        } => {
            let v = match &source {
                Source::Data { .. } => {
                    let filter = LogFilter {
                        user,
                        since_ms: since.map(|s| history::parse_time(&s)).transpose()?,
                        until_ms: until.map(|s| history::parse_time(&s)).transpose()?,
                        node: node.map(|s| history::parse_node(&s)).transpose()?,
                        limit,
                    };
                    source.read(Query::Log(filter))?
                }
                Source::Server { .. } => {
                    let mut q = Vec::new();
                    push(&mut q, "user", user);
                    push(&mut q, "since", since);
                    push(&mut q, "until", until);
                    push(&mut q, "node", node);
                    push(&mut q, "limit", limit.map(|l| l.to_string()));
                    source.get(&["log"], &q)?
                }
            };
            print(&t, &v, render_log)
        }
        HistoryCommand::Show { at, node, .. } => match node {
            Some(id) => {
                let v = match &source {
                    Source::Data { .. } => source.read(Query::Node { id, at })?,
                    Source::Server { .. } => source.get(&["node", &id], &[("at", at)])?,
                };
                print(&t, &v, render_node)
            }
            None => {
                let v = source.scene(at)?;
                print(&t, &v, render_scene)
            }
        },
        HistoryCommand::Diff { from, to, .. } => {
            let v = match &source {
                Source::Data { .. } => source.read(Query::Diff { from, to })?,
                Source::Server { .. } => source.get(&["diff"], &[("from", from), ("to", to)])?,
            };
            print(&t, &v, render_diff)
        }
        HistoryCommand::Blame { node, parm, .. } => {
            let v = match &source {
                Source::Data { .. } => source.read(Query::Blame { node, parm })?,
                Source::Server { .. } => {
                    let mut q = vec![("node", node)];
                    push(&mut q, "parm", parm);
                    source.get(&["blame"], &q)?
                }
            };
            print(&t, &v, render_blame)
        }
        HistoryCommand::Checkpoints { .. } => {
            let v = match &source {
                Source::Data { .. } => source.read(Query::Checkpoints)?,
                Source::Server { .. } => source.get(&["checkpoints"], &[])?,
            };
            print(&t, &v, render_checkpoints)
        }
        HistoryCommand::Checkpoint { name, comment, .. } => {
            let v = source.post(
                &["checkpoints"],
                json!({ "name": name, "comment": comment }),
            )?;
            print(&t, &v, |v| {
                let c = &v["checkpoint"];
                format!(
                    "checkpoint {} = {} (by {})\n",
                    s(&c["name"]),
                    s(&c["version"]),
                    s(&c["author"])
                )
            })
        }
        HistoryCommand::Restore { at, node, .. } => {
            let v = source.post(&["restore"], json!({ "at": at, "node": node }))?;
            print(&t, &v, render_restore)
        }
        HistoryCommand::Export {
            at, format, output, ..
        } => {
            if format != "json" {
                bail!(
                    "unsupported export format {format:?}: only json for now (USD follows with the USD adapter)"
                );
            }
            let v = source.scene(at)?;
            let text = serde_json::to_string_pretty(&v)? + "\n";
            match output {
                Some(path) => {
                    std::fs::write(&path, text)
                        .with_context(|| format!("writing {}", path.display()))?;
                    eprintln!(
                        "wrote {} nodes to {}",
                        v["nodes"].as_array().map_or(0, Vec::len),
                        path.display()
                    );
                }
                None => std::io::stdout().write_all(text.as_bytes())?,
            }
            Ok(())
        }
    }
}

fn push(q: &mut Vec<(&'static str, String)>, k: &'static str, v: Option<String>) {
    if let Some(v) = v {
        q.push((k, v));
    }
}

enum Source {
    Server(Api),
    Data {
        dir: PathBuf,
        room: String,
        doc: String,
    },
}

/// The history routes of one document on a running server.
struct Api {
    client: reqwest::blocking::Client,
    /// `{server}/api/v1/rooms/{room}/documents/{doc}`.
    base: reqwest::Url,
    server: String,
    token: Option<String>,
    /// `X-Tandem-User` (open development mode only).
    as_user: Option<String>,
}

impl Api {
    fn new(
        server: &str,
        room: &str,
        doc: &str,
        token: Option<String>,
        as_user: Option<String>,
    ) -> anyhow::Result<Self> {
        let mut base = reqwest::Url::parse(server).with_context(|| {
            format!("--server must be an http:// or https:// URL, got {server:?}")
        })?;
        if !matches!(base.scheme(), "http" | "https") {
            bail!("--server must be an http:// or https:// URL, got {server:?}");
        }
        base.path_segments_mut()
            .map_err(|_| anyhow!("--server {server:?} cannot be a base URL"))?
            .pop_if_empty()
            .extend(["api", "v1", "rooms", room, "documents", doc]);
        let client = reqwest::blocking::Client::builder()
            .use_preconfigured_tls(tls_config()?)
            .timeout(Duration::from_secs(120))
            .build()
            .context("setting up the HTTP client")?;
        Ok(Self {
            client,
            base,
            server: server.to_owned(),
            token: token.filter(|t| !t.is_empty()),
            as_user,
        })
    }

    /// The base URL plus path segments (each percent-encoded as one segment).
    fn url(&self, segments: &[&str]) -> reqwest::Url {
        let mut url = self.base.clone();
        if let Ok(mut segs) = url.path_segments_mut() {
            segs.extend(segments);
        }
        url
    }

    fn send(&self, req: reqwest::blocking::RequestBuilder) -> anyhow::Result<Json> {
        let mut req = req.header(reqwest::header::ACCEPT, "application/json");
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(u) = &self.as_user {
            req = req.header("X-Tandem-User", u);
        }
        let resp = req.send().with_context(|| {
            format!("connecting to {} (is `tandem serve` running?)", self.server)
        })?;
        let status = resp.status();
        let body = resp
            .bytes()
            .with_context(|| format!("reading the answer from {}", self.server))?;
        let v: Json = serde_json::from_slice(&body).unwrap_or_else(
            |_| json!({ "error": String::from_utf8_lossy(&body).trim().to_string() }),
        );
        if status.is_success() {
            return Ok(v);
        }
        let msg = v["error"].as_str().unwrap_or("request failed");
        match status.as_u16() {
            401 if self.token.is_none() => bail!(
                "the server needs a token ({msg}): pass --token or set TANDEM_TOKEN (an admin makes one with `tandem token create`)"
            ),
            401 => bail!("the server refused the token: {msg}"),
            403 => {
                let rule = v["rule"]
                    .as_str()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default();
                bail!("forbidden: {msg}{rule}")
            }
            code => bail!("server answered {code}: {msg}"),
        }
    }
}

impl Source {
    fn read(&self, q: Query) -> anyhow::Result<Json> {
        let Source::Data { dir, room, doc } = self else {
            bail!("not a data directory");
        };
        if !dir.join("tandem.sqlite3").exists() {
            bail!("{} holds no Tandem store (tandem.sqlite3)", dir.display());
        }
        let store = Store::open(dir, Arc::new(Metrics::default()))
            .with_context(|| format!("opening the store in {}", dir.display()))?;
        let loaded = store.load_doc(room, doc);
        store.close();
        let loaded = loaded?.ok_or_else(|| anyhow!("no document {doc} in room {room}"))?;
        history::read(loaded.doc, &q).map_err(|e| anyhow!("{}", e.message))
    }

    fn scene(&self, at: String) -> anyhow::Result<Json> {
        match self {
            Source::Data { .. } => self.read(Query::Scene { at }),
            Source::Server { .. } => self.get(&["scene"], &[("at", at)]),
        }
    }

    fn get(&self, path: &[&str], query: &[(&str, String)]) -> anyhow::Result<Json> {
        let Source::Server(api) = self else {
            bail!("not a server");
        };
        api.send(api.client.get(api.url(path)).query(query))
    }

    fn post(&self, path: &[&str], body: Json) -> anyhow::Result<Json> {
        let Source::Server(api) = self else {
            bail!(
                "checkpoint and restore write a change: they go through a running server (--server), not --data"
            );
        };
        api.send(api.client.post(api.url(path)).json(&body))
    }
}

/// The rustls configuration for `--server https://…`: Mozilla's public roots plus the PEM
/// named by `TANDEM_CA_CERT` (a studio's own CA or a self-signed server certificate).
fn tls_config() -> anyhow::Result<rustls::ClientConfig> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = std::env::var_os("TANDEM_CA_CERT").filter(|p| !p.is_empty()) {
        let path = std::path::PathBuf::from(path);
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&path)
            .and_then(|it| it.collect::<Result<_, _>>())
            .with_context(|| format!("reading TANDEM_CA_CERT {}", path.display()))?;
        if certs.is_empty() {
            bail!(
                "TANDEM_CA_CERT {}: no PEM certificate in it",
                path.display()
            );
        }
        for c in certs {
            roots
                .add(c)
                .with_context(|| format!("TANDEM_CA_CERT {}", path.display()))?;
        }
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}

fn print(t: &Target, v: &Json, table: impl Fn(&Json) -> String) -> anyhow::Result<()> {
    let text = if t.json {
        serde_json::to_string_pretty(v)? + "\n"
    } else {
        table(v)
    };
    std::io::stdout().write_all(text.as_bytes())?;
    Ok(())
}

/// A JSON value as plain text (`-` for null).
fn s(v: &Json) -> String {
    match v {
        Json::Null => "-".into(),
        Json::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// ms since the epoch as `YYYY-MM-DD HH:MM:SS` UTC.
fn time(ms: &Json) -> String {
    let Some(ms) = ms.as_i64() else {
        return "-".into();
    };
    let secs = ms.div_euclid(1000);
    let (days, sod) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

fn short(v: &str) -> String {
    v.split(',')
        .map(|h| h.chars().take(12).collect::<String>())
        .collect::<Vec<_>>()
        .join(",")
}

fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut l = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                l.push_str(c);
            } else {
                l.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        l.trim_end().to_owned() + "\n"
    };
    let mut out = line(header.iter().map(|h| h.to_string()).collect());
    for r in rows {
        out.push_str(&line(r));
    }
    out
}

fn render_log(v: &Json) -> String {
    let rows = v["entries"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            let nodes = e["nodes"].as_array().map_or(0, Vec::len);
            vec![
                short(&s(&e["version"])),
                time(&e["end_ms"]),
                s(&e["author"]),
                s(&e["changes"]),
                nodes.to_string(),
                s(&e["message"]),
            ]
        })
        .collect();
    table(
        &[
            "VERSION",
            "TIME (UTC)",
            "AUTHOR",
            "CHANGES",
            "NODES",
            "MESSAGE",
        ],
        rows,
    )
}

fn render_scene(v: &Json) -> String {
    let rows = v["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|n| {
            vec![
                s(&n["id"]),
                s(&n["kind"]),
                s(&n["name"]),
                s(&n["parent"]),
                n["parms"].as_object().map_or(0, |m| m.len()).to_string(),
            ]
        })
        .collect();
    table(&["ID", "KIND", "NAME", "PARENT", "PARMS"], rows)
}

fn render_node(v: &Json) -> String {
    let n = &v["node"];
    let mut out = format!(
        "{} {} {:?}\n  parent: {}\n  version: {}\n",
        s(&n["id"]),
        s(&n["kind"]),
        s(&n["name"]),
        s(&n["parent"]),
        short(&s(&v["version"]))
    );
    for (k, p) in n["parms"].as_object().into_iter().flatten() {
        out.push_str(&format!("  {k} = {p}\n"));
    }
    out
}

fn render_diff(v: &Json) -> String {
    let mut out = String::new();
    for e in v["events"].as_array().into_iter().flatten() {
        let id = if e["id"].is_null() {
            s(&e["node"]["id"])
        } else {
            s(&e["id"])
        };
        let what = match e["type"].as_str().unwrap_or("") {
            "NodeAdded" => format!(
                "added {:?} ({})",
                s(&e["node"]["name"]),
                s(&e["node"]["kind"])
            ),
            "NodeRemoved" => format!("removed {:?}", s(&e["old"]["name"])),
            "NodeRenamed" => format!("renamed {:?} -> {:?}", s(&e["old"]), s(&e["name"])),
            "NodeMoved" => format!(
                "moved under {} (was {})",
                s(&e["parent"]),
                s(&e["old"]["parent"])
            ),
            "ParmsChanged" => e["changed"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, new)| format!("{k}: {} -> {}", s(&e["old"][k]), s(new)))
                .collect::<Vec<_>>()
                .join("; "),
            other => format!("{other} {}", e),
        };
        out.push_str(&format!("{id}  {what}\n"));
    }
    if out.is_empty() {
        out.push_str("no differences\n");
    }
    out
}

fn render_blame(v: &Json) -> String {
    let b = &v["blame"];
    let what = match &v["parm"] {
        Json::Null => format!("node {}", s(&v["node"])),
        p => format!("parm {} of node {}", s(p), s(&v["node"])),
    };
    format!(
        "{what}: last changed by {} at {} UTC in {}{}\n",
        s(&b["author"]),
        time(&b["time_ms"]),
        short(&s(&b["hash"])),
        b["message"]
            .as_str()
            .map(|m| format!(" ({m})"))
            .unwrap_or_default()
    )
}

fn render_checkpoints(v: &Json) -> String {
    let rows = v["checkpoints"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            vec![
                s(&c["name"]),
                short(&s(&c["version"])),
                time(&c["time_ms"]),
                s(&c["author"]),
                s(&c["comment"]),
            ]
        })
        .collect();
    table(
        &["NAME", "VERSION", "TIME (UTC)", "AUTHOR", "COMMENT"],
        rows,
    )
}

fn render_restore(v: &Json) -> String {
    match v["hash"].as_str() {
        None => format!(
            "nothing to restore: the scene already matches {}\n",
            short(&s(&v["restored_to"]))
        ),
        Some(h) => format!(
            "restored {} to {}: {} created, {} removed, {} fields changed; new change {}\n",
            if v["node"].is_null() {
                "the scene".to_owned()
            } else {
                format!("the subtree under {}", s(&v["node"]))
            },
            short(&s(&v["restored_to"])),
            s(&v["created"]),
            s(&v["removed"]),
            s(&v["changed"]),
            short(h)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_render() {
        assert_eq!(time(&json!(0)), "1970-01-01 00:00:00");
        assert_eq!(time(&json!(1_700_000_000_000i64)), "2023-11-14 22:13:20");
        assert_eq!(time(&json!(951_782_400_000i64)), "2000-02-29 00:00:00");
    }

    #[test]
    fn segments_are_encoded_one_by_one() {
        let api = Api::new(
            "http://127.0.0.1:7890/prefix/",
            "shot-010",
            "scene",
            None,
            None,
        )
        .unwrap();
        assert_eq!(
            api.url(&["node", "a b/c"]).as_str(),
            "http://127.0.0.1:7890/prefix/api/v1/rooms/shot-010/documents/scene/node/a%20b%2Fc"
        );
        assert!(Api::new("ftp://x", "r", "scene", None, None).is_err());
    }
}
