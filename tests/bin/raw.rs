//! Raw calls with hostile arguments: options written as JSON (so a test can send any variant
//! type), and input descriptors of every kind a caller could pass.
//!
//!   build OPTIONS FD [--wait] | import OPTIONS FD [--wait] | flash DEVICE FD [--wait]
//!
//! OPTIONS is a JSON object (or @PATH of a file holding one): strings become `s`, booleans `b`, integers `t`, arrays of strings
//! `as`, {"bytes": [..]} `ay`, {"u32": n} `u`, {"nest": n, "value": x} x wrapped in n more
//! variants, {"dict": {..}} `a{sv}`.
//! FD is file:PATH, opath:PATH, dir:PATH, write-only:PATH, socket, silent (a pipe nobody writes
//! to, held open), endless (a pipe fed zeros for ever), or pipe:PATH (the file's bytes, then the
//! end).

use std::collections::HashMap;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::time::Duration;

use pib_dbus_interfaces::proxy::{JobProxy, ManagerProxy};
use pib_dbus_interfaces::DBusError;
use serde_json::{json, Value};
use zbus::proxy::CacheProperties;
use zbus::{OwnedObjectPath, Variant};

fn failed(e: impl std::fmt::Display) -> DBusError {
    DBusError::Failed(e.to_string())
}

fn variant(v: &Value) -> Result<Variant<'static>, DBusError> {
    Ok(match v {
        Value::String(s) => Variant::from(s.clone()),
        Value::Bool(b) => Variant::from(*b),
        Value::Number(n) => Variant::from(n.as_u64().ok_or_else(|| failed("bad number"))?),
        Value::Array(items) => Variant::from(
            items
                .iter()
                .map(|i| {
                    i.as_str()
                        .map(str::to_owned)
                        .ok_or_else(|| failed("array of strings only"))
                })
                .collect::<Result<Vec<String>, _>>()?,
        ),
        Value::Object(o) if o.contains_key("bytes") => Variant::from(
            o["bytes"]
                .as_array()
                .ok_or_else(|| failed("bytes"))?
                .iter()
                .map(|b| b.as_u64().unwrap_or(0) as u8)
                .collect::<Vec<u8>>(),
        ),
        Value::Object(o) if o.contains_key("u32") => {
            Variant::from(o["u32"].as_u64().unwrap_or(0) as u32)
        }
        Value::Object(o) if o.contains_key("nest") => {
            let mut inner = variant(&o["value"])?;
            for _ in 0..o["nest"].as_u64().unwrap_or(0) {
                inner = Variant::Variant(Box::new(inner));
            }
            inner
        }
        Value::Object(o) if o.contains_key("dict") => Variant::from(options(&o["dict"])?),
        other => return Err(failed(format!("cannot send {other}"))),
    })
}

pub fn options(v: &Value) -> Result<HashMap<String, Variant<'static>>, DBusError> {
    v.as_object()
        .ok_or_else(|| failed("options must be a JSON object"))?
        .iter()
        .map(|(k, v)| Ok((k.clone(), variant(v)?)))
        .collect()
}

/// The caller's descriptor, and what must stay alive beside it while the call runs.
struct Input {
    fd: OwnedFd,
    _keep: Option<OwnedFd>,
}

fn input(spec: &str) -> Result<Input, DBusError> {
    let plain = |fd: OwnedFd| Input { fd, _keep: None };
    let (kind, path) = spec.split_once(':').unwrap_or((spec, ""));
    Ok(match kind {
        "file" => plain(std::fs::File::open(path).map_err(failed)?.into()),
        "opath" => plain(
            std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(rustix::fs::OFlags::PATH.bits() as i32)
                .open(path)
                .map_err(failed)?
                .into(),
        ),
        "dir" => plain(std::fs::File::open(path).map_err(failed)?.into()),
        "write-only" => plain(
            std::fs::OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(failed)?
                .into(),
        ),
        "socket" => {
            let (a, b) = std::os::unix::net::UnixStream::pair().map_err(failed)?;
            Input {
                fd: a.into(),
                _keep: Some(b.into()),
            }
        }
        "silent" => {
            let (r, w) = std::io::pipe().map_err(failed)?;
            Input {
                fd: r.into(),
                _keep: Some(w.into()),
            }
        }
        "endless" => {
            let (r, mut w) = std::io::pipe().map_err(failed)?;
            std::thread::spawn(move || {
                let zeros = vec![0u8; 1 << 16];
                while w.write_all(&zeros).is_ok() {}
            });
            plain(r.into())
        }
        "pipe" => {
            let data = std::fs::read(path).map_err(failed)?;
            let (r, mut w) = std::io::pipe().map_err(failed)?;
            std::thread::spawn(move || {
                let _ = w.write_all(&data);
            });
            plain(r.into())
        }
        other => return Err(failed(format!("unknown descriptor kind {other}"))),
    })
}

/// Waits for the job to end (as its owner) and reports how.
async fn ended(conn: &zbus::Connection, path: &OwnedObjectPath) -> Result<Value, DBusError> {
    let job = JobProxy::builder(conn)
        .path(path.clone())
        .cache_properties(CacheProperties::No)
        .build()
        .await?;
    for _ in 0..1200 {
        let state = job.state().await?;
        if !matches!(state.as_str(), "queued" | "running" | "cancelling") {
            return Ok(json!({
                "path": path.to_string(),
                "state": state,
                "error_name": job.error_name().await?,
                "message": job.message().await?,
            }));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(failed(format!("{path} did not end within 120 s")))
}

pub async fn run(
    conn: &zbus::Connection,
    m: &ManagerProxy<'_>,
    args: &[String],
) -> Result<Value, DBusError> {
    let wait = args.iter().any(|a| a == "--wait");
    let arg = |i: usize| {
        args.get(i)
            .cloned()
            .ok_or_else(|| failed("missing argument"))
    };
    let opts = |i: usize| -> Result<HashMap<String, Variant<'static>>, DBusError> {
        // @PATH reads the JSON from a file: one argument may not exceed 128 KiB.
        let text = match arg(i)?.strip_prefix('@') {
            Some(path) => std::fs::read_to_string(path).map_err(failed)?,
            None => arg(i)?,
        };
        options(&serde_json::from_str(&text).map_err(failed)?)
    };
    let input = input(&arg(2)?)?;
    let fd = zbus::Fd::from(&input.fd);
    let jobs: Vec<OwnedObjectPath> = match args.first().map(String::as_str) {
        Some("build") => {
            let o = opts(1)?;
            vec![
                m.build(fd, o.iter().map(|(k, v)| (k.as_str(), v.clone())).collect())
                    .await?,
            ]
        }
        Some("import") => {
            let o = opts(1)?;
            vec![
                m.import_base(fd, o.iter().map(|(k, v)| (k.as_str(), v.clone())).collect())
                    .await?,
            ]
        }
        Some("flash") => m.flash(fd, &[arg(1)?.as_str()], HashMap::new()).await?,
        _ => return Err(failed(format!("usage: see tests/bin/raw.rs; got {args:?}"))),
    };
    if !wait {
        return Ok(json!({"ok": jobs.iter().map(|p| p.to_string()).collect::<Vec<_>>()}));
    }
    // The descriptor (and a silent pipe's write end) stays open until the jobs ended.
    let mut out = Vec::new();
    for p in &jobs {
        out.push(ended(conn, p).await?);
    }
    drop(input);
    Ok(json!({"ok": out}))
}
