//! The one background tokio runtime of the process.
//!
//! Hosts such as Blender own the main thread and have no event loop we may use, so the
//! network runs on two worker threads started on first use and kept for the life of the
//! process (measured: a runtime on background threads keeps running inside bpy).

use std::sync::OnceLock;

use tokio::runtime::{Builder, Runtime};

static RUNTIME: OnceLock<Runtime> = OnceLock::new();

/// The process-wide runtime.
pub(crate) fn handle() -> &'static Runtime {
    RUNTIME.get_or_init(|| {
        Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("tandem-client")
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("cannot start the tandem client runtime: {e}"))
    })
}
