//! The `tandem` Python module (native part `tandem._tandem`).
//!
//! A thin layer over `tandem-client`: Python values become `serde_json` values and then core
//! types (so the JSON forms documented in `tandem-core`'s `value` module are the Python
//! forms too), and every call that may wait or do real work runs with the GIL released
//! (`Python::detach`), so a host's other Python threads keep running.

use std::time::Duration;

use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};
use serde_json::Value as Json;
use tandem_client as client;

create_exception!(
    _tandem,
    TandemError,
    PyException,
    "Base class of every error raised by tandem."
);
create_exception!(
    _tandem,
    InvalidUrl,
    TandemError,
    "The server URL is not ws:// or wss://."
);
create_exception!(
    _tandem,
    Unreachable,
    TandemError,
    "The server could not be reached."
);
create_exception!(
    _tandem,
    VersionMismatch,
    TandemError,
    "The server speaks an incompatible protocol version."
);
create_exception!(
    _tandem,
    Protocol,
    TandemError,
    "The server refused or broke the protocol."
);
create_exception!(
    _tandem,
    ServerRefused,
    TandemError,
    "The server answered a request with an error code."
);
create_exception!(
    _tandem,
    Replica,
    TandemError,
    "A local replica file could not be read or written."
);
create_exception!(
    _tandem,
    BadInput,
    TandemError,
    "The scene refused the host's input (bad node, value or duplicate id)."
);
create_exception!(
    _tandem,
    InvalidArgument,
    TandemError,
    "An invalid argument."
);
create_exception!(_tandem, Closed, TandemError, "The session is closed.");
create_exception!(
    _tandem,
    Unauthorized,
    TandemError,
    "The server refused the session's token (missing, unknown, expired, revoked or for another room); the session stopped retrying."
);
create_exception!(
    _tandem,
    Forbidden,
    TandemError,
    "The rules refuse this action (a viewer, a node locked by someone else, an owner-only action)."
);
create_exception!(
    _tandem,
    Tls,
    TandemError,
    "The TLS handshake failed (most often: the server's certificate is not trusted; pass ca_cert=)."
);

fn err(e: client::Error) -> PyErr {
    let msg = e.to_string();
    match e {
        client::Error::InvalidUrl { .. } => InvalidUrl::new_err(msg),
        client::Error::Unreachable(_) => Unreachable::new_err(msg),
        client::Error::VersionMismatch(_) => VersionMismatch::new_err(msg),
        client::Error::Protocol(_) => Protocol::new_err(msg),
        client::Error::ServerRefused { .. } => ServerRefused::new_err(msg),
        client::Error::Replica { .. } => Replica::new_err(msg),
        client::Error::BadInput(_) => BadInput::new_err(msg),
        client::Error::InvalidArgument(_) => InvalidArgument::new_err(msg),
        client::Error::Closed => Closed::new_err(msg),
        client::Error::Unauthorized(_) => Unauthorized::new_err(msg),
        client::Error::Forbidden(_) => Forbidden::new_err(msg),
        client::Error::Tls(_) => Tls::new_err(msg),
        other => TandemError::new_err(other.to_string()),
    }
}

// ------------------------------------------------------------------ values

/// Python → JSON. Dicts, lists/tuples, str, int, float, bool, None; any other object is
/// read through its `__dict__` (plain objects and dataclasses).
fn to_json(obj: &Bound<'_, PyAny>) -> PyResult<Json> {
    if obj.is_none() {
        return Ok(Json::Null);
    }
    if let Ok(b) = obj.cast::<PyBool>() {
        return Ok(Json::Bool(b.is_true()));
    }
    if obj.cast::<PyInt>().is_ok() {
        return Ok(Json::from(obj.extract::<i64>()?));
    }
    if let Ok(f) = obj.cast::<PyFloat>() {
        return Ok(serde_json::Number::from_f64(f.value())
            .map(Json::Number)
            .unwrap_or(Json::Null));
    }
    if let Ok(s) = obj.cast::<PyString>() {
        return Ok(Json::String(s.extract::<String>()?));
    }
    if let Ok(d) = obj.cast::<PyDict>() {
        let mut m = serde_json::Map::with_capacity(d.len());
        for (k, v) in d.iter() {
            let key = match k.cast::<PyString>() {
                Ok(s) => s.extract::<String>()?,
                Err(_) => k.str()?.extract::<String>()?,
            };
            m.insert(key, to_json(&v)?);
        }
        return Ok(Json::Object(m));
    }
    if let Ok(l) = obj.cast::<PyList>() {
        return l
            .iter()
            .map(|v| to_json(&v))
            .collect::<PyResult<_>>()
            .map(Json::Array);
    }
    if let Ok(t) = obj.cast::<PyTuple>() {
        return t
            .iter()
            .map(|v| to_json(&v))
            .collect::<PyResult<_>>()
            .map(Json::Array);
    }
    if let Ok(d) = obj.getattr("__dict__") {
        return to_json(&d);
    }
    Err(PyTypeError::new_err(format!(
        "cannot convert {} to a scene value",
        obj.get_type().name()?
    )))
}

