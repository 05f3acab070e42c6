//! Static checks of the bundled stages in `stages/{common,arch,debian}/NAME/`, for the stages
//! that cannot be built here (Arch Linux ARM) and as a fast first line for all of them:
//!
//! - layout: family folders, stage names by the shared grammar, a README.md and a
//!   Dockerfile.part in every stage, no common stage shadowed by both families, both families
//!   complete (`__init__`, `os`, `__cleanup__`);
//! - parts: only plain instructions, no `FROM`, `ONBUILD`, parser directives (`# syntax=`),
//!   `RUN` flags or heredocs, no `ADD` of URLs, no `COPY --from` (or any flag but `--chown`);
//! - files: every COPY/ADD source is `stages/<own name>/...` and exists; every file of the stage
//!   is copied by some instruction (or is its README / part);
//! - build args: every build arg a `RUN` or a copied script reads is declared with `ARG` in the
//!   stage before it is used, without a default, and named in the README; only `ssh-keygen`
//!   declares `PIB_BUILD_ID`;
//! - shell: every `RUN` (continuations joined, as Docker joins them) passes `bash -n` and
//!   `shellcheck --shell=sh`; every shell script passes `bash -n` and `shellcheck`;
//! - `ssh-root/pubkeys/` ships without any key.
//!
//! shellcheck is required: the test fails, not skips, when it is missing.

use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use pib_dbus_interfaces::stage::check_name;

/// Folders under `stages/`: stages for both families, then one per family.
const FAMILIES: &[&str] = &["common", "arch", "debian"];
/// Build args the daemon passes to every build.
const BUILD_ARGS: &[&str] = &[
    "BOARD",
    "ARCH",
    "DISTRO",
    "HOSTNAME",
    "LOCALE",
    "TIMEZONE",
    "REPO_URL",
    "PIB_BUILD_ID",
];
/// The per-build unique arg, and the one stage allowed to declare it.
const BUILD_ID: &str = "PIB_BUILD_ID";
const BUILD_ID_STAGE: &str = "ssh-keygen";
/// Instructions a bundled part may use.
const ALLOWED: &[&str] = &["RUN", "COPY", "ADD", "ARG", "ENV", "LABEL", "WORKDIR"];
/// Stages every family must resolve.
const REQUIRED: &[&str] = &["__init__", "os", "__cleanup__"];

struct Stage {
    family: String,
    name: String,
    dir: PathBuf,
}

impl Stage {
    fn label(&self) -> String {
        format!("stages/{}/{}", self.family, self.name)
    }

    /// The parsed part; a missing one is the layout test's finding, so it reads as empty here.
    fn part(&self) -> Part {
        let text = fs::read_to_string(self.dir.join("Dockerfile.part")).unwrap_or_default();
        Part::parse(&text)
    }
}

fn stages_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../stages")
}

/// Every `stages/FAMILY/NAME` directory; problems with the layout itself go to `problems`.
fn stages(problems: &mut Vec<String>) -> Vec<Stage> {
    let root = stages_root();
    let mut out = Vec::new();
    let top = fs::read_dir(&root).unwrap_or_else(|e| panic!("cannot list {}: {e}", root.display()));
    let mut top: Vec<_> = top.map(|e| e.expect("read stages/").path()).collect();
    top.sort();
    for path in top {
        let name = file_name(&path);
        if path.is_file() {
            if name != "README.md" {
                problems.push(format!(
                    "stages/{name}: only README.md and family folders belong here"
                ));
            }
            continue;
        }
        if !FAMILIES.contains(&name.as_str()) {
            problems.push(format!(
                "stages/{name}: not a family folder (one of {FAMILIES:?})"
            ));
            continue;
        }
        let mut entries: Vec<_> = fs::read_dir(&path)
            .expect("list family folder")
            .map(|e| e.expect("read family folder").path())
            .collect();
        entries.sort();
        for dir in entries {
            let stage = file_name(&dir);
            if !dir.is_dir() {
                problems.push(format!("stages/{name}/{stage}: not a stage directory"));
                continue;
            }
            out.push(Stage {
                family: name.clone(),
                name: stage,
                dir,
            });
        }
    }
    assert!(!out.is_empty(), "no stages found under {}", root.display());
    out
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Every file below `dir`, relative to it.
fn files_below(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in fs::read_dir(&d).expect("list stage directory") {
            let path = entry.expect("read stage directory").path();
            if path.is_dir() {
                todo.push(path);
            } else {
                out.push(path.strip_prefix(dir).expect("below dir").to_path_buf());
            }
        }
    }
    out.sort();
    out
}

