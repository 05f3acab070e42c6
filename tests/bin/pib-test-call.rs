//! pib-test-call: makes one D-Bus call to pi-builder and prints the outcome as one JSON line.
//!
//! The integration tests run it as unprivileged users (the bus identifies callers by their
//! socket's credentials, so such calls need a process of their own). Unlike pib-client it
//! exposes the raw contract: exact error names, fd passing, the interactive flag.
//!
//!   pib-test-call [--interactive] status | list-jobs | register [ARCH] | unregister [ARCH]
//!                 | cancel PATH | attach-log PATH | register-option KEY STRING
//!                 | probe-all [bad] | build OPTIONS FD [--wait] | import OPTIONS FD [--wait]
//!                 | flash DEVICE FD [--wait]   (see raw.rs)

mod raw;

use std::collections::HashMap;
use std::io::Read;

use pib_dbus_interfaces::proxy::{JobProxy, ManagerProxy};
use pib_dbus_interfaces::DBusError;
use serde_json::{json, Value};
use zbus::proxy::MethodFlags;
use zbus::{OwnedObjectPath, Variant};

fn error_json(e: &DBusError) -> Value {
    let name = match e {
        DBusError::ZBus(zbus::Error::MethodError(name, _, _)) => name.to_string(),
        DBusError::ZBus(zbus::Error::FDO(fdo)) => zbus::DBusError::name(&**fdo).to_string(),
        DBusError::ZBus(other) => format!("zbus:{other}"),
        e => e.dbus_name(),
    };
    json!({"error": name, "message": e.message()})
}

async fn run(args: &[String]) -> Result<Value, DBusError> {
    let conn = zbus::Connection::system().await?;
    let (interactive, args) = match args.first().map(String::as_str) {
        Some("--interactive") => (true, &args[1..]),
        _ => (false, args),
    };
    let flags = if interactive {
        MethodFlags::ALLOW_INTERACTIVE_AUTH
    } else {
        MethodFlags::empty()
    };
    let manager = ManagerProxy::new(&conn).await?;
    let job = |path: &str| {
        let path = path.to_owned();
        let conn = conn.clone();
        async move {
            JobProxy::builder(&conn)
                .path(path)
                .build()
                .await
                .map_err(DBusError::from)
        }
    };
    let call_path = |method: &'static str, options: HashMap<&'static str, Variant<'static>>| {
        let m = manager.inner().clone();
        async move {
            let reply: Option<OwnedObjectPath> = m
                .call_with_flags(method, flags, &(options,))
                .await
                .map_err(DBusError::from)?;
            Ok::<Value, DBusError>(json!({"ok": reply.map(|p| p.to_string())}))
        }
    };
    let arch_opts = |arch: Option<&String>| {
        let mut o = HashMap::new();
        if let Some(a) = arch {
            o.insert("arch", Variant::from(a.clone()));
        }
        o
    };
    match args.first().map(String::as_str) {
        Some("status") => {
            let s = manager.get_status().await?;
            Ok(json!({"ok": s.len()}))
        }
        Some("list-jobs") => {
            let jobs = manager.list_jobs().await?;
            Ok(json!({"ok": jobs.iter().map(|p| p.to_string()).collect::<Vec<_>>()}))
        }
        Some("register") => call_path("RegisterBinfmt", arch_opts(args.get(1))).await,
        Some("unregister") => call_path("UnregisterBinfmt", arch_opts(args.get(1))).await,
        Some("register-option") if args.len() == 3 => {
            let mut o = HashMap::new();
            o.insert("arch", Variant::from(args[2].clone()));
            let key: &'static str = Box::leak(args[1].clone().into_boxed_str());
            let value = o.remove("arch").unwrap();
            call_path("RegisterBinfmt", HashMap::from([(key, value)])).await
        }
        Some("cancel") if args.len() == 2 => {
            let j = job(&args[1]).await?;
            let _: () = j
                .inner()
                .call_with_flags("Cancel", flags, &())
                .await
                .map_err(DBusError::from)?
                .unwrap_or(());
            Ok(json!({"ok": true}))
        }
        Some("attach-log") if args.len() == 2 => {
            let j = job(&args[1]).await?;
            let (r, w) = rustix_pipe()?;
            j.attach_log(zbus::Fd::from(&w)).await?;
            drop(w);
            let text = tokio::task::spawn_blocking(move || {
                let mut s = String::new();
                std::fs::File::from(r).read_to_string(&mut s).map(|_| s)
            })
            .await
            .map_err(|e| DBusError::Failed(e.to_string()))?
            .map_err(|e| DBusError::Failed(e.to_string()))?;
            Ok(json!({"ok": text}))
        }
        Some("probe-all") => {
            let bad = args.get(1).map(String::as_str) == Some("bad");
            let card = args.get(if bad { 2 } else { 1 }).map(String::as_str);
            probe_all(&manager, bad, card).await
        }
        Some("build" | "import" | "flash") => raw::run(&conn, &manager, args).await,
        _ => Err(DBusError::InvalidArgs(format!(
            "usage: see source; got {args:?}"
        ))),
    }
}

