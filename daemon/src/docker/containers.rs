//! Containers the daemon makes for its own work (shells, filesystem exports). Each carries a
//! label and a name holding the daemon's pid, so a later daemon can tell an earlier, killed
//! run's leftovers from its own and remove them (crash-only, DESIGN §3 rule 7).

use std::collections::HashMap;

use bollard::query_parameters::{ListContainersOptions, RemoveContainerOptions};
use bollard::Docker;

/// The name prefix of this process's containers of one kind, e.g. `pib-shell-1234-`.
pub fn own_prefix(kind: &str) -> String {
    format!("pib-{kind}-{}-", std::process::id())
}

/// Removes a container and its anonymous volumes, whatever state it is in.
pub async fn remove(docker: &Docker, id: &str) -> Result<(), bollard::errors::Error> {
    let options = RemoveContainerOptions {
        force: true,
        v: true,
        ..Default::default()
    };
    docker.remove_container(id, Some(options)).await
}

/// Removes the containers with `label` that earlier daemon processes left; returns how many.
pub async fn reap(
    docker: &Docker,
    label: &str,
    kind: &str,
) -> Result<usize, bollard::errors::Error> {
    let options = ListContainersOptions {
        all: true,
        filters: Some(HashMap::from([(
            "label".to_owned(),
            vec![label.to_owned()],
        )])),
        ..Default::default()
    };
    let mine = format!("/{}", own_prefix(kind));
    let mut reaped = 0;
    for c in docker.list_containers(Some(options)).await? {
        let ours_now = c.names.iter().flatten().any(|n| n.starts_with(&mine));
        let Some(id) = c.id.filter(|_| !ours_now) else {
            continue;
        };
        if remove(docker, &id).await.is_ok() {
            reaped += 1;
        }
    }
    Ok(reaped)
}
