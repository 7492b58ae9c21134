//! Watch a room live: joins, then prints every scene event, presence change and chat line
//! as it arrives, plus connection state changes.
//!
//! ```text
//! cargo run -p tandem-client --example watch -- ws://127.0.0.1:7890 shot-010 [DOC_ID]
//! ```
//! Replicas go to `$TANDEM_REPLICA_DIR` (default: a `tandem-watch` folder in the temp dir).
//! Stop with Ctrl-C.

use std::time::Duration;

use tandem_client::{Options, Session};

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (url, room) = match args.as_slice() {
        [url, room, ..] => (url.as_str(), room.as_str()),
        _ => anyhow::bail!("usage: watch URL ROOM [DOC_ID]"),
    };
    let dir = std::env::var_os("TANDEM_REPLICA_DIR")
        .map(Into::into)
        .unwrap_or_else(|| std::env::temp_dir().join("tandem-watch"));
    let user = format!("watch-{}", std::process::id());
    let session = Session::connect(url, room, &user, Options::new(dir))?;
    let scene = session.open_scene(args.get(2).map(String::as_str))?;
    println!("watching room {room:?}, scene {}", scene.id());
    let mut state = session.state();
    println!("state: {}", state.as_str());
    let mut present: Vec<String> = Vec::new();
    loop {
        for e in scene.wait_events(Duration::from_millis(250)) {
            println!("event: {}", serde_json::to_string(&e)?);
        }
        for line in session.drain_chat() {
            println!(
                "chat: <{}> {}",
                line.user.as_deref().unwrap_or("?"),
                line.text
            );
        }
        let now: Vec<String> = scene
            .presence()
            .into_iter()
            .map(|p| format!("{} {}", p.user, p.state))
            .collect();
        if now != present {
            println!("presence: {now:?}");
            present = now;
        }
        if session.state() != state {
            state = session.state();
            match session.last_error() {
                Some(e) if state.as_str() != "connected" => {
                    println!("state: {} ({e})", state.as_str())
                }
                _ => println!("state: {}", state.as_str()),
            }
        }
    }
}
