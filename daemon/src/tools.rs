//! Programs the daemon runs. A D-Bus-activated daemon inherits the bus's minimal PATH, which
//! often lacks the sbin directories where mkfs and blockdev live, so they are looked up in
//! the standard places.

use std::path::PathBuf;

const DIRS: &[&str] = &["/usr/sbin", "/usr/bin", "/sbin", "/bin"];

/// The full path of `name`, or the bare name (so the error names it) when it is nowhere.
pub fn path(name: &str) -> PathBuf {
    DIRS.iter()
        .map(|d| PathBuf::from(d).join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from(name))
}

#[cfg(test)]
mod tests {
    #[test]
    fn finds_sbin_tools() {
        assert!(super::path("e2fsck").is_absolute());
        assert_eq!(
            super::path("no-such-tool-here"),
            std::path::Path::new("no-such-tool-here")
        );
    }
}
