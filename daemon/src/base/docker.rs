//! Base images in Docker: streaming a root filesystem tar into `docker import`, labelling the
//! result, finding bases again, and reaping what an interrupted attempt left.
//!
//! An attempt never touches the name builds use until it has fully succeeded:
//!
//! 1. the tar stream is imported as `REPO:importing-PID-RAND`, labelled
//!    `org.pibuilder.base=partial` (plus the identity labels);
//! 2. once the stream has ended and its producer vouched for it (checksum matched, mmdebstrap
//!    exited 0), a metadata-only classic build `FROM` that image sets the final labels,
//!    including the digest, as `REPO:staged-PID-RAND`. Labels come from a build rather than from
//!    the import's `changes` because the digest of a streamed tarball is only known after the
//!    last byte went into the import;
//! 3. the staged image is tagged `REPO:latest` and the temporary tags are dropped.
//!
//! On any error or cancellation the temporary tags (and so the images) are removed; if the
//! daemon dies instead, the PID in the temporary tags lets [`reap`] recognise them later.
//!
//! The import records no platform: Docker 20.10 ignores it anyway, and newer engines that honour
//! it would then make every `FROM` of the base need an explicit `--platform`. The machine is in
//! the `org.pibuilder.arch` label; binfmt_misc runs the binaries whatever the metadata says.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::io;
use std::time::Duration;

use bollard::query_parameters::{
    BuildImageOptionsBuilder, CreateImageOptionsBuilder, ListImagesOptionsBuilder,
    RemoveImageOptionsBuilder, TagImageOptionsBuilder,
};
use bollard::Docker;
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use pib_dbus_interfaces::types::{Arch, Board, Distro};

use super::error::BaseError;
use super::fsutil::{is_stale_suffix, temp_suffix};
use super::spec::{labels, BaseConfig, BaseSpec};
use super::Progress;

/// Docker answers an import only after it has consumed the whole body, and bollard's request
/// timeout covers that wait: a bootstrap streams for minutes, so imports get their own,
/// generous bound (cancellation is the real control).
const IMPORT_TIMEOUT: Duration = Duration::from_secs(4 * 3600);
/// The labelling build has no RUN steps; it takes a second.
const LABEL_BUILD_TIMEOUT: Duration = Duration::from_secs(600);
/// Chunks in flight between a producer and the import request.
const CHANNEL_DEPTH: usize = 8;

const IMPORTING_PREFIX: &str = "importing-";
const STAGED_PREFIX: &str = "staged-";

/// A base image, as fetched or imported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseImage {
    /// The reference builds start FROM, `REPO:latest`.
    pub name: String,
    /// Docker's image id (`sha256:...`).
    pub id: String,
    /// All labels of the image, ours included.
    pub labels: BTreeMap<String, String>,
    /// Whether an existing image was returned without new work.
    pub cached: bool,
}

impl BaseImage {
    /// The `sha256:HEX` of the tarball the base came from.
    pub fn digest(&self) -> Option<&str> {
        self.labels.get(labels::DIGEST).map(String::as_str)
    }
}

/// A base image as ListBases shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseInfo {
    pub name: String,
    pub id: String,
    pub distro: Distro,
    pub arch: Arch,
    pub board: Option<Board>,
    /// Debian suite; `None` for Arch Linux ARM.
    pub suite: Option<String>,
    pub origin: String,
    pub digest: String,
    /// Microseconds since the epoch.
    pub created: u64,
    /// Bytes.
    pub size: u64,
}

/// The producer's side of an import: chunks of the tar stream go in here.
pub(crate) struct Sink {
    tx: mpsc::Sender<io::Result<Bytes>>,
}

/// The import request stopped reading (Docker refused the stream or the attempt is over); the
/// import's own error says why.
#[derive(Debug)]
pub(crate) struct SinkClosed;

impl Sink {
    pub(crate) async fn send(&self, chunk: Bytes) -> Result<(), SinkClosed> {
        self.tx.send(Ok(chunk)).await.map_err(|_| SinkClosed)
    }
}

/// What a producer vouches for once its stream has ended.
#[derive(Debug, Clone)]
pub(crate) struct Produced {
    /// Hex sha256 of the source tarball (as downloaded, bootstrapped or handed over).
    pub sha256: String,
}