/// JSON → Python. Integers stay int, floats stay float.
fn to_py<'py>(py: Python<'py>, v: &Json) -> PyResult<Bound<'py, PyAny>> {
    Ok(match v {
        Json::Null => py.None().into_bound(py),
        Json::Bool(b) => PyBool::new(py, *b).to_owned().into_any(),
        Json::Number(n) => {
            if let Some(i) = n.as_i64() {
                i.into_pyobject(py)?.into_any()
            } else if let Some(u) = n.as_u64() {
                u.into_pyobject(py)?.into_any()
            } else {
                n.as_f64().unwrap_or(f64::NAN).into_pyobject(py)?.into_any()
            }
        }
        Json::String(s) => PyString::new(py, s).into_any(),
        Json::Array(a) => {
            let l = PyList::empty(py);
            for x in a {
                l.append(to_py(py, x)?)?;
            }
            l.into_any()
        }
        Json::Object(m) => {
            let d = PyDict::new(py);
            for (k, x) in m {
                d.set_item(k, to_py(py, x)?)?;
            }
            d.into_any()
        }
    })
}

fn ser<T: serde::Serialize>(py: Python<'_>, v: &T) -> PyResult<Py<PyAny>> {
    let j = serde_json::to_value(v).map_err(|e| PyValueError::new_err(e.to_string()))?;
    Ok(to_py(py, &j)?.unbind())
}

fn nodes_from(obj: &Bound<'_, PyAny>) -> PyResult<(Vec<client::Node>, bool)> {
    // A snapshot dict ({"nodes": [...]}) means "this is the whole scene".
    let (list, full) = match obj.cast::<PyDict>() {
        Ok(d) => match d.get_item("nodes")? {
            Some(n) => (n, true),
            None => (obj.clone(), false),
        },
        Err(_) => (obj.clone(), false),
    };
    let mut out = Vec::new();
    for item in list.try_iter()? {
        let item = item?;
        let j = to_json(&item)?;
        let node: client::Node = serde_json::from_value(j)
            .map_err(|e| BadInput::new_err(format!("invalid node: {e}")))?;
        out.push(node);
    }
    Ok((out, full))
}

fn secs(t: f64) -> PyResult<Duration> {
    if !(t.is_finite() && t >= 0.0) {
        return Err(PyValueError::new_err(
            "timeout must be a finite number of seconds >= 0",
        ));
    }
    Ok(Duration::from_secs_f64(t))
}

fn node_id(id: &str) -> PyResult<client::NodeId> {
    id.parse()
        .map_err(|_| BadInput::new_err(format!("not a node id: {id:?}")))
}

fn client_event_dict(py: Python<'_>, e: &client::ClientEvent) -> PyResult<Py<PyAny>> {
    let d = PyDict::new(py);
    match e {
        client::ClientEvent::Refused {
            doc,
            node,
            parm,
            field,
            rule,
            message,
        } => {
            d.set_item("type", "Refused")?;
            d.set_item("doc", doc)?;
            d.set_item("node", node.map(|n| n.to_string()))?;
            d.set_item("parm", parm)?;
            d.set_item("field", field)?;
            d.set_item("rule", rule)?;
            d.set_item("message", message)?;
        }
        client::ClientEvent::Stopped { kind, message } => {
            d.set_item("type", "Stopped")?;
            d.set_item("kind", *kind)?;
            d.set_item("message", message)?;
        }
        client::ClientEvent::Role { role } => {
            d.set_item("type", "Role")?;
            d.set_item("role", role.to_string())?;
        }
        other => {
            d.set_item("type", "Other")?;
            d.set_item("message", format!("{other:?}"))?;
        }
    }
    Ok(d.into_any().unbind())
}

