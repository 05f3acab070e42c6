//! Built images: how they are named and labelled in Docker, and listing, finding, removing
//! and cleaning them with per-user ownership.
//!
//! Every result carries labels saying who built it and from what, so the daemon can show
//! users only their own images and reap what it made, without a database of its own.

use std::collections::HashMap;

use bollard::query_parameters::{ListImagesOptions, PruneImagesOptions, RemoveImageOptions};
use bollard::Docker;
use pib_dbus_interfaces::stage::check_name;
use pib_dbus_interfaces::DBusError;

/// Labels on built images.
pub mod label {
    pub const RESULT: &str = "org.pibuilder.result";
    pub const OWNER_UID: &str = "org.pibuilder.owner-uid";
    pub const NAME: &str = "org.pibuilder.name";
    pub const DISTRO: &str = "org.pibuilder.distro";
    pub const ARCH: &str = "org.pibuilder.arch";
    pub const BOARD: &str = "org.pibuilder.board";
    pub const STAGES: &str = "org.pibuilder.stages";
    pub const BASE: &str = "org.pibuilder.base-image";
    pub const HOSTNAME: &str = "org.pibuilder.hostname";
}

/// A built image as users see it.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageInfo {
    pub name: String,
    pub reference: String,
    pub id: String,
    pub owner_uid: u32,
    pub distro: String,
    pub arch: String,
    pub board: String,
    /// The host name the build was given (the image's /etc/hostname is written from it).
    pub hostname: String,
    pub stages: Vec<String>,
    pub created_us: u64,
    pub size: u64,
}

/// Checks a result name (the same grammar as stage names, minus the special ones).
pub fn check_image_name(name: &str) -> Result<(), DBusError> {
    if name.starts_with("__") {
        return Err(DBusError::InvalidArgs(format!(
            "image name {name:?} is not allowed: names starting with '__' are reserved"
        )));
    }
    check_name(name).map_err(|e| DBusError::InvalidArgs(e.to_string().replace("stage", "image")))
}

/// Checks a name as callers write it: `NAME`, or `uUID/NAME` for someone else's image.
pub fn check_lookup_name(name: &str) -> Result<(), DBusError> {
    match name.split_once('/') {
        None => check_image_name(name),
        Some((owner, bare)) => {
            let uid_ok = owner.strip_prefix('u').is_some_and(|u| {
                !u.is_empty() && u.len() <= 10 && u.bytes().all(|b| b.is_ascii_digit())
            });
            if !uid_ok {
                return Err(DBusError::InvalidArgs(format!(
                    "image name {name:?} is not allowed: write NAME, or uUID/NAME for another \
                     user's image"
                )));
            }
            check_image_name(bare)
        }
    }
}

/// The Docker reference of `uid`'s image `name`: names are per user, so two users may both
/// have a "debian-rpi4-aarch64".
pub fn reference(uid: u32, name: &str) -> String {
    format!("pib/u{uid}/{name}:latest")
}

fn docker_error(e: bollard::errors::Error) -> DBusError {
    DBusError::DockerUnavailable(format!("the Docker engine failed: {e}"))
}

fn info(summary: &bollard::models::ImageSummary) -> Option<ImageInfo> {
    let l = &summary.labels;
    let owner_uid = l.get(label::OWNER_UID)?.parse().ok()?;
    let name = l.get(label::NAME)?.clone();
    let reference = reference(owner_uid, &name);
    // An image that lost its tag to a newer build of the same name is an old version, not
    // the image of that name.
    if !summary.repo_tags.contains(&reference) {
        return None;
    }
    Some(ImageInfo {
        name,
        reference,
        id: summary.id.clone(),
        owner_uid,
        distro: l.get(label::DISTRO).cloned().unwrap_or_default(),
        arch: l.get(label::ARCH).cloned().unwrap_or_default(),
        board: l.get(label::BOARD).cloned().unwrap_or_default(),
        hostname: l.get(label::HOSTNAME).cloned().unwrap_or_default(),
        stages: l
            .get(label::STAGES)
            .map(|s| s.split_whitespace().map(str::to_owned).collect())
            .unwrap_or_default(),
        created_us: u64::try_from(summary.created).unwrap_or(0) * 1_000_000,
        size: u64::try_from(summary.size).unwrap_or(0),
    })
}

fn result_filter() -> HashMap<String, Vec<String>> {
    HashMap::from([("label".to_owned(), vec![label::RESULT.to_owned()])])
}

/// Built images, all of them or `uid`'s only.
pub async fn list(docker: &Docker, uid: Option<u32>) -> Result<Vec<ImageInfo>, DBusError> {
    let options = ListImagesOptions {
        filters: Some(result_filter()),
        ..Default::default()
    };
    let mut images: Vec<ImageInfo> = docker
        .list_images(Some(options))
        .await
        .map_err(docker_error)?
        .iter()
        .filter_map(info)
        .filter(|i| uid.is_none_or(|u| i.owner_uid == u))
        .collect();
    images.sort_by(|a, b| (a.owner_uid, &a.name).cmp(&(b.owner_uid, &b.name)));
    Ok(images)
}