/// What to import and how to label it.
pub(crate) struct ImportPlan<'a> {
    pub cfg: &'a BaseConfig,
    pub spec: &'a BaseSpec,
    pub origin: String,
    /// The id `REPO:latest` had before, removed once replaced.
    pub previous: Option<String>,
}

/// Imports the tar stream a producer writes into a [`Sink`], then labels and tags it.
pub(crate) async fn import_stream<F, Fut>(
    docker: &Docker,
    plan: ImportPlan<'_>,
    progress: &dyn Progress,
    cancel: &CancellationToken,
    producer: F,
) -> Result<BaseImage, BaseError>
where
    F: FnOnce(Sink) -> Fut,
    Fut: Future<Output = Result<Produced, BaseError>>,
{
    let repo = super::spec::image_repo(plan.cfg, plan.spec);
    let final_name = format!("{repo}:latest");
    let suffix = temp_suffix();
    let import_tag = format!("{IMPORTING_PREFIX}{suffix}");
    let import_ref = format!("{repo}:{import_tag}");
    let staged_tag = format!("{STAGED_PREFIX}{suffix}");
    let staged_ref = format!("{repo}:{staged_tag}");

    let mut all_labels = plan.spec.identity_labels(plan.cfg);
    all_labels.insert(labels::ORIGIN.to_owned(), label_value(&plan.origin));

    let mut cleanup = Cleanup::new(docker.clone());
    cleanup.push(import_ref.clone());

    let mut changes = vec![label_line(labels::BASE, labels::BASE_PARTIAL)];
    changes.extend(all_labels.iter().map(|(k, v)| label_line(k, v)));

    let (tx, mut rx) = mpsc::channel::<io::Result<Bytes>>(CHANNEL_DEPTH);
    let body = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
    let long = docker.clone().with_timeout(IMPORT_TIMEOUT);
    let options = CreateImageOptionsBuilder::new()
        .from_src("-")
        .repo(&repo)
        .tag(&import_tag)
        .changes(changes)
        .build();

    let import = async {
        let mut s = long.create_image(Some(options), Some(bollard::body_try_stream(body)), None);
        while let Some(item) = s.next().await {
            item.map_err(|e| BaseError::docker("import", e))?;
        }
        Ok::<(), BaseError>(())
    };
    let import = async {
        tokio::select! {
            r = import => r,
            _ = cancel.cancelled() => Err(BaseError::Cancelled),
        }
    };
    let produce = async {
        let r = producer(Sink { tx: tx.clone() }).await;
        if let Err(e) = &r {
            // End the body with an error, so that Docker sees an aborted upload rather than
            // a complete tar stream, and commits nothing.
            if !matches!(e, BaseError::ImportStopped) {
                tokio::select! {
                    _ = tx.send(Err(io::Error::other(e.to_string()))) => {}
                    _ = cancel.cancelled() => {}
                }
            }
        }
        // The body ends when the last sender goes.
        drop(tx);
        r
    };
    let (produced, imported) = tokio::join!(produce, import);

    let outcome = match (produced, imported) {
        _ if cancel.is_cancelled() => Err(BaseError::Cancelled),
        (Err(BaseError::ImportStopped), Err(e)) => Err(e),
        (Err(e), _) => Err(e),
        (Ok(_), Err(e)) => Err(e),
        (Ok(p), Ok(())) => Ok(p),
    };
    let produced = match outcome {
        Ok(p) => p,
        Err(e) => {
            cleanup.run().await;
            return Err(e);
        }
    };

    // Step 2: final labels through a metadata-only build.
    progress.stage("label");
    let digest = format!("sha256:{}", produced.sha256);
    all_labels.insert(labels::BASE.to_owned(), labels::BASE_DONE.to_owned());
    all_labels.insert(labels::DIGEST.to_owned(), digest);
    cleanup.push(staged_ref.clone());
    let labelled = tokio::select! {
        r = label_build(docker, &import_ref, &staged_ref, &all_labels) => r,
        _ = cancel.cancelled() => Err(BaseError::Cancelled),
    };
    if let Err(e) = labelled {
        cleanup.run().await;
        return Err(e);
    }
    if cancel.is_cancelled() {
        cleanup.run().await;
        return Err(BaseError::Cancelled);
    }

    // Step 3: publish. From here on the attempt has succeeded; only the temporary tags go.
    if let Err(e) = docker
        .tag_image(
            &staged_ref,
            Some(
                TagImageOptionsBuilder::new()
                    .repo(&repo)
                    .tag("latest")
                    .build(),
            ),
        )
        .await
    {
        cleanup.run().await;
        return Err(BaseError::docker(format!("tag {final_name}"), e));
    }
    cleanup.untag_only();
    cleanup.run().await;

    let image = inspect_base(docker, &final_name).await?.ok_or_else(|| {
        BaseError::docker(
            format!("inspect {final_name}"),
            bollard::errors::Error::DockerResponseServerError {
                status_code: 404,
                message: "the image vanished right after it was tagged".to_owned(),
            },
        )
    })?;

    if let Some(old) = plan.previous.filter(|old| *old != image.id) {
        remove_replaced(docker, &old, progress).await;
    }
    Ok(image)
}

