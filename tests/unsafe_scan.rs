//! `unsafe` code lives in one small reviewed module per crate and nowhere else.
//!
//! The compiler already refuses it elsewhere (`unsafe_code = "deny"` in the workspace's
//! `[lints]`), but a crate that forgets `[lints] workspace = true`, or an `#[allow]` slipped
//! into some other file, would switch that off without anyone noticing. This test reads the
//! sources themselves: code only, with comments, strings and character literals removed, so a
//! word in prose does not count and a real `unsafe` block cannot hide behind a string.

use std::path::{Path, PathBuf};

use pib_tests::repo_root;

/// The reviewed modules: the only files where `unsafe` may appear. The lead's report names
/// them so that new code needing `unsafe` (ioctls, raw sockets) goes there.
const REVIEWED: &[&str] = &["daemon/src/sys.rs", "client/src/sys.rs"];

/// The workspace's crates (every one must take the workspace's lints).
const CRATES: &[&str] = &["daemon", "client", "dbus-interfaces", "tests"];

/// Source text with comments, string literals and character literals replaced by spaces
/// (newlines kept, so positions still give line numbers).
fn code_only(src: &str) -> String {
    let b: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len());
    let blank = |c: char| if c == '\n' { '\n' } else { ' ' };
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let next = b.get(i + 1).copied();
        // Line comment (also doc comments).
        if c == '/' && next == Some('/') {
            while i < b.len() && b[i] != '\n' {
                out.push(' ');
                i += 1;
            }
            continue;
        }
        // Block comment; Rust's nest.
        if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < b.len() {
                if b[i] == '/' && b.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if b[i] == '*' && b.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(blank(b[i]));
                    i += 1;
                }
            }
            continue;
        }
        let ident_before = i > 0 && (b[i - 1].is_alphanumeric() || b[i - 1] == '_');
        // Raw strings: r"..", r#".."#, br#".."# (the `b` passes as an ordinary character).
        if c == 'r' && !ident_before && matches!(next, Some('"') | Some('#')) {
            let mut j = i + 1;
            let mut hashes = 0;
            while b.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if b.get(j) == Some(&'"') {
                let close: String = std::iter::once('"')
                    .chain(std::iter::repeat_n('#', hashes))
                    .collect();
                let rest: String = b[j + 1..].iter().collect();
                let len = rest.find(&close).map_or(rest.len(), |n| n + close.len());
                let end = (j + 1 + rest[..len].chars().count()).min(b.len());
                for &ch in &b[i..end] {
                    out.push(blank(ch));
                }
                i = end;
                continue;
            }
        }
        if c == '"' {
            out.push(' ');
            i += 1;
            while i < b.len() && b[i] != '"' {
                if b[i] == '\\' && i + 1 < b.len() {
                    out.push(' ');
                    i += 1;
                }
                out.push(blank(b[i]));
                i += 1;
            }
            out.push(' ');
            i += 1;
            continue;
        }
        // A character literal ('x', '\n', '\u{..}', '"'), not a lifetime ('a).
        if c == '\'' {
            let end = if next == Some('\\') {
                (i + 2..b.len()).find(|&k| b[k] == '\'')
            } else if b.get(i + 2) == Some(&'\'') {
                Some(i + 2)
            } else {
                None
            };
            if let Some(end) = end {
                for &ch in &b[i..=end] {
                    out.push(blank(ch));
                }
                i = end + 1;
                continue;
            }
        }
        out.push(c);
        i += 1;
    }
    out
}

/// Line numbers (1-based) where the word `word` appears as code.
fn code_uses(src: &str, word: &str) -> Vec<usize> {
    let code = code_only(src);
    let is_ident = |c: char| c.is_alphanumeric() || c == '_';
    let mut lines = Vec::new();
    for (n, line) in code.lines().enumerate() {
        let mut from = 0;
        while let Some(pos) = line[from..].find(word) {
            let start = from + pos;
            let end = start + word.len();
            let before = line[..start].chars().next_back();
            let after = line[end..].chars().next();
            if !before.is_some_and(is_ident) && !after.is_some_and(is_ident) {
                lines.push(n + 1);
                break;
            }
            from = end;
        }
    }
    lines
}