fn refusal_dict(py: Python<'_>, r: &client::Refusal) -> PyResult<Py<PyAny>> {
    let d = PyDict::new(py);
    d.set_item("node", r.node.map(|n| n.to_string()))?;
    d.set_item("parm", &r.parm)?;
    d.set_item("field", &r.field)?;
    d.set_item("rule", &r.rule)?;
    d.set_item("message", &r.message)?;
    d.set_item("by_server", r.by_server)?;
    Ok(d.into_any().unbind())
}

fn chat_dict(py: Python<'_>, l: &client::ChatLine) -> PyResult<Py<PyAny>> {
    let d = PyDict::new(py);
    d.set_item("id", l.id)?;
    d.set_item("user", l.user.clone())?;
    d.set_item("text", &l.text)?;
    d.set_item("timestamp", l.timestamp)?;
    Ok(d.into_any().unbind())
}

// ------------------------------------------------------------------ Session

/// A connection to one room of a Tandem server. Create it with :func:`tandem.connect`.
///
/// The connection is made and kept in the background (reconnecting with backoff); every
/// method returns at once except the ``wait_*`` methods, which release the GIL while they
/// wait.
#[pyclass(frozen, module = "tandem")]
struct Session {
    inner: client::Session,
}

#[pymethods]
impl Session {
    /// The room name.
    #[getter]
    fn room(&self) -> String {
        self.inner.room().to_owned()
    }

    /// The user this session writes as.
    #[getter]
    fn user(&self) -> String {
        self.inner.user().to_owned()
    }