fn report(what: &str, problems: &[String]) {
    assert!(
        problems.is_empty(),
        "{what}: {} problem(s):\n  {}",
        problems.len(),
        problems.join("\n  ")
    );
}

// ---------------------------------------------------------------------------------------------
// Dockerfile.part parsing, the way Docker's classic builder reads it.

struct Instr {
    /// 1-based line of the instruction's first line.
    line: usize,
    keyword: String,
    /// Everything after the keyword, continuation lines joined as Docker joins them.
    args: String,
}

struct Part {
    instrs: Vec<Instr>,
    /// Lines that look like parser directives (`# syntax=...`, `# escape=...`).
    directives: Vec<usize>,
}

impl Part {
    fn parse(text: &str) -> Part {
        let mut instrs = Vec::new();
        let mut directives = Vec::new();
        let mut current: Option<(usize, String)> = None;
        for (i, raw) in text.lines().enumerate() {
            let line_no = i + 1;
            let trimmed = raw.trim_start();
            if let Some(comment) = trimmed.strip_prefix('#') {
                if let Some((key, _)) = comment.split_once('=') {
                    let key = key.trim().to_ascii_lowercase();
                    if matches!(key.as_str(), "syntax" | "escape" | "check") {
                        directives.push(line_no);
                    }
                }
                // Comment lines are dropped, also inside a continued instruction.
                continue;
            }
            if trimmed.is_empty() && current.is_none() {
                continue;
            }
            let (body, continues) = match raw.trim_end().strip_suffix('\\') {
                Some(body) => (body, true),
                None => (raw, false),
            };
            let (start, mut joined) = current.take().unwrap_or((line_no, String::new()));
            joined.push_str(body);
            if continues {
                current = Some((start, joined));
            } else {
                instrs.push(Instr::new(start, &joined));
            }
        }
        if let Some((start, joined)) = current {
            instrs.push(Instr::new(start, &joined));
        }
        Part { instrs, directives }
    }

    /// Names declared with ARG, in order, with the instruction index and whether a default
    /// value was given.
    fn args(&self) -> Vec<(usize, String, bool)> {
        let mut out = Vec::new();
        for (i, ins) in self.instrs.iter().enumerate() {
            if ins.keyword != "ARG" {
                continue;
            }
            for decl in ins.args.split_whitespace() {
                match decl.split_once('=') {
                    Some((name, _)) => out.push((i, name.to_owned(), true)),
                    None => out.push((i, decl.to_owned(), false)),
                }
            }
        }
        out
    }

    /// (index, RUN text) of every RUN.
    fn runs(&self) -> impl Iterator<Item = (usize, &Instr)> {
        self.instrs
            .iter()
            .enumerate()
            .filter(|(_, ins)| ins.keyword == "RUN")
    }
}

impl Instr {
    fn new(line: usize, text: &str) -> Instr {
        let text = text.trim();
        let (keyword, args) = text.split_once(char::is_whitespace).unwrap_or((text, ""));
        Instr {
            line,
            keyword: keyword.to_ascii_uppercase(),
            args: args.trim().to_owned(),
        }
    }

    /// Leading `--flag` words and the rest (COPY/ADD/RUN).
    fn flags_and_rest(&self) -> (Vec<&str>, &str) {
        let mut flags = Vec::new();
        let mut rest = self.args.as_str();
        while rest.starts_with("--") {
            let (flag, tail) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
            flags.push(flag);
            rest = tail.trim_start();
        }
        (flags, rest)
    }