/// Every .rs file of the workspace's crates (build output excluded).
fn rust_sources() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.unwrap().path();
            if path.is_dir() {
                if path.file_name().is_some_and(|n| n != "target") {
                    walk(&path, out);
                }
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let root = repo_root();
    let mut out = Vec::new();
    for krate in CRATES {
        walk(&root.join(krate), &mut out);
    }
    out.sort();
    out
}

fn relative(path: &Path) -> String {
    path.strip_prefix(repo_root())
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

#[test]
fn the_scanner_sees_code_and_not_prose() {
    let tricky = r##"
        // unsafe in a comment
        /* unsafe /* nested unsafe */ still a comment */
        let s = "unsafe { in a string }";
        let r = r#"unsafe "quoted" inside"#;
        let c = '"'; let q = '\''; fn f<'a>(x: &'a str) {}
        let is_unsafe = 1; let unsafe_code = 2;
    "##;
    assert!(
        code_uses(tricky, "unsafe").is_empty(),
        "{}",
        code_only(tricky)
    );
    let real = "let a = '\"';\nlet b = \"x\";\nlet p = unsafe { f() };\n";
    assert_eq!(code_uses(real, "unsafe"), vec![3]);
    assert_eq!(
        code_uses("fn f<'a>(x: &'a u8) { unsafe { g() } }", "unsafe"),
        vec![1]
    );
    assert_eq!(code_uses("#[allow(unsafe_code)]", "unsafe_code"), vec![1]);
}

#[test]
fn unsafe_appears_only_in_the_reviewed_modules() {
    let sources = rust_sources();
    assert!(
        sources.len() > 50,
        "found only {} sources: is the scan looking in the right place?",
        sources.len()
    );
    let mut offenders = Vec::new();
    for path in &sources {
        let rel = relative(path);
        if REVIEWED.contains(&rel.as_str()) {
            continue;
        }
        let src = std::fs::read_to_string(path).unwrap();
        for line in code_uses(&src, "unsafe") {
            offenders.push(format!("{rel}:{line}: unsafe"));
        }
        // Lifting the lint anywhere else would let unsafe code back in unseen by review.
        for word in ["unsafe_code", "unsafe_op_in_unsafe_fn"] {
            for line in code_uses(&src, word) {
                offenders.push(format!("{rel}:{line}: {word}"));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "unsafe outside {REVIEWED:?}:\n{}",
        offenders.join("\n")
    );
}

#[test]
fn every_unsafe_block_in_a_reviewed_module_says_why_it_is_sound() {
    for rel in REVIEWED {
        let src = std::fs::read_to_string(repo_root().join(rel)).unwrap();
        let lines: Vec<&str> = src.lines().collect();
        let uses = code_uses(&src, "unsafe");
        assert!(
            !uses.is_empty(),
            "{rel} holds no unsafe: drop it from REVIEWED"
        );
        for n in uses {
            // The SAFETY comment sits in the comment block right above the line.
            let justified = lines[..n - 1]
                .iter()
                .rev()
                .take_while(|l| l.trim_start().starts_with("//"))
                .any(|l| l.contains("SAFETY:"));
            assert!(
                justified,
                "{rel}:{n}: unsafe without a SAFETY: comment above"
            );
        }
        assert!(
            src.contains("#![allow(unsafe_code)]"),
            "{rel} must lift the lint for itself only"
        );
    }
}

fn manifest(dir: &Path) -> toml::Table {
    let path = dir.join("Cargo.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    text.parse()
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn every_crate_takes_the_workspace_lint_that_denies_unsafe() {
    let root = repo_root();
    let workspace = manifest(&root);
    assert_eq!(
        workspace["workspace"]["lints"]["rust"]["unsafe_code"].as_str(),
        Some("deny"),
        "Cargo.toml: [workspace.lints.rust] unsafe_code = \"deny\""
    );
    for krate in CRATES {
        let doc = manifest(&root.join(krate));
        assert_eq!(
            doc.get("lints")
                .and_then(|l| l.get("workspace"))
                .and_then(|w| w.as_bool()),
            Some(true),
            "{krate}/Cargo.toml lacks `[lints] workspace = true`"
        );
    }
}