    /// ``"connecting"``, ``"connected"``, ``"offline"``, ``"incompatible"``, ``"refused"``
    /// (bad token or untrusted certificate: no retries until :meth:`reconnect`) or
    /// ``"closed"``.
    #[getter]
    fn state(&self) -> &'static str {
        self.inner.state().as_str()
    }

    /// The role the server announced (``"admin"``, ``"editor"``, ``"viewer"``), or ``None``
    /// before the first connection.
    #[getter]
    fn role(&self) -> Option<String> {
        self.inner.role().map(|r| r.to_string())
    }

    /// Session events since the last call, oldest first, as dicts with a ``type``:
    /// ``Refused`` (``doc``, ``node``, ``parm``, ``field``, ``rule``, ``message``: the server
    /// refused an edit, which was undone), ``Stopped`` (``kind``: ``Unauthorized``, ``Tls``,
    /// ...; ``message``: the session stopped reconnecting), ``Role`` (``role``).
    fn drain_client_events(&self, py: Python<'_>) -> PyResult<Vec<Py<PyAny>>> {
        self.inner
            .drain_client_events()
            .iter()
            .map(|e| client_event_dict(py, e))
            .collect()
    }

    /// Blocks (GIL released) until a session event is queued or ``timeout``; then drains.
    #[pyo3(signature = (timeout = 10.0))]
    fn wait_client_events(&self, py: Python<'_>, timeout: f64) -> PyResult<Vec<Py<PyAny>>> {
        let t = secs(timeout)?;
        let ev = py.detach(|| self.inner.wait_client_events(t));
        ev.iter().map(|e| client_event_dict(py, e)).collect()
    }

    /// The last connection problem, or ``None``.
    #[getter]
    fn last_error(&self) -> Option<String> {
        self.inner.last_error()
    }

    /// Traffic counters: ``bytes_in``, ``bytes_out``, ``frames_in``, ``frames_out``,
    /// ``connects``, and ``snapshots_loaded`` (scenes joined from the server's snapshot).
    #[getter]
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.inner.stats();
        let d = PyDict::new(py);
        d.set_item("bytes_in", s.bytes_in)?;
        d.set_item("bytes_out", s.bytes_out)?;
        d.set_item("frames_in", s.frames_in)?;
        d.set_item("frames_out", s.frames_out)?;
        d.set_item("connects", s.connects)?;
        d.set_item("snapshots_loaded", s.snapshots_loaded)?;
        Ok(d)
    }

    /// Blocks (GIL released) until connected. Raises :class:`Unreachable` after
    /// ``timeout`` seconds; at once :class:`Unauthorized` for a refused token,
    /// :class:`Tls` for an untrusted certificate, :class:`VersionMismatch` for an
    /// incompatible server.
    #[pyo3(signature = (timeout = 10.0))]
    fn wait_connected(&self, py: Python<'_>, timeout: f64) -> PyResult<()> {
        let t = secs(timeout)?;
        py.detach(|| self.inner.wait_connected(t)).map_err(err)
    }

    /// Blocks (GIL released) until :attr:`state` equals ``state``; returns whether it did.
    #[pyo3(signature = (state, timeout = 10.0))]
    fn wait_state(&self, py: Python<'_>, state: &str, timeout: f64) -> PyResult<bool> {
        use client::ConnectionState as S;
        let want = match state {
            "connecting" => S::Connecting,
            "connected" => S::Connected,
            "offline" => S::Offline,
            "incompatible" => S::Incompatible,
            "refused" => S::Refused,
            "closed" => S::Closed,
            other => return Err(PyValueError::new_err(format!("unknown state {other:?}"))),
        };
        let t = secs(timeout)?;
        Ok(py.detach(|| self.inner.wait_state(want, t)))
    }

    /// Opens the room's main scene (``doc_id=None``) or the document ``doc_id``, from the
    /// local replica if there is one. Never waits for the network.
    #[pyo3(signature = (doc_id = None))]
    fn open_scene(&self, py: Python<'_>, doc_id: Option<String>) -> PyResult<Scene> {
        let s = py
            .detach(|| self.inner.open_scene(doc_id.as_deref()))
            .map_err(err)?;
        Ok(Scene { inner: s })
    }

    /// Creates a new scene document with a fresh id (see :attr:`Scene.id`).
    fn create_scene(&self, py: Python<'_>) -> PyResult<Scene> {
        let s = py.detach(|| self.inner.create_scene()).map_err(err)?;
        Ok(Scene { inner: s })
    }

    /// Sends a chat line to the room (queued while offline).
    fn send_chat(&self, text: &str) -> PyResult<()> {
        self.inner.send_chat(text).map_err(err)
    }

    /// Chat lines received since the last call: dicts with ``id``, ``user``, ``text``,
    /// ``timestamp`` (ms).
    fn drain_chat(&self, py: Python<'_>) -> PyResult<Vec<Py<PyAny>>> {
        self.inner
            .drain_chat()
            .iter()
            .map(|l| chat_dict(py, l))
            .collect()
    }

    /// Blocks (GIL released) until a new chat line arrives or ``timeout``; then drains.
    #[pyo3(signature = (timeout = 10.0))]
    fn wait_chat(&self, py: Python<'_>, timeout: f64) -> PyResult<Vec<Py<PyAny>>> {
        let t = secs(timeout)?;
        let lines = py.detach(|| self.inner.wait_chat(t));
        lines.iter().map(|l| chat_dict(py, l)).collect()
    }

    /// Every chat line seen so far (the server replays recent history on join).
    fn chat_history(&self, py: Python<'_>) -> PyResult<Vec<Py<PyAny>>> {
        self.inner
            .chat_history()
            .iter()
            .map(|l| chat_dict(py, l))
            .collect()
    }

    /// Goes offline on purpose; edits keep working locally until :meth:`reconnect`.
    fn disconnect(&self) {
        self.inner.disconnect()
    }

    /// Reconnects now (also retries after an incompatible-server refusal).
    fn reconnect(&self) {
        self.inner.reconnect()
    }

    /// Writes every open scene's replica, leaves the room and stops the background task.
    fn close(&self, py: Python<'_>) {
        py.detach(|| self.inner.close())
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __exit__(
        &self,
        py: Python<'_>,
        _t: Option<Bound<'_, PyAny>>,
        _v: Option<Bound<'_, PyAny>>,
        _tb: Option<Bound<'_, PyAny>>,
    ) -> bool {
        self.close(py);
        false
    }

    fn __repr__(&self) -> String {
        format!(
            "<tandem.Session room={:?} user={:?} state={}>",
            self.inner.room(),
            self.inner.user(),
            self.inner.state().as_str()
        )
    }
}

// ------------------------------------------------------------------ Scene