    /// COPY/ADD sources and destination, shell form or JSON form.
    fn copy_paths(&self) -> Result<(Vec<String>, String), String> {
        let (_, rest) = self.flags_and_rest();
        let mut words: Vec<String> = if rest.starts_with('[') {
            serde_json::from_str(rest).map_err(|e| format!("bad JSON form: {e}"))?
        } else {
            rest.split_whitespace().map(str::to_owned).collect()
        };
        if words.len() < 2 {
            return Err("needs a source and a destination".into());
        }
        let dest = words.pop().expect("two or more");
        Ok((words, dest))
    }
}

/// True if the text holds a here-document (`<<WORD`, not the here-string `<<<`).
fn has_heredoc(text: &str) -> bool {
    let bytes = text.as_bytes();
    (0..bytes.len().saturating_sub(1)).any(|i| {
        bytes[i] == b'<'
            && bytes[i + 1] == b'<'
            && (i == 0 || bytes[i - 1] != b'<')
            && bytes.get(i + 2) != Some(&b'<')
    })
}

/// Variables a shell text expands (`$NAME`, `${NAME...}`), outside single quotes.
fn expanded_vars(text: &str) -> BTreeSet<String> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = BTreeSet::new();
    let (mut single, mut double) = (false, false);
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if single {
            if c == '\'' {
                single = false;
            }
        } else if c == '\\' {
            i += 1; // the next character is literal
        } else if c == '\'' && !double {
            single = true;
        } else if c == '"' {
            double = !double;
        } else if c == '#' && !double && (i == 0 || chars[i - 1].is_whitespace()) {
            // A comment runs to the end of the line.
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '$' {
            let braced = chars.get(i + 1) == Some(&'{');
            let start = if braced { i + 2 } else { i + 1 };
            let mut end = start;
            while end < chars.len()
                && (chars[end].is_ascii_alphanumeric() || chars[end] == '_')
                && !(end == start && chars[end].is_ascii_digit())
            {
                end += 1;
            }
            if end > start {
                out.insert(chars[start..end].iter().collect());
            }
        }
        i += 1;
    }
    out
}

/// The interpreter of a script file (`sh`, `bash`, ...) if it starts with a shebang.
fn shebang(path: &Path) -> Option<String> {
    let text = fs::read(path).ok()?;
    let first = text.split(|b| *b == b'\n').next()?;
    let first = std::str::from_utf8(first).ok()?.strip_prefix("#!")?;
    let mut words = first.split_whitespace();
    let mut interp = words.next()?;
    if interp.ends_with("/env") {
        interp = words.next()?;
    }
    Some(interp.rsplit('/').next()?.to_owned())
}

fn is_shell(interp: &str) -> bool {
    matches!(interp, "sh" | "bash" | "dash")
}

/// Shell scripts of a stage, relative to its directory.
fn scripts(stage: &Stage) -> Vec<(PathBuf, String)> {
    files_below(&stage.dir)
        .into_iter()
        .filter_map(|rel| {
            let interp = shebang(&stage.dir.join(&rel))?;
            is_shell(&interp).then_some((rel, interp))
        })
        .collect()
}

/// Runs a command with `input` on stdin; Err(output) when it fails.
fn run_with_input(cmd: &mut Command, input: &str) -> Result<(), String> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write stdin");
    let out = child.wait_with_output().expect("wait");
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn require_shellcheck() {
    let ok = Command::new("shellcheck")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "shellcheck is not installed, and the stage checks need it: install it \
         (`apt-get install shellcheck`; `make dev-up` does)"
    );
}

// ---------------------------------------------------------------------------------------------