/// Keeps a label value to what both label paths carry verbatim: the classic builder (Docker
/// 20.10) writes build-option labels into a single-quoted `LABEL` line, so a quote would end
/// the value early, and control characters have no business in a label.
fn label_value(v: &str) -> String {
    v.chars()
        .map(|c| match c {
            '\'' => "%27".to_owned(),
            c if c.is_control() => " ".to_owned(),
            c => c.to_string(),
        })
        .collect()
}

/// A `LABEL` instruction for the import's `changes`, quoted so that spaces, quotes and `$`
/// in values (mirror URLs, origins) arrive verbatim.
fn label_line(key: &str, value: &str) -> String {
    let mut q = String::with_capacity(value.len() + 2);
    for c in value.chars() {
        match c {
            '\\' | '"' | '$' => {
                q.push('\\');
                q.push(c);
            }
            // Changes are joined by newlines into one Dockerfile; a newline would start a
            // new instruction.
            '\n' | '\r' => q.push(' '),
            c => q.push(c),
        }
    }
    format!("LABEL {key}=\"{q}\"")
}

/// Builds `FROM <from>` with `labels`, tagged `tag`, with the classic builder (no BuildKit on
/// Debian 12's engine, and nothing to run).
async fn label_build(
    docker: &Docker,
    from: &str,
    tag: &str,
    labels: &BTreeMap<String, String>,
) -> Result<(), BaseError> {
    let dockerfile = format!("FROM {from}\n");
    let context = context_tar(&dockerfile).map_err(|e| {
        BaseError::docker("label build", bollard::errors::Error::IOError { err: e })
    })?;
    let labels: HashMap<&str, &str> = labels
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let options = BuildImageOptionsBuilder::new()
        .t(tag)
        .labels(&labels)
        .rm(true)
        .forcerm(true)
        .build();
    let long = docker.clone().with_timeout(LABEL_BUILD_TIMEOUT);
    let mut s = long.build_image(
        options,
        None,
        Some(bollard::body_full(Bytes::from(context))),
    );
    while let Some(item) = s.next().await {
        item.map_err(|e| BaseError::docker("label build", e))?;
    }
    Ok(())
}

/// A build context holding only the Dockerfile.
fn context_tar(dockerfile: &str) -> io::Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_size(dockerfile.len() as u64);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    b.append_data(&mut h, "Dockerfile", dockerfile.as_bytes())?;
    b.into_inner()
}

/// Removes the image a refresh replaced, if nothing depends on it. Built images made FROM it
/// keep it alive; that is expected and only logged.
async fn remove_replaced(docker: &Docker, old_id: &str, progress: &dyn Progress) {
    let opts = RemoveImageOptionsBuilder::new().build();
    match docker.remove_image(old_id, Some(opts), None).await {
        Ok(_) => progress.log(format!("removed the previous base image {old_id}")),
        Err(e) => {
            tracing::info!("previous base image {old_id} kept: {e}");
            progress.log(format!(
                "the previous base image {old_id} is still in use and was kept"
            ));
        }
    }
}