/// One scene document of the room, backed by a local replica that works offline.
///
/// Feed host state in with :meth:`diff`, make it a change with :meth:`commit`, and apply
/// what others did from :meth:`drain_events` on the host's main thread.
#[pyclass(frozen, module = "tandem")]
struct Scene {
    inner: client::Scene,
}

fn report<'py>(py: Python<'py>, r: client::DiffReport) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("created", r.created)?;
    d.set_item("removed", r.removed)?;
    d.set_item("changed", r.changed)?;
    d.set_item("refused", r.refused)?;
    Ok(d)
}

#[pymethods]
impl Scene {
    /// The document id (share it so others can ``open_scene(doc_id)``).
    #[getter]
    fn id(&self) -> String {
        self.inner.id().to_owned()
    }

    /// Diffs host state in and records what differs (nothing is sent until :meth:`commit`).
    ///
    /// ``nodes`` is a list of node dicts (``id``, ``kind``, ``name``, ``parent``, ``parms``,
    /// ...), or a snapshot dict ``{"nodes": [...]}``. With ``full=True`` or a snapshot, nodes
    /// absent from ``nodes`` are removed; otherwise only the given nodes are compared and
    /// the ids in ``removed`` are removed. Returns ``{"created", "removed", "changed",
    /// "refused"}`` counts; all zero means the host already matched the scene. Edits the
    /// rules refuse this user are left out and listed by :meth:`refusals`.
    #[pyo3(signature = (nodes, removed = None, *, full = false))]
    fn diff<'py>(
        &self,
        py: Python<'py>,
        nodes: &Bound<'py, PyAny>,
        removed: Option<Vec<String>>,
        full: bool,
    ) -> PyResult<Bound<'py, PyDict>> {
        let (nodes, snapshot) = nodes_from(nodes)?;
        let removed: Vec<client::NodeId> = removed
            .unwrap_or_default()
            .iter()
            .map(|s| {
                s.parse()
                    .map_err(|_| BadInput::new_err(format!("removed: not a node id: {s:?}")))
            })
            .collect::<PyResult<_>>()?;
        let r = py
            .detach(|| {
                if full || snapshot {
                    self.inner.diff_full(&nodes)
                } else {
                    self.inner.diff_nodes(&nodes, &removed)
                }
            })
            .map_err(err)?;
        report(py, r)
    }

    /// Commits pending edits as one change (fsync'd to the replica, then sent). Returns the
    /// change hash, or ``None`` if nothing was pending.
    #[pyo3(signature = (message = None))]
    fn commit(&self, py: Python<'_>, message: Option<String>) -> PyResult<Option<String>> {
        py.detach(|| self.inner.commit(message.as_deref()))
            .map_err(err)
    }

    /// Commits only if the oldest pending edit is at least ``interval`` seconds old; call
    /// it every tick to coalesce drags.
    fn commit_due(&self, py: Python<'_>, interval: f64) -> PyResult<Option<String>> {
        let t = secs(interval)?;
        py.detach(|| self.inner.commit_due(t)).map_err(err)
    }

    /// True when diffs recorded edits not yet committed.
    #[getter]
    fn has_pending(&self) -> bool {
        self.inner.has_pending()
    }

    /// Remote edits since the last call, in order: dicts with a ``type`` (``NodeAdded``,
    /// ``NodeRemoved``, ``NodeMoved``, ``NodeRenamed``, ``ParmsChanged``, ``InputsChanged``,
    /// ``DataChanged``, ``OwnerChanged``) and its fields.
    fn drain_events(&self, py: Python<'_>) -> PyResult<Vec<Py<PyAny>>> {
        let ev = self.inner.drain_events();
        ev.iter().map(|e| ser(py, e)).collect()
    }

    /// Blocks (GIL released) until at least one event is queued or ``timeout``; drains.
    #[pyo3(signature = (timeout = 10.0))]
    fn wait_events(&self, py: Python<'_>, timeout: f64) -> PyResult<Vec<Py<PyAny>>> {
        let t = secs(timeout)?;
        let ev = py.detach(|| self.inner.wait_events(t));
        ev.iter().map(|e| ser(py, e)).collect()
    }

    /// The whole scene: ``{"schema": int, "nodes": [node dicts]}`` (sorted by id).
    fn snapshot(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let mut s = py.detach(|| self.inner.snapshot());
        s.nodes.sort_by_key(|n| n.id);
        ser(py, &s)
    }

    /// One node as a dict, or ``None``.
    fn node(&self, py: Python<'_>, id: &str) -> PyResult<Option<Py<PyAny>>> {
        let id: client::NodeId = id
            .parse()
            .map_err(|_| BadInput::new_err(format!("not a node id: {id:?}")))?;
        self.inner.node(id).map(|n| ser(py, &n)).transpose()
    }

    fn __len__(&self) -> usize {
        self.inner.len()
    }

    /// The document heads (hex change hashes).
    #[getter]
    fn heads(&self) -> Vec<String> {
        self.inner.heads()
    }

    /// Every local change is durable on the server (from its acknowledgements).
    #[getter]
    fn saved_on_server(&self) -> bool {
        self.inner.saved_on_server()
    }

    /// Connected, and the server and this replica hold the same changes.
    #[getter]
    fn synced(&self) -> bool {
        self.inner.is_synced()
    }

    /// ``False`` once the server said nobody created this document yet, ``True`` once it
    /// sent anything about it, ``None`` before.
    #[getter]
    fn on_server(&self) -> Option<bool> {
        self.inner.on_server()
    }

    /// Blocks (GIL released) until :attr:`synced` or ``timeout``; returns which.
    #[pyo3(signature = (timeout = 10.0))]
    fn wait_synced(&self, py: Python<'_>, timeout: f64) -> PyResult<bool> {
        let t = secs(timeout)?;
        Ok(py.detach(|| self.inner.wait_synced(t)))
    }

    /// Blocks (GIL released) until :attr:`saved_on_server` or ``timeout``; returns which.
    #[pyo3(signature = (timeout = 10.0))]
    fn wait_saved(&self, py: Python<'_>, timeout: f64) -> PyResult<bool> {
        let t = secs(timeout)?;
        Ok(py.detach(|| self.inner.wait_saved(t)))
    }

    /// Blocks (GIL released) until this replica holds every change in ``heads`` (e.g.
    /// another replica's :attr:`heads`); returns whether it does.
    #[pyo3(signature = (heads, timeout = 10.0))]
    fn wait_heads(&self, py: Python<'_>, heads: Vec<String>, timeout: f64) -> PyResult<bool> {
        let t = secs(timeout)?;
        py.detach(|| self.inner.wait_heads(&heads, t)).map_err(err)
    }

    /// Publishes my presence in this scene (any JSON-like value: selection, camera...).
    fn set_presence(&self, state: &Bound<'_, PyAny>) -> PyResult<()> {
        self.inner.set_presence(to_json(state)?);
        Ok(())
    }

    /// Others present: dicts with ``session``, ``user``, ``state``.
    #[getter]
    fn presence(&self, py: Python<'_>) -> PyResult<Vec<Py<PyAny>>> {
        self.inner
            .presence()
            .iter()
            .map(|p| {
                let d = PyDict::new(py);
                d.set_item("session", &p.session)?;
                d.set_item("user", &p.user)?;
                d.set_item("state", to_py(py, &p.state)?)?;
                Ok(d.into_any().unbind())
            })
            .collect()
    }

    /// Blocks (GIL released) until someone (``user``, if given) is present; returns whether.
    #[pyo3(signature = (user = None, timeout = 10.0))]
    fn wait_presence(&self, py: Python<'_>, user: Option<String>, timeout: f64) -> PyResult<bool> {
        let t = secs(timeout)?;
        Ok(py.detach(|| {
            self.inner
                .wait_presence(t, |p| user.as_deref().is_none_or(|u| p.user == u))
        }))
    }

    /// Replica warnings (e.g. a corrupt file moved aside and re-fetched).
    #[getter]
    fn warnings(&self) -> Vec<String> {
        self.inner.warnings()
    }

    /// The last error the server reported about this scene, or ``None``.
    #[getter]
    fn last_error(&self) -> Option<String> {
        self.inner.last_error()
    }

    /// Edits the rules refused since the last call, oldest first: dicts with ``node``,
    /// ``parm``, ``field``, ``rule``, ``message`` and ``by_server`` (the server refused an
    /// edit already committed; scene events undoing it are queued).
    fn refusals(&self, py: Python<'_>) -> PyResult<Vec<Py<PyAny>>> {
        self.inner
            .refusals()
            .iter()
            .map(|r| refusal_dict(py, r))
            .collect()
    }

    /// Locks node ``id`` for this user (``subtree=True``: every node under it too). Raises
    /// :class:`Forbidden` unless this user owns the node or is an admin.
    #[pyo3(signature = (id, subtree = false))]
    fn lock(&self, py: Python<'_>, id: &str, subtree: bool) -> PyResult<()> {
        let id = node_id(id)?;
        py.detach(|| self.inner.lock(id, subtree)).map_err(err)
    }

    /// Removes the lock on node ``id`` (its holder, the node's owner or an admin).
    fn unlock(&self, py: Python<'_>, id: &str) -> PyResult<()> {
        let id = node_id(id)?;
        py.detach(|| self.inner.unlock(id)).map_err(err)
    }

    /// Gives ``users`` sole control of ``parm`` on node ``id`` (an empty list removes the
    /// grant). Raises :class:`Forbidden` unless this user owns the node or is an admin.
    fn grant(&self, py: Python<'_>, id: &str, parm: &str, users: Vec<String>) -> PyResult<()> {
        let id = node_id(id)?;
        let users: Vec<&str> = users.iter().map(String::as_str).collect();
        py.detach(|| self.inner.grant(id, parm, &users))
            .map_err(err)
    }

    /// Writes a compacted snapshot of the replica now.
    fn flush_replica(&self, py: Python<'_>) -> PyResult<()> {
        py.detach(|| self.inner.flush_replica()).map_err(err)
    }

    fn __repr__(&self) -> String {
        format!(
            "<tandem.Scene id={} nodes={}>",
            self.inner.id(),
            self.inner.len()
        )
    }
}