#[test]
fn layout_names_and_readmes() {
    let mut problems = Vec::new();
    let all = stages(&mut problems);
    for s in &all {
        if let Err(e) = check_name(&s.name) {
            problems.push(format!("{}: {e}", s.label()));
        }
        for required in ["README.md", "Dockerfile.part"] {
            let path = s.dir.join(required);
            match fs::metadata(&path) {
                Ok(m) if m.is_file() && m.len() > 0 => {}
                _ => problems.push(format!("{}: {required} is missing or empty", s.label())),
            }
        }
    }
    let has = |family: &str, name: &str| all.iter().any(|s| s.family == family && s.name == name);
    for s in all.iter().filter(|s| s.family == "common") {
        if has("arch", &s.name) && has("debian", &s.name) {
            problems.push(format!(
                "{}: both families override it, so it is never used",
                s.label()
            ));
        }
    }
    for family in ["arch", "debian"] {
        for name in REQUIRED {
            if !has(family, name) && !has("common", name) {
                problems.push(format!("the {family} family has no {name} stage"));
            }
        }
    }
    report("stage layout", &problems);
}

#[test]
fn parts_use_only_plain_instructions() {
    let mut problems = Vec::new();
    for s in stages(&mut problems) {
        let part = s.part();
        let at = |line: usize| format!("{}/Dockerfile.part:{line}", s.label());
        for line in &part.directives {
            problems.push(format!("{}: parser directives are not allowed", at(*line)));
        }
        if part.instrs.is_empty() && s.dir.join("Dockerfile.part").is_file() {
            problems.push(format!("{}: the part has no instructions", s.label()));
        }
        for ins in &part.instrs {
            let k = ins.keyword.as_str();
            match k {
                "FROM" => problems.push(format!(
                    "{}: FROM is not allowed (the pipeline writes the only FROM)",
                    at(ins.line)
                )),
                "ONBUILD" => problems.push(format!("{}: ONBUILD is not allowed", at(ins.line))),
                _ if !ALLOWED.contains(&k) => problems.push(format!(
                    "{}: {k} is not allowed in a bundled stage (allowed: {ALLOWED:?})",
                    at(ins.line)
                )),
                _ => {}
            }
            match k {
                "RUN" => {
                    if ins.args.starts_with("--") {
                        problems.push(format!("{}: RUN flags are not allowed", at(ins.line)));
                    }
                    if ins.args.starts_with('[') {
                        problems.push(format!(
                            "{}: use the shell form of RUN (it is checked with bash -n and shellcheck)",
                            at(ins.line)
                        ));
                    }
                    if has_heredoc(&ins.args) {
                        problems.push(format!(
                            "{}: here-documents need BuildKit; the classic builder reads their lines as instructions",
                            at(ins.line)
                        ));
                    }
                }
                "COPY" | "ADD" => {
                    let (flags, _) = ins.flags_and_rest();
                    for flag in flags {
                        if !flag.starts_with("--chown=") {
                            problems.push(format!(
                                "{}: {k} {flag} is not allowed (only --chown=)",
                                at(ins.line)
                            ));
                        }
                    }
                    if let Ok((sources, _)) = ins.copy_paths() {
                        for src in sources {
                            if k == "ADD" && (src.contains("://") || src.starts_with("git@")) {
                                problems.push(format!(
                                    "{}: ADD of a remote source ({src}) is not allowed",
                                    at(ins.line)
                                ));
                            }
                        }
                    }
                }
                _ => {}
            }
        }
    }
    report("Dockerfile.part instructions", &problems);
}