/// Looks an image up by reference and returns it if it is a finished base.
pub(crate) async fn inspect_base(
    docker: &Docker,
    reference: &str,
) -> Result<Option<BaseImage>, BaseError> {
    let img = match docker.inspect_image(reference).await {
        Ok(i) => i,
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => return Ok(None),
        Err(e) => return Err(BaseError::docker(format!("inspect {reference}"), e)),
    };
    let labels: BTreeMap<String, String> = img
        .config
        .and_then(|c| c.labels)
        .unwrap_or_default()
        .into_iter()
        .collect();
    if labels.get(labels::BASE).map(String::as_str) != Some(labels::BASE_DONE) {
        return Ok(None);
    }
    Ok(Some(BaseImage {
        name: reference.to_owned(),
        id: img.id.unwrap_or_default(),
        labels,
        cached: false,
    }))
}

/// The base tagged for `spec`, if there is one made for exactly that spec. An image under our
/// name with other labels (made by hand, or by a different configuration) does not count.
pub(crate) async fn find_base(
    docker: &Docker,
    cfg: &BaseConfig,
    spec: &BaseSpec,
) -> Result<Option<BaseImage>, BaseError> {
    let name = super::spec::image_name(cfg, spec);
    let Some(img) = inspect_base(docker, &name).await? else {
        return Ok(None);
    };
    let want = spec.identity_labels(cfg);
    let matches = want
        .iter()
        .all(|(k, v)| img.labels.get(k).map(String::as_str).unwrap_or("") == v);
    Ok(matches.then_some(img))
}

/// The id currently tagged as `name`, whatever it is (to remove it once replaced).
pub(crate) async fn current_id(docker: &Docker, name: &str) -> Result<Option<String>, BaseError> {
    match docker.inspect_image(name).await {
        Ok(i) => Ok(i.id),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(None),
        Err(e) => Err(BaseError::docker(format!("inspect {name}"), e)),
    }
}

fn is_temp_tag(reference: &str) -> Option<&str> {
    let tag = reference.rsplit_once(':').map(|(_, t)| t)?;
    tag.strip_prefix(IMPORTING_PREFIX)
        .or_else(|| tag.strip_prefix(STAGED_PREFIX))
}

