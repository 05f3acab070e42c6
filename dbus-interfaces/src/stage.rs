//! Stage names: the grammar both sides enforce.
//!
//! A stage name is `__init__`, `__cleanup__`, or 1 to 64 characters of lower-case ASCII
//! letters, digits, `-`, `_` and `.`, starting with a letter or digit. That keeps names safe
//! as directory names, tar paths and Dockerfile comments: no `/`, no `..`, no leading `-`, no
//! whitespace or control characters.

/// The stage that prepares the base and comes first.
pub const INIT: &str = "__init__";
/// The stage that tidies the image and comes last.
pub const CLEANUP: &str = "__cleanup__";
/// Longest ordinary stage name.
pub const MAX_NAME_LEN: usize = 64;
/// Most stages in one build.
pub const MAX_STAGES: usize = 256;

/// Why a stage name is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StageNameError {
    #[error("a stage name is empty")]
    Empty,
    #[error("stage name {0:?} is longer than {MAX_NAME_LEN} characters")]
    TooLong(String),
    #[error(
        "stage name {0:?} is not allowed: use lower-case letters, digits, '-', '_' and '.', \
         starting with a letter or digit"
    )]
    BadCharacters(String),
}

/// Checks one stage name against the grammar.
pub fn check_name(name: &str) -> Result<(), StageNameError> {
    if name == INIT || name == CLEANUP {
        return Ok(());
    }
    if name.is_empty() {
        return Err(StageNameError::Empty);
    }
    if name.len() > MAX_NAME_LEN {
        let shown: String = name.chars().take(MAX_NAME_LEN).collect();
        return Err(StageNameError::TooLong(format!("{shown}…")));
    }
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let rest_ok =
        chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'));
    if first_ok && rest_ok && !name.contains("..") {
        Ok(())
    } else {
        Err(StageNameError::BadCharacters(name.to_owned()))
    }
}

/// Whether a relative symlink target, read from the link's own directory (`depth` directories
/// below its stage directory), stays inside the stage: `..` only at the start and at most
/// `depth` of them, then ordinary names. Absolute and empty targets never qualify. Client and
/// daemon both apply it to every link in a build context.
pub fn link_stays_inside(target: &[u8], depth: usize) -> bool {
    if target.is_empty() || target.first() == Some(&b'/') {
        return false;
    }
    let mut ups = 0;
    let mut descended = false;
    for component in target.split(|b| *b == b'/') {
        match component {
            b"" | b"." => {}
            b".." if descended => return false,
            b".." => {
                ups += 1;
                if ups > depth {
                    return false;
                }
            }
            _ => descended = true,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_stay_inside_their_stage() {
        assert!(link_stays_inside(b"file", 0));
        assert!(link_stays_inside(b"./sub/file", 0));
        assert!(link_stays_inside(b"../file", 1));
        for (bad, depth) in [
            (&b"../file"[..], 0),
            (b"/etc/shadow", 3),
            (b"", 0),
            (b"a/../../x", 2),
        ] {
            assert!(
                !link_stays_inside(bad, depth),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn accepts_the_grammar() {
        for ok in [
            "__init__",
            "__cleanup__",
            "os",
            "ssh-keygen",
            "no_bt",
            "v1.2",
            "9lives",
        ] {
            assert_eq!(check_name(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn refuses_everything_else() {
        let long = "a".repeat(65);
        for bad in [
            "", "../x", "/abs", "-rf", "UPPER", "a b", "a/b", "a\nb", "a\0b", "..", "a..b", "_x",
            ".hidden", "__init", "é", &long,
        ] {
            assert!(check_name(bad).is_err(), "{bad:?} accepted");
        }
        assert!(check_name(&"a".repeat(64)).is_ok());
    }
}