#[test]
fn copies_come_from_the_stage_itself_and_every_file_is_used() {
    let mut problems = Vec::new();
    for s in stages(&mut problems) {
        let part = s.part();
        let prefix = format!("stages/{}/", s.name);
        let mut used: Vec<PathBuf> = Vec::new();
        for ins in part
            .instrs
            .iter()
            .filter(|i| i.keyword == "COPY" || i.keyword == "ADD")
        {
            let at = format!("{}/Dockerfile.part:{}", s.label(), ins.line);
            let (sources, _) = match ins.copy_paths() {
                Ok(paths) => paths,
                Err(e) => {
                    problems.push(format!("{at}: {}: {e}", ins.keyword));
                    continue;
                }
            };
            for src in sources {
                if src.contains("://") {
                    continue; // reported by the instruction check
                }
                let rel = if src == format!("stages/{}", s.name) {
                    ""
                } else if let Some(rel) = src.strip_prefix(&prefix) {
                    rel
                } else {
                    problems.push(format!(
                        "{at}: {src} is not below {prefix} (a stage copies only its own files)"
                    ));
                    continue;
                };
                let rel = rel.trim_end_matches('/');
                if rel.split('/').any(|c| c == ".." || c == ".") {
                    problems.push(format!("{at}: {src} must not contain . or .. components"));
                    continue;
                }
                if rel.contains(['*', '?', '[']) {
                    problems.push(format!(
                        "{at}: {src}: wildcards are not allowed (name the files)"
                    ));
                    continue;
                }
                let path = s.dir.join(rel);
                if !path.exists() {
                    problems.push(format!("{at}: {src} does not exist in {}", s.label()));
                    continue;
                }
                used.push(PathBuf::from(rel));
            }
        }
        for file in files_below(&s.dir) {
            let own = file == Path::new("README.md") || file == Path::new("Dockerfile.part");
            let copied = used
                .iter()
                .any(|u| u.as_os_str().is_empty() || file.starts_with(u));
            if !own && !copied {
                problems.push(format!(
                    "{}/{}: no COPY of the part uses this file",
                    s.label(),
                    file.display()
                ));
            }
        }
    }
    report("COPY sources", &problems);
}

#[test]
fn build_args_are_declared_where_they_are_read() {
    let mut problems = Vec::new();
    for s in stages(&mut problems) {
        let part = s.part();
        let args = part.args();
        let readme = fs::read_to_string(s.dir.join("README.md")).unwrap_or_default();
        let declared_before =
            |index: usize, name: &str| args.iter().any(|(i, n, _)| *i < index && n == name);
        for (_, name, has_default) in &args {
            if BUILD_ARGS.contains(&name.as_str()) && *has_default {
                problems.push(format!(
                    "{}: ARG {name} has a default; the pipeline always passes it",
                    s.label()
                ));
            }
            if !readme.contains(name.as_str()) {
                problems.push(format!(
                    "{}: README.md does not mention the build arg {name} the part declares",
                    s.label()
                ));
            }
            if name == BUILD_ID && s.name != BUILD_ID_STAGE {
                problems.push(format!(
                    "{}: only {BUILD_ID_STAGE} may declare {BUILD_ID}: it makes every later step run again on every build",
                    s.label()
                ));
            }
        }
        for (index, ins) in part.runs() {
            for var in expanded_vars(&ins.args) {
                if BUILD_ARGS.contains(&var.as_str()) && !declared_before(index, &var) {
                    problems.push(format!(
                        "{}/Dockerfile.part:{}: RUN reads ${var} but the stage declares no ARG {var} before it",
                        s.label(),
                        ins.line
                    ));
                }
            }
        }
        // Scripts see build args through the environment of the RUN that starts them.
        for (rel, _) in scripts(&s) {
            let text = fs::read_to_string(s.dir.join(&rel)).unwrap_or_default();
            for var in expanded_vars(&text) {
                if BUILD_ARGS.contains(&var.as_str()) && !args.iter().any(|(_, n, _)| *n == var) {
                    problems.push(format!(
                        "{}/{}: reads ${var}, but the part declares no ARG {var}",
                        s.label(),
                        rel.display()
                    ));
                }
            }
        }
    }
    report("build args", &problems);
}

#[test]
fn run_instructions_pass_bash_and_shellcheck() {
    require_shellcheck();
    let mut problems = Vec::new();
    for s in stages(&mut problems) {
        for (_, ins) in s.part().runs() {
            if ins.args.starts_with('[') || ins.args.starts_with("--") {
                continue; // reported by the instruction check
            }
            let at = format!("{}/Dockerfile.part:{}", s.label(), ins.line);
            let script = format!("{}\n", ins.args);
            if let Err(out) = run_with_input(Command::new("bash").arg("-n"), &script) {
                problems.push(format!("{at}: bash -n: {}", out.trim()));
            }
            // RUN goes through /bin/sh: dash on Debian, bash on Arch. Hold it to POSIX sh.
            if let Err(out) = run_with_input(
                Command::new("shellcheck").args(["--shell=sh", "--format=gcc", "-"]),
                &script,
            ) {
                problems.push(format!("{at}: shellcheck:\n{}", out.trim()));
            }
        }
    }
    report("RUN instructions", &problems);
}

