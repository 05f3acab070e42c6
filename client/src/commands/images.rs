//! `pib-client images` and `pib-client rm NAME`.

use std::collections::HashMap;
use std::time::SystemTime;

use pib_dbus_interfaces::types::image as key;
use serde_json::{json, Value};
use zbus::OwnedVariant;

use crate::bus::Bus;
use crate::calls;
use crate::commands::base::{add_iso_time, created_cell, size_cell, text};
use crate::errors::ClientError;
use crate::output::{self, for_terminal, Ui};
use crate::variant::dict_to_json;

pub async fn list(bus: &mut Bus, ui: &Ui) -> Result<(), ClientError> {
    let manager = bus.manager().await?;
    let images: Vec<HashMap<String, OwnedVariant>> =
        bus.call(manager.inner(), &calls::LIST_IMAGES, &()).await?;
    let mut images: Vec<Value> = images.iter().map(dict_to_json).collect();
    sort(&mut images);
    if ui.json {
        for i in &mut images {
            add_iso_time(i);
        }
        output::json_line(&Value::Array(images));
    } else if images.is_empty() {
        output::plain("No images. `pib-client build` makes one.");
    } else {
        output::plain(&image_table(&images, SystemTime::now()));
    }
    Ok(())
}

/// By name, then owner: with org.pibuilder.manage one name may exist once per user.
fn sort(images: &mut [Value]) {
    images.sort_by(|a, b| {
        let k = |v: &Value| (text(&v[key::NAME]), v[key::OWNER_UID].as_u64());
        k(a).cmp(&k(b))
    });
}

fn image_table(images: &[Value], now: SystemTime) -> String {
    let rows: Vec<Vec<String>> = images
        .iter()
        .map(|i| {
            let stages: Vec<String> = i[key::STAGES]
                .as_array()
                .map(|s| s.iter().map(text).collect())
                .unwrap_or_default();
            vec![
                text(&i[key::NAME]),
                text(&i[key::DISTRO]),
                text(&i[key::BOARD]),
                text(&i[key::ARCH]),
                size_cell(&i[key::SIZE]),
                created_cell(&i[key::CREATED], now),
                i[key::OWNER_UID]
                    .as_u64()
                    .map_or_else(|| "?".to_owned(), |u| u.to_string()),
                stages.join(" "),
            ]
        })
        .collect();
    output::table(
        &[
            "NAME", "DISTRO", "BOARD", "ARCH", "SIZE", "CREATED", "OWNER", "STAGES",
        ],
        &rows,
    )
}

pub async fn remove(bus: &mut Bus, ui: &Ui, name: &str) -> Result<(), ClientError> {
    let manager = bus.manager().await?;
    bus.call::<_, ()>(manager.inner(), &calls::REMOVE_IMAGE, &(name,))
        .await
        .map_err(|e| e.when_not_found(|| no_image(name)))?;
    if ui.json {
        output::json_line(&json!({ "removed": name }));
    } else {
        output::plain(&format!("Removed {}.", for_terminal(name)));
    }
    Ok(())
}

/// For every command that names a built image.
pub fn no_image(name: &str) -> String {
    format!(
        "No image named {}; see `pib-client images`.",
        for_terminal(name)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use pib_dbus_interfaces::DBusError;
    use std::time::{Duration, UNIX_EPOCH};

    const NOW: u64 = 1_764_153_900;

    fn image(name: &str, owner: u32, age_secs: u64, size: u64, stages: &[&str]) -> Value {
        json!({
            "name": name,
            "id": "sha256:00",
            "owner_uid": owner,
            "distro": "debian",
            "arch": "aarch64",
            "board": "rpi4",
            "stages": stages,
            "created": (NOW - age_secs) * 1_000_000,
            "size": size,
        })
    }

    #[test]
    fn the_image_table() {
        let now = UNIX_EPOCH + Duration::from_secs(NOW);
        let mut images = vec![
            image(
                "kiosk",
                1000,
                90,
                1_288_490_189,
                &["__init__", "os", "kiosk", "__cleanup__"],
            ),
            image(
                "debian-rpi4-aarch64",
                1000,
                40 * 86_400,
                700 << 20,
                &["__init__", "os", "__cleanup__"],
            ),
            image("kiosk", 0, 3 * 3600, 1 << 30, &["__init__", "__cleanup__"]),
        ];
        sort(&mut images);
        assert_eq!(
            image_table(&images, now),
            "NAME                 DISTRO  BOARD  ARCH     SIZE        CREATED       OWNER  STAGES\n\
             debian-rpi4-aarch64  debian  rpi4   aarch64  700.00 MiB  2025-10-17    1000   __init__ os __cleanup__\n\
             kiosk                debian  rpi4   aarch64  1.00 GiB    3 hours ago   0      __init__ __cleanup__\n\
             kiosk                debian  rpi4   aarch64  1.20 GiB    1 minute ago  1000   __init__ os kiosk __cleanup__"
        );
    }

    #[test]
    fn missing_or_odd_fields_do_not_break_the_table() {
        let now = UNIX_EPOCH + Duration::from_secs(NOW);
        let images = vec![json!({"name": "x\u{1b}]0;t\u{7}", "size": "big"})];
        assert_eq!(
            image_table(&images, now),
            "NAME       DISTRO  BOARD  ARCH  SIZE  CREATED  OWNER  STAGES\n\
             x^[]0;t^G                       ?     ?        ?"
        );
    }

    #[test]
    fn unknown_images_are_named() {
        let err = ClientError::Call {
            attempt: &calls::REMOVE_IMAGE,
            error: DBusError::NotFound("no image named \"old\"".into()),
        }
        .when_not_found(|| no_image("old"));
        let ex = crate::errors::explain(&err, true);
        assert_eq!(ex.text, "No image named old; see `pib-client images`.");
        assert_eq!(ex.name, "org.pibuilder.PiBuilder1.Error.NotFound");
        assert_eq!(ex.exit, crate::errors::exit::FAILURE);
        assert_eq!(ex.detail.as_deref(), Some("no image named \"old\""));
    }
}
