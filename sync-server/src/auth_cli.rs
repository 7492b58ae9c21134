//! `tandem user ...` and `tandem token ...`: manage who may join, in the store of a data
//! directory. The server need not be stopped; a running server sees changes at the next
//! connection.

use std::path::PathBuf;

use anyhow::{Context as _, bail};
use clap::Subcommand;
use tandem_core::Role;
use tandem_server::config::DEFAULT_DATA_DIR;
use tandem_server::store::Auth;
use tandem_server::store::auth::parse_ttl;

/// Where the store is, and how to print.
#[derive(clap::Args)]
pub(crate) struct Common {
    /// Data directory holding the store [default: ./tandem-data].
    #[arg(long, env = "TANDEM_DATA", default_value = DEFAULT_DATA_DIR)]
    data: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
pub(crate) enum UserCmd {
    /// Add a user. Once any user exists, every connection needs a token.
    Add {
        /// User name (1-64 of A-Z a-z 0-9 . _ - @).
        name: String,
        #[command(flatten)]
        common: Common,
    },
    /// List users and how many live tokens each has.
    List {
        #[command(flatten)]
        common: Common,
    },
}

#[derive(Subcommand)]
pub(crate) enum TokenCmd {
    /// Create a token and print it (it is stored hashed and cannot be shown again).
    Create {
        /// The user it speaks for.
        #[arg(long)]
        user: String,
        /// The room it opens, or `*` for every room.
        #[arg(long)]
        room: String,
        /// admin, editor or viewer.
        #[arg(long, default_value = "editor")]
        role: String,
        /// Lifetime: 90s, 15m, 12h, 30d, 2w. Without it the token never expires.
        #[arg(long)]
        expires: Option<String>,
        #[command(flatten)]
        common: Common,
    },
    /// List tokens (never their secrets).
    List {
        /// Only this user's.
        #[arg(long)]
        user: Option<String>,
        #[command(flatten)]
        common: Common,
    },
    /// Revoke a token, by the id `token list` shows or by the token itself.
    Revoke {
        /// Token id or token.
        token: String,
        #[command(flatten)]
        common: Common,
    },
}

fn open(common: &Common) -> anyhow::Result<Auth> {
    Auth::open(&common.data).with_context(|| format!("opening {}", common.data.display()))
}

fn json(v: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

pub(crate) fn user(cmd: UserCmd) -> anyhow::Result<()> {
    match cmd {
        UserCmd::Add { name, common } => {
            open(&common)?.add_user(&name)?;
            if common.json {
                json(&serde_json::json!({ "user": name }))?;
            } else {
                println!("added user {name}");
            }
        }
        UserCmd::List { common } => {
            let users = open(&common)?.list_users()?;
            if common.json {
                json(&users)?;
            } else if users.is_empty() {
                println!("no users: the server runs in open development mode (loopback only)");
            } else {
                for u in users {
                    println!("{}\t{} live token(s)", u.name, u.active_tokens);
                }
            }
        }
    }
    Ok(())
}

pub(crate) fn token(cmd: TokenCmd) -> anyhow::Result<()> {
    match cmd {
        TokenCmd::Create {
            user,
            room,
            role,
            expires,
            common,
        } => {
            let role: Role = role.parse()?;
            let ttl = match expires.as_deref() {
                Some(e) => Some(
                    parse_ttl(e)
                        .with_context(|| format!("--expires {e:?}: use e.g. 90s, 15m, 12h, 30d"))?,
                ),
                None => None,
            };
            if room != "*" && !tandem_core::valid_room_name(&room) {
                bail!("room names are 1-128 of A-Z a-z 0-9 . _ - (or * for every room)");
            }
            let (row, secret) = open(&common)?.create_token(&user, &room, role, ttl)?;
            if common.json {
                json(&serde_json::json!({ "token": secret, "info": row }))?;
            } else {
                println!("{secret}");
                eprintln!(
                    "token {} for {} as {} in room {}{} (shown once; store it now)",
                    row.id,
                    row.user,
                    row.role,
                    row.room,
                    match ttl {
                        Some(_) => format!(", expires in {}", expires.unwrap_or_default()),
                        None => ", never expires".into(),
                    }
                );
            }
        }
        TokenCmd::List { user, common } => {
            let rows = open(&common)?.list_tokens(user.as_deref())?;
            if common.json {
                json(&rows)?;
            } else {
                for r in rows {
                    println!(
                        "{}\t{}\t{}\t{}\t{}",
                        r.id,
                        r.user,
                        r.room,
                        r.role,
                        if r.revoked {
                            "revoked".to_owned()
                        } else {
                            r.expires_ms
                                .map(|e| format!("expires at {e} ms"))
                                .unwrap_or_else(|| "no expiry".into())
                        }
                    );
                }
            }
        }
        TokenCmd::Revoke { token, common } => {
            let revoked = open(&common)?.revoke(&token)?;
            if common.json {
                json(&serde_json::json!({ "revoked": revoked }))?;
            } else if revoked {
                println!("revoked");
            } else {
                bail!("no such live token");
            }
        }
    }
    Ok(())
}