/// Finds image `name` for a caller: their own, or, when `any_owner`, anyone's (the name may
/// then be written `uUID/NAME` to pick among owners).
pub async fn find(
    docker: &Docker,
    caller_uid: u32,
    name: &str,
    any_owner: bool,
) -> Result<ImageInfo, DBusError> {
    let (owner, bare) = match name.split_once('/') {
        Some((u, n)) if any_owner => (u.strip_prefix('u').and_then(|u| u.parse().ok()), n),
        _ => (None, name),
    };
    check_image_name(bare)?;
    let all = list(docker, None).await?;
    let mine = all
        .iter()
        .find(|i| i.owner_uid == owner.unwrap_or(caller_uid) && i.name == bare);
    if let Some(image) = mine {
        if image.owner_uid == caller_uid || any_owner {
            return Ok(image.clone());
        }
    }
    if any_owner && owner.is_none() {
        let mut others = all.iter().filter(|i| i.name == bare);
        if let (Some(only), None) = (others.next(), others.next()) {
            return Ok(only.clone());
        }
    }
    Err(DBusError::NotFound(format!(
        "no image named {bare:?}; see `pib-client images`"
    )))
}

/// Removes one image (its tag and the layers only it uses; shared cache layers stay).
pub async fn remove(docker: &Docker, image: &ImageInfo) -> Result<(), DBusError> {
    let options = RemoveImageOptions {
        force: false,
        noprune: false,
        ..Default::default()
    };
    match docker
        .remove_image(&image.reference, Some(options), None)
        .await
    {
        Ok(_) => Ok(()),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 409,
            message,
        }) => Err(DBusError::Busy(format!(
            "image {} is in use: {message}",
            image.name
        ))),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Err(DBusError::NotFound(format!(
            "no image named {:?}",
            image.name
        ))),
        Err(e) => Err(docker_error(e)),
    }
}

/// Removes old, untagged versions of built images (left when a name was rebuilt); returns the
/// count and bytes reclaimed.
pub async fn prune_untagged(docker: &Docker) -> Result<(u32, u64), DBusError> {
    let mut filters = result_filter();
    filters.insert("dangling".to_owned(), vec!["true".to_owned()]);
    let pruned = docker
        .prune_images(Some(PruneImagesOptions {
            filters: Some(filters),
        }))
        .await
        .map_err(docker_error)?;
    let count = pruned.images_deleted.map(|d| d.len()).unwrap_or(0) as u32;
    let bytes = pruned
        .space_reclaimed
        .and_then(|b| u64::try_from(b).ok())
        .unwrap_or(0);
    Ok((count, bytes))
}

/// Removes every image carrying `label` (the imported bases, for Clean --bases); returns the
/// count removed. Images still used by others (a result built on a base) stay.
pub async fn remove_labelled(docker: &Docker, label: &str) -> Result<u32, DBusError> {
    let options = ListImagesOptions {
        filters: Some(HashMap::from([(
            "label".to_owned(),
            vec![label.to_owned()],
        )])),
        ..Default::default()
    };
    let mut removed = 0;
    for image in docker
        .list_images(Some(options))
        .await
        .map_err(docker_error)?
    {
        let options = RemoveImageOptions {
            force: true,
            noprune: false,
            ..Default::default()
        };
        match docker.remove_image(&image.id, Some(options), None).await {
            Ok(_) => removed += 1,
            Err(e) => tracing::info!("kept image {}: {e}", image.id),
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_references() {
        assert!(check_image_name("debian-rpi4-aarch64").is_ok());
        for bad in ["", "__init__", "UP", "a/b", "../x", "-x"] {
            assert!(check_image_name(bad).is_err(), "{bad:?}");
        }
        assert_eq!(reference(1000, "kiosk"), "pib/u1000/kiosk:latest");
        assert!(check_lookup_name("u1000/kiosk").is_ok());
        for bad in [
            "../x", "u/x", "ux/kiosk", "u1/../x", "u1/x/y", "/x", "u1000/",
        ] {
            assert!(check_lookup_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn summaries_need_our_labels_and_current_tag() {
        let mut s = bollard::models::ImageSummary {
            id: "sha256:abc".into(),
            repo_tags: vec!["pib/u1000/kiosk:latest".into()],
            created: 1_700_000_000,
            size: 42,
            labels: HashMap::from([
                (label::RESULT.into(), "1".into()),
                (label::OWNER_UID.into(), "1000".into()),
                (label::NAME.into(), "kiosk".into()),
                (label::STAGES.into(), "__init__ os".into()),
            ]),
            ..Default::default()
        };
        let i = info(&s).unwrap();
        assert_eq!(i.owner_uid, 1000);
        assert_eq!(i.stages, ["__init__", "os"]);
        assert_eq!(i.created_us, 1_700_000_000_000_000);
        s.repo_tags.clear();
        assert!(info(&s).is_none(), "an untagged old version is not listed");
    }
}