/// Connects to ``url`` (``ws://host:port`` or ``wss://``) for ``room`` as ``user``, keeping
/// replicas in ``replica_dir``. ``ca_cert``: a PEM file of extra certificates to trust for
/// ``wss://`` (default: ``$TANDEM_CA_CERT``). Returns at once; see
/// :meth:`Session.wait_connected`.
#[pyfunction]
#[pyo3(signature = (url, room, user, replica_dir, *, token = None, ca_cert = None, backoff_base = 0.25, backoff_max = 10.0, connect_timeout = 5.0))]
#[allow(clippy::too_many_arguments)]
fn connect(
    py: Python<'_>,
    url: &str,
    room: &str,
    user: &str,
    replica_dir: std::path::PathBuf,
    token: Option<String>,
    ca_cert: Option<std::path::PathBuf>,
    backoff_base: f64,
    backoff_max: f64,
    connect_timeout: f64,
) -> PyResult<Session> {
    let mut o = client::Options::new(replica_dir);
    o.token = token;
    o.ca_cert = ca_cert;
    o.backoff_base = secs(backoff_base)?;
    o.backoff_max = secs(backoff_max)?;
    o.connect_timeout = secs(connect_timeout)?;
    let s = py
        .detach(|| client::Session::connect(url, room, user, o))
        .map_err(err)?;
    Ok(Session { inner: s })
}

