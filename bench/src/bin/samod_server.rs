//! A samod 0.16 sync server for the peer benchmark: WebSocket on 127.0.0.1 (port from
//! argv[1], 0 = any), filesystem storage in argv[2] (the automerge-repo nodefs layout).
//! Prints `listening on ADDR` first, like `tandem serve`.

use std::io::Write;

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let port = std::env::args().nth(1).unwrap_or_else(|| "0".into());
    let dir = std::env::args()
        .nth(2)
        .unwrap_or_else(|| "samod-data".into());
    let repo = samod::Repo::build_tokio()
        .with_storage(samod::storage::TokioFilesystemStorage::new(&dir))
        .load()
        .await;
    let listener = tokio::net::TcpListener::bind(format!("127.0.0.1:{port}"))
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let acceptor = repo
        .make_acceptor(samod::Url::parse(&format!("ws://{addr}")).expect("url"))
        .expect("acceptor");
    println!("listening on {addr}");
    std::io::stdout().flush().ok();
    loop {
        tokio::select! {
            r = listener.accept() => {
                let Ok((tcp, _)) = r else { continue };
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let _ = tcp.set_nodelay(true);
                    if let Ok(ws) = tokio_tungstenite::accept_async(tcp).await {
                        // Binary frames <-> samod's byte messages (what samod's own
                        // `accept_tungstenite` does; pings/pongs are handled by tungstenite).
                        let (sink, stream) = ws.split();
                        let stream = Box::pin(stream.filter_map(|m| async move {
                            match m {
                                Ok(Message::Binary(b)) => Some(Ok(b.to_vec())),
                                Ok(Message::Close(_)) => None,
                                Ok(_) => None,
                                Err(e) => Some(Err::<Vec<u8>, WsError>(e)),
                            }
                        }));
                        let sink = Box::pin(sink.with(|v: Vec<u8>| {
                            futures_util::future::ready(Ok::<_, WsError>(Message::Binary(v.into())))
                        }));
                        let _ = acceptor.accept(samod::Transport::new(stream, sink));
                    }
                });
            }
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    repo.stop().await;
}