#[test]
fn shell_scripts_pass_bash_and_shellcheck() {
    require_shellcheck();
    let mut problems = Vec::new();
    let mut checked = 0;
    for s in stages(&mut problems) {
        for (rel, interp) in scripts(&s) {
            checked += 1;
            let path = s.dir.join(&rel);
            let at = format!("{}/{}", s.label(), rel.display());
            let out = Command::new("bash")
                .arg("-n")
                .arg(&path)
                .output()
                .expect("run bash -n");
            if !out.status.success() {
                problems.push(format!(
                    "{at}: bash -n: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
            let out = Command::new("shellcheck")
                .arg("--format=gcc")
                .arg(format!("--shell={interp}"))
                .arg(&path)
                .output()
                .expect("run shellcheck");
            if !out.status.success() {
                problems.push(format!(
                    "{at}: shellcheck:\n{}",
                    String::from_utf8_lossy(&out.stdout).trim()
                ));
            }
        }
    }
    assert!(checked > 0, "no shell scripts found in the stages");
    report("shell scripts", &problems);
}

#[test]
fn ssh_root_ships_without_keys() {
    let mut problems = Vec::new();
    let all = stages(&mut problems);
    let ssh_root: Vec<_> = all.iter().filter(|s| s.name == "ssh-root").collect();
    assert!(!ssh_root.is_empty(), "there is no ssh-root stage");
    for s in ssh_root {
        let dir = s.dir.join("pubkeys");
        if !dir.is_dir() {
            problems.push(format!("{}: pubkeys/ is missing", s.label()));
            continue;
        }
        let files = files_below(&dir);
        if files.is_empty() {
            problems.push(format!(
                "{}: pubkeys/ needs a placeholder (README.md) so that git keeps it",
                s.label()
            ));
        }
        for f in files {
            let text = fs::read_to_string(dir.join(&f)).unwrap_or_default();
            let looks_like_key = text.lines().any(|l| {
                let l = l.trim_start();
                l.starts_with("ssh-") || l.starts_with("ecdsa-") || l.starts_with("sk-")
            });
            if f.extension().is_some_and(|e| e == "pub") || looks_like_key {
                problems.push(format!(
                    "{}/pubkeys/{}: the bundled stage must not ship a key",
                    s.label(),
                    f.display()
                ));
            }
        }
    }
    report("ssh-root keys", &problems);
}

#[test]
fn the_parser_and_scanner_behave() {
    let part = Part::parse(
        "# a comment\nARG BOARD\nRUN echo a \\\n\t# dropped\n\t&& echo \"$BOARD\" '$NOT' ${ARCH:-x}\n\nCOPY --chown=0:0 stages/x/a /a\n",
    );
    assert_eq!(part.instrs.len(), 3);
    assert_eq!(part.instrs[1].keyword, "RUN");
    assert_eq!(part.instrs[1].line, 3);
    assert_eq!(
        part.instrs[1].args,
        "echo a \t&& echo \"$BOARD\" '$NOT' ${ARCH:-x}"
    );
    let vars = expanded_vars(&part.instrs[1].args);
    assert!(vars.contains("BOARD") && vars.contains("ARCH") && !vars.contains("NOT"));
    let (sources, dest) = part.instrs[2].copy_paths().expect("copy paths");
    assert_eq!(
        (sources, dest.as_str()),
        (vec!["stages/x/a".to_owned()], "/a")
    );
    assert!(Part::parse("# syntax=docker/dockerfile:1\nRUN true\n").directives == vec![1]);
    assert!(has_heredoc("cat <<EOF") && !has_heredoc("read x <<< \"$y\""));
}