/// Calls every method of the build, card and scan API once, with valid arguments (or, with `bad`,
/// with one malformed argument each), and reports each call's error name ("" for success).
/// The card methods are called only when a card (a device the rules accept) is given.
async fn probe_all(
    m: &ManagerProxy<'_>,
    bad: bool,
    card: Option<&str>,
) -> Result<Value, DBusError> {
    let name_of = |r: Result<(), DBusError>| match r {
        Ok(()) => String::new(),
        Err(e) => error_json(&e)["error"].as_str().unwrap_or("").to_owned(),
    };
    let v = |s: &'static str| Variant::from(s);
    let build_opts = |stages: Vec<&'static str>| {
        HashMap::from([
            ("distro", v("debian")),
            ("arch", v("aarch64")),
            ("board", v("rpi4")),
            ("stages", Variant::from(stages)),
        ])
    };
    let (distro, stages, image) = if bad {
        ("beos", vec!["../etc"], "../x")
    } else {
        ("debian", vec!["__init__"], "pibtest-nonexistent")
    };
    let mut out = serde_json::Map::new();
    out.insert(
        "ListBases".into(),
        json!(name_of(m.list_bases().await.map(|_| ()))),
    );
    out.insert(
        "ListImages".into(),
        json!(name_of(m.list_images().await.map(|_| ()))),
    );
    let fetch = HashMap::from([("distro", v(distro)), ("arch", v("aarch64"))]);
    out.insert(
        "FetchBase".into(),
        json!(name_of(m.fetch_base(fetch).await.map(|_| ()))),
    );
    let (r, _w) = rustix_pipe()?;
    let import = HashMap::from([("distro", v(distro)), ("arch", v("aarch64"))]);
    out.insert(
        "ImportBase".into(),
        json!(name_of(
            m.import_base(zbus::Fd::from(&r), import).await.map(|_| ())
        )),
    );
    let (r, _w) = rustix_pipe()?;
    out.insert(
        "Build".into(),
        json!(name_of(
            m.build(zbus::Fd::from(&r), build_opts(stages))
                .await
                .map(|_| ())
        )),
    );
    out.insert(
        "RemoveImage".into(),
        json!(name_of(m.remove_image(image).await)),
    );
    let clean = if bad {
        HashMap::from([("everything", Variant::from(true))])
    } else {
        HashMap::new()
    };
    out.insert(
        "Clean".into(),
        json!(name_of(m.clean(clean).await.map(|_| ()))),
    );
    let (r, w) = rustix_pipe()?;
    let shell = m
        .shell(
            image,
            &[],
            zbus::Fd::from(&r),
            zbus::Fd::from(&w),
            zbus::Fd::from(&w),
            HashMap::new(),
        )
        .await
        .map(|_| ());
    out.insert("Shell".into(), json!(name_of(shell)));
    let (_r, w) = rustix_pipe()?;
    let disk = if bad {
        HashMap::from([("compress", v("gzip"))])
    } else {
        HashMap::new()
    };
    let made = m
        .make_disk_image(image, zbus::Fd::from(&w), disk)
        .await
        .map(|_| ());
    out.insert("MakeDiskImage".into(), json!(name_of(made)));
    let listing = if bad {
        HashMap::from([("everything", Variant::from(true))])
    } else {
        HashMap::new()
    };
    out.insert(
        "ListDevices".into(),
        json!(name_of(m.list_devices(listing).await.map(|_| ()))),
    );
    // A scan of loopback only: valid, and when granted it sends nothing anywhere.
    let scan = if bad {
        HashMap::from([("interfaces", Variant::from(vec!["../etc"]))])
    } else {
        HashMap::from([("interfaces", Variant::from(vec!["lo"]))])
    };
    out.insert(
        "Scan".into(),
        json!(name_of(m.scan(scan).await.map(|_| ()))),
    );
    if let Some(card) = card {
        let device = if bad { "relative/path" } else { card };
        let (r, _w) = rustix_pipe()?;
        let opts = if bad {
            HashMap::from([("compression", v("gzip"))])
        } else {
            HashMap::new()
        };
        let flashed = m
            .flash(zbus::Fd::from(&r), &[device], opts)
            .await
            .map(|_| ());
        out.insert("Flash".into(), json!(name_of(flashed)));
        let opts = if bad {
            HashMap::from([("boot_size", Variant::from(1u64))])
        } else {
            HashMap::new()
        };
        let formatted = m.format_device(device, opts).await.map(|_| ());
        out.insert("FormatDevice".into(), json!(name_of(formatted)));
        let installed = m
            .install(image, &[device], HashMap::new())
            .await
            .map(|_| ());
        out.insert("Install".into(), json!(name_of(installed)));
    }
    Ok(json!({"ok": Value::Object(out)}))
}

fn rustix_pipe() -> Result<(std::os::fd::OwnedFd, std::os::fd::OwnedFd), DBusError> {
    rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(|e| DBusError::Failed(std::io::Error::from(e).to_string()))
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let out = match run(&args).await {
        Ok(v) => v,
        Err(e) => error_json(&e),
    };
    println!("{out}");
}