/// Every finished base image, one entry per tag.
pub async fn list(docker: &Docker) -> Result<Vec<BaseInfo>, BaseError> {
    let filter = format!("{}={}", labels::BASE, labels::BASE_DONE);
    let filters: HashMap<&str, Vec<&str>> = HashMap::from([("label", vec![filter.as_str()])]);
    let images = docker
        .list_images(Some(
            ListImagesOptionsBuilder::new().filters(&filters).build(),
        ))
        .await
        .map_err(|e| BaseError::docker("list images", e))?;
    let mut out = Vec::new();
    for img in images {
        let l = &img.labels;
        let get = |k: &str| l.get(k).cloned().unwrap_or_default();
        let (Ok(distro), Ok(arch)) = (
            get(labels::DISTRO).parse::<Distro>(),
            get(labels::ARCH).parse::<Arch>(),
        ) else {
            tracing::warn!(
                "image {} has base labels that do not parse; skipped",
                img.id
            );
            continue;
        };
        let board = get(labels::BOARD).parse::<Board>().ok();
        let suite = Some(get(labels::SUITE)).filter(|s| !s.is_empty());
        for tag in &img.repo_tags {
            if tag == "<none>:<none>" || is_temp_tag(tag).is_some() {
                continue;
            }
            out.push(BaseInfo {
                name: tag.clone(),
                id: img.id.clone(),
                distro,
                arch,
                board,
                suite: suite.clone(),
                origin: get(labels::ORIGIN),
                digest: get(labels::DIGEST),
                created: u64::try_from(img.created).unwrap_or(0) * 1_000_000,
                size: u64::try_from(img.size).unwrap_or(0),
            });
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Removes what interrupted attempts of earlier daemon processes left: images still under a
/// temporary tag in our namespace, and replaced bases that have become unused (untagged,
/// nothing built on them: garbage whoever made them). Returns how many references were
/// removed. Meant for daemon start-up (crash-only design); in-progress work of this process is
/// recognised by its PID and left alone.
pub async fn reap(docker: &Docker, cfg: &BaseConfig) -> Result<usize, BaseError> {
    let filters: HashMap<&str, Vec<&str>> = HashMap::from([("label", vec![labels::BASE])]);
    let images = docker
        .list_images(Some(
            ListImagesOptionsBuilder::new().filters(&filters).build(),
        ))
        .await
        .map_err(|e| BaseError::docker("list images", e))?;
    let ours = format!("{}/", cfg.image_namespace);
    let mut removed = 0;
    // Staged tags first: they sit on top of the importing ones.
    let mut temp: Vec<&String> = images
        .iter()
        .flat_map(|i| i.repo_tags.iter())
        .filter(|t| t.starts_with(&ours) && is_temp_tag(t).is_some_and(is_stale_suffix))
        .collect();
    temp.sort_by_key(|t| !t.contains(&format!(":{STAGED_PREFIX}")));
    for t in temp {
        match docker
            .remove_image(t, Some(RemoveImageOptionsBuilder::new().build()), None)
            .await
        {
            Ok(_) => removed += 1,
            Err(e) => tracing::warn!("cannot remove leftover base image {t}: {e}"),
        }
    }
    for img in &images {
        let untagged = img.repo_tags.iter().all(|t| t == "<none>:<none>");
        if untagged && img.labels.get(labels::BASE).map(String::as_str) == Some(labels::BASE_DONE) {
            // An old base replaced by a refresh; Docker refuses if built images still use it.
            if docker
                .remove_image(
                    &img.id,
                    Some(RemoveImageOptionsBuilder::new().build()),
                    None,
                )
                .await
                .is_ok()
            {
                removed += 1;
            }
        }
    }
    Ok(removed)
}

/// Temporary references an attempt created, removed on error, on cancellation and, through
/// `Drop`, when the attempt's future is dropped half-way.
struct Cleanup {
    docker: Docker,
    refs: Vec<String>,
    /// After success the images stay (under their final tag); only the names go.
    noprune: bool,
}

impl Cleanup {
    fn new(docker: Docker) -> Self {
        Cleanup {
            docker,
            refs: Vec::new(),
            noprune: false,
        }
    }

    fn push(&mut self, r: String) {
        self.refs.push(r);
    }

    fn untag_only(&mut self) {
        self.noprune = true;
    }

    async fn run(mut self) {
        let refs = std::mem::take(&mut self.refs);
        remove_refs(&self.docker, refs, self.noprune).await;
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if self.refs.is_empty() {
            return;
        }
        let refs = std::mem::take(&mut self.refs);
        let docker = self.docker.clone();
        let noprune = self.noprune;
        match tokio::runtime::Handle::try_current() {
            Ok(h) => {
                h.spawn(async move { remove_refs(&docker, refs, noprune).await });
            }
            Err(_) => tracing::warn!("cannot remove temporary base images {refs:?}: no runtime"),
        }
    }
}

/// Removes references newest first (staged before importing), ignoring ones already gone.
async fn remove_refs(docker: &Docker, mut refs: Vec<String>, noprune: bool) {
    refs.reverse();
    for r in refs {
        let opts = RemoveImageOptionsBuilder::new().noprune(noprune).build();
        match docker.remove_image(&r, Some(opts), None).await {
            Ok(_)
            | Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => {}
            Err(e) => tracing::warn!("cannot remove temporary base image {r}: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_lines_are_quoted() {
        assert_eq!(
            label_line("k", "mmdebstrap bookworm http://h/debian"),
            "LABEL k=\"mmdebstrap bookworm http://h/debian\""
        );
        assert_eq!(
            label_line("k", "a\"b$c\\d\ne"),
            "LABEL k=\"a\\\"b\\$c\\\\d e\""
        );
    }

    #[test]
    fn label_values_are_cleaned() {
        assert_eq!(label_value("http://h/it's\n"), "http://h/it%27s ");
    }

    #[test]
    fn temp_tags() {
        assert_eq!(is_temp_tag("pib-base/x:importing-1-ab"), Some("1-ab"));
        assert_eq!(is_temp_tag("pib-base/x:staged-1-ab"), Some("1-ab"));
        assert_eq!(is_temp_tag("pib-base/x:latest"), None);
        assert_eq!(is_temp_tag("localhost:5000/x"), None);
    }

    #[test]
    fn context_has_a_dockerfile() {
        let t = context_tar("FROM x\n").unwrap();
        let mut a = tar::Archive::new(&t[..]);
        let names: Vec<String> = a
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        assert_eq!(names, vec!["Dockerfile"]);
    }
}