/// The id of a room's main scene (what ``open_scene()`` opens).
#[pyfunction]
fn room_scene_id(room: &str) -> String {
    client::room_scene_id(room)
}

#[pymodule]
fn _tandem(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_function(wrap_pyfunction!(connect, m)?)?;
    m.add_function(wrap_pyfunction!(room_scene_id, m)?)?;
    m.add_class::<Session>()?;
    m.add_class::<Scene>()?;
    m.add("TandemError", py.get_type::<TandemError>())?;
    m.add("InvalidUrl", py.get_type::<InvalidUrl>())?;
    m.add("Unreachable", py.get_type::<Unreachable>())?;
    m.add("VersionMismatch", py.get_type::<VersionMismatch>())?;
    m.add("Protocol", py.get_type::<Protocol>())?;
    m.add("ServerRefused", py.get_type::<ServerRefused>())?;
    m.add("Replica", py.get_type::<Replica>())?;
    m.add("BadInput", py.get_type::<BadInput>())?;
    m.add("InvalidArgument", py.get_type::<InvalidArgument>())?;
    m.add("Closed", py.get_type::<Closed>())?;
    m.add("Unauthorized", py.get_type::<Unauthorized>())?;
    m.add("Forbidden", py.get_type::<Forbidden>())?;
    m.add("Tls", py.get_type::<Tls>())?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
