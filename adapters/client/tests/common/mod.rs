//! The real `tandem` server binary on 127.0.0.1, with a real data directory.

#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tandem_client::{Node, NodeId, Options, Session, Value};

pub const T: Duration = Duration::from_secs(20);

/// The server binary: `$TANDEM_BIN`, else `target/<profile>/tandem` beside this test.
pub fn server_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("TANDEM_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("test exe path");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let bin = dir.join("tandem");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build -p tandem-server --bin tandem` (or set TANDEM_BIN)",
        bin.display()
    );
    bin
}

pub struct Server {
    child: Option<Child>,
    pub addr: String,
    pub data: PathBuf,
}

impl Server {
    pub fn start(data: &Path) -> Self {
        Self::start_on(data, "127.0.0.1:0")
    }

    pub fn start_on(data: &Path, listen: &str) -> Self {
        let mut child = Command::new(server_bin())
            .args(["serve", "--listen", listen, "--data"])
            .arg(data)
            .env(
                "RUST_LOG",
                std::env::var("TANDEM_TEST_SERVER_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn tandem serve");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("read the listening line");
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_owned();
        Self {
            child: Some(child),
            addr,
            data: data.to_owned(),
        }
    }

    pub fn url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    /// kill -9 and reap.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts again on the same address and data directory.
    pub fn restart(&mut self) {
        self.kill();
        let again = Self::start_on(&self.data.clone(), &self.addr.clone());
        *self = again;
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn opts(dir: &Path) -> Options {
    let mut o = Options::new(dir);
    o.backoff_base = Duration::from_millis(50);
    o.backoff_max = Duration::from_millis(400);
    o.connect_timeout = Duration::from_secs(2);
    o
}

pub fn connect(url: &str, room: &str, user: &str, dir: &Path) -> Session {
    Session::connect(url, room, user, opts(dir)).expect("connect")
}

pub fn node(name: &str) -> Node {
    Node::new(NodeId::new_v4(), "test/box", name)
}

pub fn with(mut n: Node, parm: &str, v: f64) -> Node {
    n.parms.insert(parm.into(), Value::Float(v));
    n
}
