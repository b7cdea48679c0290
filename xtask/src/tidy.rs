//! Tidy checks: the architecture invariants of `docs/ARCHITECTURE.md`, and house rules that a
//! compiler does not check.

mod modules;
mod source;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::project_root;
use source::Source;

/// Runtimes, sockets, HTTP stacks and TLS: what the layers below the transport never pull in.
const RUNTIME_SOCKET_TLS: &[&str] = &[
    "tokio",
    "async-std",
    "mio",
    "socket2",
    "hyper",
    "hyper-util",
    "reqwest",
    "rustls",
    "ring",
    "aws-lc-rs",
];

/// Database clients: what the job's logic never pulls in (stores plug in through its trait).
const DATABASES: &[&str] = &[
    "rusqlite",
    "libsqlite3-sys",
    "postgres",
    "tokio-postgres",
    "sqlx",
];

/// TLS crypto providers besides ring: two providers make rustls panic at run time.
const OTHER_CRYPTO: &[&str] = &[
    "aws-lc-rs",
    "aws-lc-sys",
    "openssl",
    "openssl-sys",
    "native-tls",
];

/// Crates that a layer must not depend on, directly or not, in its normal (non-dev) build.
/// Each entry is an invariant of `docs/ARCHITECTURE.md`.
const LAYER_RULES: &[(&str, &[&str], &str)] = &[
    (
        "cardsync-core",
        &[
            "http",
            "hyper",
            "hyper-util",
            "reqwest",
            "tokio",
            "async-std",
            "futures",
            "serde_json",
            "rustls",
            "mio",
            "socket2",
        ],
        "cardsync-core depends on no HTTP, I/O or async crate",
    ),
    (
        "cardsync-proto",
        RUNTIME_SOCKET_TLS,
        "cardsync-proto depends on no async runtime, socket or TLS crate",
    ),
    (
        "cardsync-hyper",
        OTHER_CRYPTO,
        "cardsync-hyper compiles in one TLS crypto provider",
    ),
    (
        "cardsync-cli",
        OTHER_CRYPTO,
        "cardsync-hyper compiles in one TLS crypto provider",
    ),
    (
        "cardsync-client",
        RUNTIME_SOCKET_TLS,
        "cardsync-client depends on no runtime, socket or TLS crate",
    ),
    (
        "cardsync-job",
        RUNTIME_SOCKET_TLS,
        "cardsync-job depends on no runtime, HTTP client, TLS or database crate",
    ),
    (
        "cardsync-job",
        DATABASES,
        "cardsync-job depends on no runtime, HTTP client, TLS or database crate",
    ),
];

pub(crate) fn run() -> Result<(), String> {
    let mut problems = layer_problems()?;
    problems.extend(module_doc_problems());
    problems.extend(upward_import_problems());
    problems.extend(hand_built_json_problems());
    problems.extend(transport_protocol_problems());
    problems.extend(store_protocol_problems());
    problems.extend(path_literal_problems());
    problems.extend(job_clock_problems());
    problems.extend(import_circle_problems());
    problems.extend(crash_hook_problems());
    if problems.is_empty() {
        eprintln!("tidy: all checks pass");
        Ok(())
    } else {
        Err(problems.join("\n"))
    }
}

/// The names of every package in the normal dependency tree of `package`.
fn normal_dependencies(package: &str) -> Result<Vec<String>, String> {
    let out = Command::new(env!("CARGO"))
        .current_dir(project_root())
        .args([
            "tree", "--quiet", "-p", package, "-e", "normal", "--prefix", "none",
        ])
        .args(["--format", "{p}"])
        .output()
        .map_err(|e| format!("cannot run cargo tree: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "cargo tree -p {package} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect())
}

fn layer_problems() -> Result<Vec<String>, String> {
    let mut problems = Vec::new();
    for (package, forbidden, invariant) in LAYER_RULES {
        let deps = normal_dependencies(package)?;
        for dep in deps.iter().filter(|d| forbidden.contains(&d.as_str())) {
            problems.push(format!("{invariant}, but it depends on {dep}"));
        }
    }
    Ok(problems)
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n == "target") {
                continue;
            }
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every source module opens with a `//!` comment saying what it is for.
fn module_doc_problems() -> Vec<String> {
    let root = project_root();
    let mut files = Vec::new();
    for dir in ["crates", "xtask/src"] {
        rust_files(&root.join(dir), &mut files);
    }
    files
        .into_iter()
        .filter(|p| p.components().any(|c| c.as_os_str() == "src"))
        .filter(|p| {
            let text = std::fs::read_to_string(p).unwrap_or_default();
            !text.trim_start().starts_with("//!")
        })
        .map(|p| {
            let rel = p.strip_prefix(&root).unwrap_or(&p).display().to_string();
            format!("{rel} does not open with a `//!` module comment")
        })
        .collect()
}

/// The command's `main.rs` only parses arguments and dispatches: no other module of the CLI
/// refers to anything of it but its modules (`crate::X` must name a module).
fn upward_import_problems() -> Vec<String> {
    let src = project_root().join("crates/cardsync-cli/src");
    let main = std::fs::read_to_string(src.join("main.rs")).unwrap_or_default();
    let modules: Vec<&str> = main
        .lines()
        .filter_map(|l| l.trim().strip_prefix("mod "))
        .filter_map(|l| l.strip_suffix(';'))
        .collect();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut problems = Vec::new();
    for path in files.iter().filter(|p| !p.ends_with("main.rs")) {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        for (i, line) in text.lines().enumerate() {
            let mut rest = line;
            while let Some(at) = rest.find("crate::") {
                rest = &rest[at + "crate::".len()..];
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == '{')
                    .collect();
                if name.starts_with('{') || !modules.contains(&name.as_str()) {
                    let rel = path.strip_prefix(project_root()).unwrap_or(path);
                    problems.push(format!(
                        "{}:{}: refers to `crate::{name}` of main.rs; main.rs only parses \
                         arguments and dispatches: move it to a module",
                        rel.display(),
                        i + 1
                    ));
                }
            }
        }
    }
    problems
}

/// The code of a Rust file: its lines without line comments (`//`, `///`, `//!`), so that
/// documentation may name what the code must not use.
fn code_lines(path: &Path) -> Vec<(usize, String)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.split("//").next().unwrap_or("").to_owned()))
        .filter(|(_, l)| !l.trim().is_empty())
        .collect()
}

fn relative(path: &Path) -> String {
    let root = project_root();
    path.strip_prefix(&root)
        .unwrap_or(path)
        .display()
        .to_string()
}

/// What writing or reading JSON by hand looks like.
const HAND_BUILT_JSON: &[&str] = &[
    "json!",
    "serde_json::Value",
    "serde_json::Map",
    "Value::Object",
    "format!(\"{{",
    "\"{\\\"",
];

const WIRE_FORMAT_ONCE: &str = "the wire format is written once, in cardsync-proto";

/// The emulator builds no JSON by hand: its answers, webhooks and request reading come from
/// `cardsync_proto::server`, and its own control answers are typed structs.
fn hand_built_json_problems() -> Vec<String> {
    let mut files = Vec::new();
    rust_files(
        &project_root().join("crates/cardsync-sandbox/src"),
        &mut files,
    );
    let mut problems = Vec::new();
    for path in &files {
        for (n, line) in code_lines(path) {
            if let Some(pattern) = HAND_BUILT_JSON.iter().find(|p| line.contains(*p)) {
                problems.push(format!(
                    "{}:{n}: `{pattern}`: {WIRE_FORMAT_ONCE}; use cardsync_proto::server or a \
                     typed struct",
                    relative(path)
                ));
            }
        }
    }
    problems
}

/// What the transport may use of cardsync-proto: the transport contract, the configuration it
/// is built from, and the event type the receiver hands on.
const TRANSPORT_MAY_USE: &[&str] = &[
    "transport",
    "retry::Reached",
    "MAX_RESPONSE_BODY",
    "Config",
    "WebhookEvent",
];

const TRANSPORT_HOLDS_NO_PROTOCOL: &str = "cardsync-hyper holds no protocol logic";

/// The names a file's code takes from `cardsync_proto`, with `use` groups expanded (one level,
/// as `rustfmt` writes them).
fn proto_paths(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("cardsync_proto::") {
        rest = &rest[at + "cardsync_proto::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            out.extend(
                group[..end]
                    .split(',')
                    .map(|p| p.split_whitespace().collect::<String>())
                    .filter(|p| !p.is_empty()),
            );
        } else {
            let path: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            out.push(path.trim_end_matches(':').to_owned());
        }
    }
    out
}

/// cardsync-hyper encodes and decodes nothing: of cardsync-proto it uses only
/// [`TRANSPORT_MAY_USE`].
fn transport_protocol_problems() -> Vec<String> {
    let mut files = Vec::new();
    rust_files(
        &project_root().join("crates/cardsync-hyper/src"),
        &mut files,
    );
    let mut problems = Vec::new();
    for path in &files {
        let code: String = code_lines(path)
            .into_iter()
            .map(|(_, l)| l)
            .collect::<Vec<_>>()
            .join(" ");
        for used in proto_paths(&code) {
            let allowed = TRANSPORT_MAY_USE
                .iter()
                .any(|a| used == *a || used.starts_with(&format!("{a}::")));
            if !allowed {
                problems.push(format!(
                    "{}: uses `cardsync_proto::{used}`: {TRANSPORT_HOLDS_NO_PROTOCOL}; it may use \
                     only {}",
                    relative(path),
                    TRANSPORT_MAY_USE.join(", ")
                ));
            }
        }
    }
    problems
}

/// A Rust file to check: its path as a report names it, and its code.
struct SourceFile {
    shown: String,
    source: Source,
}

impl SourceFile {
    /// A file given as text (a planted violation, in the tests).
    #[cfg(test)]
    fn new(shown: &str, text: &str) -> SourceFile {
        SourceFile {
            shown: shown.to_owned(),
            source: Source::new(text),
        }
    }

    fn line_of(&self, offset: usize) -> usize {
        self.source.line_of(offset)
    }
}

/// The Rust files under some paths of the project (folders or files).
fn project_files(paths: &[impl AsRef<Path>]) -> Vec<SourceFile> {
    let root = project_root();
    let mut files = Vec::new();
    for path in paths {
        let path = root.join(path);
        if path.is_file() {
            files.push(path);
        } else {
            rust_files(&path, &mut files);
        }
    }
    files.sort();
    files
        .into_iter()
        .map(|p| SourceFile {
            shown: relative(&p),
            source: Source::new(&std::fs::read_to_string(&p).unwrap_or_default()),
        })
        .collect()
}

/// The `src` folder of every crate of `crates/` but those named.
fn crates_src(except: &[&str]) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(project_root().join("crates"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| !except.iter().any(|x| e.file_name() == *x))
        .map(|e| PathBuf::from("crates").join(e.file_name()).join("src"))
        .collect();
    dirs.sort();
    dirs
}

/// The files of the journals and of the command's job wing.
const STORE_AND_JOB_WING: &[&str] = &[
    "crates/cardsync-job-postgres/src",
    "crates/cardsync-job-sqlite/src",
    "crates/cardsync-cli/src/job",
];

const STORES_HOLD_NO_PROTOCOL: &str =
    "the journals and the command's job wing name no endpoint and call no decoder";

/// What knowing the protocol looks like: the types that implement `Endpoint` or
/// `IssuerEndpoint`, and the decoders (`decode_…` functions), as cardsync-proto defines them.
struct Protocol {
    endpoints: BTreeSet<String>,
    decoders: BTreeSet<String>,
}

/// The endpoint types and decoders that proto's `src` defines: every `impl Endpoint for X` and
/// `impl IssuerEndpoint for X` (through a macro too: `impl Endpoint for $name` in
/// `macro_rules! m` makes every `m!(X, …)` one), and every `pub fn decode…`.
fn protocol(proto: &[SourceFile]) -> Protocol {
    let mut endpoints = BTreeSet::new();
    let mut decoders = BTreeSet::new();
    for file in proto {
        let code = file.source.code();
        let idents: Vec<(usize, &str)> = file.source.identifiers().collect();
        let between = |a: (usize, &str), b: (usize, &str)| &code[a.0 + a.1.len()..b.0];
        for w in idents.windows(3) {
            let [trait_name, for_, ty] = [w[0], w[1], w[2]];
            if matches!(trait_name.1, "Endpoint" | "IssuerEndpoint")
                && for_.1 == "for"
                && between(trait_name, for_).trim().is_empty()
            {
                if between(for_, ty).trim() == "$" {
                    // In a macro: every invocation of the macro names one.
                    let Some(macro_name) = idents
                        .windows(2)
                        .rfind(|m| m[0].0 < ty.0 && m[0].1 == "macro_rules")
                        .map(|m| m[1].1)
                    else {
                        continue;
                    };
                    for m in idents.windows(2).filter(|m| m[0].1 == macro_name) {
                        let gap = between(m[0], m[1]).replace(char::is_whitespace, "");
                        if matches!(gap.as_str(), "!(" | "!{" | "![") {
                            endpoints.insert(m[1].1.to_owned());
                        }
                    }
                } else if between(for_, ty).trim().is_empty() {
                    endpoints.insert(ty.1.to_owned());
                }
            }
            let [pub_, fn_, name] = [w[0], w[1], w[2]];
            if pub_.1 == "pub"
                && fn_.1 == "fn"
                && name.1.starts_with("decode")
                && between(pub_, fn_).trim().is_empty()
            {
                decoders.insert(name.1.to_owned());
            }
        }
    }
    Protocol {
        endpoints,
        decoders,
    }
}

/// The journals and the command's job wing hold no protocol knowledge: they name no endpoint
/// type of `proto` and call no decoder (a function of [`protocol`]'s, or an endpoint's
/// `::decode`). What to send and what an answer means is `cardsync_job::rules`'; a call of
/// its own is a `cardsync_client::Client` method.
fn store_protocol_problems() -> Vec<String> {
    stores_protocol(
        &project_files(&["crates/cardsync-proto/src"]),
        &project_files(STORE_AND_JOB_WING),
    )
}

/// [`store_protocol_problems`] in `files`, with the endpoints and decoders of `proto`.
fn stores_protocol(proto: &[SourceFile], files: &[SourceFile]) -> Vec<String> {
    let protocol = protocol(proto);
    let mut problems = Vec::new();
    for file in files {
        let code = file.source.code();
        for (at, name) in file.source.identifiers() {
            let what = if protocol.endpoints.contains(name) {
                "an endpoint type of cardsync-proto"
            } else if protocol.decoders.contains(name)
                || (name == "decode" && code[..at].trim_end().ends_with("::"))
            {
                "a decoder of cardsync-proto"
            } else {
                continue;
            };
            problems.push(format!(
                "{}:{}: `{name}`, {what}: {STORES_HOLD_NO_PROTOCOL}; use a method of \
                 cardsync_client::Client, or cardsync_job::rules",
                file.shown,
                file.line_of(at)
            ));
        }
    }
    problems
}

const PATHS_ONCE: &str = "the API's paths are written once, in cardsync-proto";

/// Whether a string literal holds a versioned API path (`/v1`, `/v2/batch`, `under /v2,`).
fn holds_api_path(literal: &str) -> bool {
    ["/v1", "/v2"].iter().any(|v| {
        literal.match_indices(v).any(|(at, _)| {
            !literal[at + v.len()..]
                .chars()
                .next()
                .is_some_and(|c| c.is_alphanumeric() || c == '_')
        })
    })
}

/// No string literal outside cardsync-proto's `src` holds an API path (`/v1…`, `/v2…`): they
/// are `cardsync_proto::paths`' constants. Comments may name paths; the tests in `tests/`
/// folders, which pin the documents, may write them.
fn path_literal_problems() -> Vec<String> {
    path_literals(&project_files(&crates_src(&["cardsync-proto"])))
}

/// [`path_literal_problems`] in `files`.
fn path_literals(files: &[SourceFile]) -> Vec<String> {
    let mut problems = Vec::new();
    for file in files {
        for (at, literal) in file.source.literals() {
            if holds_api_path(literal) {
                let shown: String = literal.chars().take(60).collect();
                problems.push(format!(
                    "{}:{}: \"{shown}\": {PATHS_ONCE}; use cardsync_proto::paths",
                    file.shown,
                    file.line_of(*at)
                ));
            }
        }
    }
    problems
}

/// The job's rules and its state machine.
const JOB_RULES_AND_STATE: &[&str] = &[
    "crates/cardsync-job/src/rules.rs",
    "crates/cardsync-job/src/job.rs",
];

const JOB_READS_NO_CLOCK: &str = "the job's rules and state machine never read the clock";

/// What reading the clock looks like.
const CLOCK_READS: &[&str] = &["Instant::now", "SystemTime::now", ".elapsed(", "::elapsed("];

/// The job's rules and state machine are told the time (`now`, `wall` arguments), never read
/// it: no `Instant::now`, `SystemTime::now` or `elapsed` in their code (their tests may).
fn job_clock_problems() -> Vec<String> {
    clock_reads(&project_files(JOB_RULES_AND_STATE))
}

/// [`job_clock_problems`] in `files`.
fn clock_reads(files: &[SourceFile]) -> Vec<String> {
    let mut problems = Vec::new();
    for file in files {
        let source = file.source.without_tests();
        let code: String = source
            .code()
            .chars()
            .filter(|c| !c.is_whitespace() || *c == '\n')
            .collect();
        for (i, line) in code.lines().enumerate() {
            if let Some(read) = CLOCK_READS.iter().find(|r| line.contains(*r)) {
                problems.push(format!(
                    "{}:{}: `{}`: {JOB_READS_NO_CLOCK}; take the time as an argument",
                    file.shown,
                    i + 1,
                    read.trim_matches(|c| c == '.' || c == ':' || c == '(')
                ));
            }
        }
    }
    problems
}

const NO_IMPORT_CIRCLE: &str = "no module of a crate imports one that imports it";

/// The root files of every crate of the workspace (`src/lib.rs`, `src/main.rs`).
fn crate_roots() -> Vec<PathBuf> {
    let root = project_root();
    let mut dirs = crates_src(&[]);
    dirs.push(PathBuf::from("xtask/src"));
    dirs.into_iter()
        .flat_map(|d| [root.join(&d).join("lib.rs"), root.join(&d).join("main.rs")])
        .filter(|p| p.is_file())
        .collect()
}

/// No module of a crate imports, directly or around a circle, one that imports it (see
/// [`modules`] for what counts as an import).
fn import_circle_problems() -> Vec<String> {
    import_circles(&crate_roots())
}

/// [`import_circle_problems`] in the crates of these root files.
fn import_circles(roots: &[PathBuf]) -> Vec<String> {
    roots
        .iter()
        .flat_map(|root| modules::import_circles(root, &project_root()))
        .map(|circle| {
            format!("{circle}\n  {NO_IMPORT_CIRCLE}: move what both need to a module of its own")
        })
        .collect()
}

/// The one file that holds the crash and freeze points.
const CRASH_HOOKS_HOME: &str = "crates/cardsync-job/src/hooks.rs";

/// The feature that compiles the crash and freeze points in.
const TEST_HOOKS_FEATURE: &str = "#[cfg(feature = \"test-hooks\")]";

const CRASH_HOOKS_TEST_ONLY: &str =
    "crash and freeze points exist only where the test-only feature compiles them";

/// Literals that name a crash or freeze variable, or the command or signal that kills or
/// stops a process.
const CRASH_LITERALS: &[&str] = &["CARDSYNC_CRASH_AT", "CARDSYNC_FREEZE_AT"];
const KILL_LITERALS: &[&str] = &["kill", "-KILL", "-STOP", "-SIGKILL", "-SIGSTOP"];
const KILL_SIGNALS: &[&str] = &["SIGKILL", "SIGSTOP"];

/// Where a file's code names a crash or freeze variable, or kills or stops a process
/// (`kill` the command or the function, `SIGKILL`, `SIGSTOP`; a child's `.kill()` method is
/// not the process itself): offsets and what.
fn crash_hook_uses(file: &SourceFile) -> Vec<(usize, String)> {
    let code = file.source.code();
    let mut found: Vec<(usize, String)> = file
        .source
        .literals()
        .iter()
        .filter(|(_, l)| {
            CRASH_LITERALS.iter().any(|c| l.contains(c)) || KILL_LITERALS.contains(&l.as_str())
        })
        .map(|(at, l)| (*at, format!("\"{l}\"")))
        .collect();
    for (at, name) in file.source.identifiers() {
        let called = code[at + name.len()..].trim_start().starts_with('(');
        let method = code[..at].trim_end().ends_with('.');
        if KILL_SIGNALS.contains(&name) || (name == "kill" && called && !method) {
            found.push((at, name.to_owned()));
        }
    }
    found.sort();
    found
}

/// The crash and freeze points (`CARDSYNC_CRASH_AT`, `CARDSYNC_FREEZE_AT`, a process that
/// kills or stops itself) are written only in [`CRASH_HOOKS_HOME`], and there only in items
/// compiled with the `test-hooks` feature.
fn crash_hook_problems() -> Vec<String> {
    crash_hooks(&project_files(&crates_src(&[])), CRASH_HOOKS_HOME)
}

/// [`crash_hook_problems`] in `files`, `home` being the file that holds the hooks.
fn crash_hooks(files: &[SourceFile], home: &str) -> Vec<String> {
    let mut problems = Vec::new();
    for file in files {
        let gated = if file.shown == home {
            file.source.item_spans(TEST_HOOKS_FEATURE)
        } else {
            Vec::new()
        };
        for (at, what) in crash_hook_uses(file) {
            if gated.iter().any(|(start, end)| *start <= at && at < *end) {
                continue;
            }
            let fix = if file.shown == home {
                format!("only under {TEST_HOOKS_FEATURE}")
            } else {
                format!("use cardsync_job::hooks ({home})")
            };
            problems.push(format!(
                "{}:{}: {what}: {CRASH_HOOKS_TEST_ONLY}; {fix}",
                file.shown,
                file.line_of(at)
            ));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn architecture_invariants_hold() {
        let problems = layer_problems().unwrap();
        assert!(problems.is_empty(), "{}", problems.join("\n"));
    }

    #[test]
    fn no_cli_module_imports_from_main() {
        let problems = upward_import_problems();
        assert!(problems.is_empty(), "{}", problems.join("\n"));
    }

    #[test]
    fn every_module_has_docs() {
        let problems = module_doc_problems();
        assert!(problems.is_empty(), "{}", problems.join("\n"));
    }

    #[test]
    fn the_emulator_builds_no_json_by_hand() {
        let problems = hand_built_json_problems();
        assert!(problems.is_empty(), "{}", problems.join("\n"));
    }

    #[test]
    fn the_transport_holds_no_protocol() {
        let problems = transport_protocol_problems();
        assert!(problems.is_empty(), "{}", problems.join("\n"));
    }

    #[test]
    fn proto_paths_are_found() {
        let code =
            "use cardsync_proto::{Config, server::webhook}; x: cardsync_proto::retry::Reached,";
        assert_eq!(
            proto_paths(code),
            ["Config", "server::webhook", "retry::Reached"]
        );
    }

    /// A fresh folder for a planted tree.
    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("xtask-tidy-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn write(dir: &Path, files: &[(&str, &str)]) {
        for (path, text) in files {
            let path = dir.join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
    }

    #[test]
    fn the_journals_and_the_job_wing_hold_no_protocol() {
        let problems = store_protocol_problems();
        assert!(problems.is_empty(), "{}", problems.join("\n"));
    }

    #[test]
    fn the_endpoints_and_decoders_are_read_from_proto() {
        let protocol = protocol(&project_files(&["crates/cardsync-proto/src"]));
        for endpoint in [
            "CreateBatch",
            "GetBatch",
            "SetWebhooks",
            "Subscribe",
            "Unsubscribe",
            "UpdateCard",
            "UpdateCards",
        ] {
            assert!(protocol.endpoints.contains(endpoint), "{endpoint}");
        }
        assert!(!protocol.endpoints.contains("Trigger"));
        for decoder in ["decode_webhook", "decode_cards_body", "decode_card_edits"] {
            assert!(protocol.decoders.contains(decoder), "{decoder}");
        }
    }

    #[test]
    fn a_journal_that_names_an_endpoint_or_decodes_is_reported() {
        let proto = [SourceFile::new(
            "proto/src/endpoints.rs",
            "pub trait Endpoint {}\n\
             impl Endpoint for GetThing {}\n\
             macro_rules! pair { ($name:ident) => { impl Endpoint for $name {} }; }\n\
             pair!(Subscribe);\n\
             pub fn decode_thing(body: &[u8]) {}\n",
        )];
        let journal = SourceFile::new(
            "journal/src/lib.rs",
            "use proto::{GetThing, Trigger};\n\
             // Subscribe, in a comment, and Subscribe in a string are no use of it.\n\
             fn f() { let s = \"Subscribe\"; let e = proto::decode_thing(b); }\n\
             fn g() { let a = Thing::decode(&r); let c = codec::decode_cards(b); }\n\
             fn h(s: proto::Subscribe) {}\n",
        );
        let problems = stores_protocol(&proto, &[journal]);
        assert_eq!(problems.len(), 4, "{}", problems.join("\n"));
        for (at, name) in [
            ("journal/src/lib.rs:1:", "`GetThing`, an endpoint type"),
            ("journal/src/lib.rs:3:", "`decode_thing`, a decoder"),
            ("journal/src/lib.rs:4:", "`decode`, a decoder"),
            ("journal/src/lib.rs:5:", "`Subscribe`, an endpoint type"),
        ] {
            assert!(
                problems
                    .iter()
                    .any(|p| p.starts_with(&format!("{at} {name}"))),
                "{at} {name} not in {problems:#?}"
            );
        }
        assert!(problems.iter().all(|p| p.contains(STORES_HOLD_NO_PROTOCOL)));
    }

    #[test]
    fn no_path_literal_outside_proto() {
        let problems = path_literal_problems();
        assert!(problems.is_empty(), "{}", problems.join("\n"));
    }

    #[test]
    fn a_path_literal_is_reported() {
        let file = SourceFile::new(
            "crates/x/src/lib.rs",
            "// GET /v2/batch, in a comment, is fine.\n\
             const P: &str = \"/v2/batch\";\n\
             fn f() { format!(\"{}/v1\", base); g(\"under /v1, then\"); h(\"/v10 /v2x v2/\"); }\n\
             #[cfg(test)]\n\
             mod tests { const Q: &str = r#\"/v1/cards/\"#; }\n",
        );
        let problems = path_literals(&[file]);
        let lines: Vec<&str> = problems
            .iter()
            .map(|p| p.split(' ').next().unwrap())
            .collect();
        assert_eq!(
            lines,
            [
                "crates/x/src/lib.rs:2:",
                "crates/x/src/lib.rs:3:",
                "crates/x/src/lib.rs:3:",
                "crates/x/src/lib.rs:5:",
            ],
            "{problems:#?}"
        );
        assert!(problems[0].contains(PATHS_ONCE));
    }

    #[test]
    fn the_job_reads_no_clock() {
        let problems = job_clock_problems();
        assert!(problems.is_empty(), "{}", problems.join("\n"));
    }

    #[test]
    fn a_clock_read_in_the_job_is_reported() {
        let file = SourceFile::new(
            "crates/cardsync-job/src/job.rs",
            "/// `Instant::now()` in documentation is fine.\n\
             fn a(now: Instant) -> Instant { now }\n\
             fn b() { let t = Instant::now(); }\n\
             fn c() { let w = std::time::SystemTime :: now(); }\n\
             fn d(t: Instant) { t.elapsed(); }\n\
             #[cfg(test)]\n\
             mod tests { fn e() { Instant::now(); } }\n",
        );
        let problems = clock_reads(&[file]);
        assert_eq!(problems.len(), 3, "{}", problems.join("\n"));
        for (at, read) in [(3, "Instant::now"), (4, "SystemTime::now"), (5, "elapsed")] {
            assert!(
                problems
                    .iter()
                    .any(|p| p
                        .starts_with(&format!("crates/cardsync-job/src/job.rs:{at}: `{read}`"))),
                "{at} {read}: {problems:#?}"
            );
        }
        assert!(problems[0].contains(JOB_READS_NO_CLOCK));
    }

    #[test]
    fn no_import_circle() {
        let problems = import_circle_problems();
        assert!(problems.is_empty(), "{}", problems.join("\n"));
    }

    #[test]
    fn an_import_circle_is_reported() {
        let dir = scratch("circles");
        write(
            &dir,
            &[
                (
                    "src/lib.rs",
                    "//! Root.\nmod a;\nmod b;\nmod c;\nmod d;\npub use a::Thing;\n",
                ),
                // a → b directly, b → a through the root's re-export.
                ("src/a.rs", "use crate::b::Other;\npub struct Thing;\n"),
                (
                    "src/b.rs",
                    "pub struct Other;\nfn f() -> crate::Thing { todo!() }\n",
                ),
                // Siblings in a folder: c::x → c::y → c::x; the hub (`mod.rs`) and its parts
                // may use each other.
                (
                    "src/c/mod.rs",
                    "mod x;\nmod y;\npub(crate) struct Shared;\nfn f() { x::go(); }\n",
                ),
                (
                    "src/c/x.rs",
                    "use super::Shared;\npub fn go() { super::y::go(); }\n",
                ),
                (
                    "src/c/y.rs",
                    "pub fn go() {}\nfn back() -> super::x::Z { todo!() }\n",
                ),
                // Only a test imports back: no circle.
                (
                    "src/d.rs",
                    "use crate::a::Thing;\n#[cfg(test)]\nmod tests {\n    use crate::d;\n    use crate::b::Other;\n}\n",
                ),
            ],
        );
        let problems = import_circles(&[dir.join("src/lib.rs")]);
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(problems.len(), 2, "{}", problems.join("\n"));
        assert!(
            problems[0].contains("import circle a → b → a"),
            "{}",
            problems[0]
        );
        assert!(problems[0].contains("src/a.rs:1: `crate::b::Other` (a imports b)"));
        assert!(problems[0].contains("src/b.rs:2: `crate::Thing` (b imports a)"));
        assert!(
            problems[1].contains("import circle c::x → c::y → c::x"),
            "{}",
            problems[1]
        );
        assert!(problems.iter().all(|p| p.contains(NO_IMPORT_CIRCLE)));
    }

    #[test]
    fn crash_hooks_only_where_the_test_feature_compiles_them() {
        let problems = crash_hook_problems();
        assert!(problems.is_empty(), "{}", problems.join("\n"));
    }

    #[test]
    fn a_crash_hook_elsewhere_is_reported() {
        let home = SourceFile::new(
            CRASH_HOOKS_HOME,
            "#[cfg(feature = \"test-hooks\")]\n\
             mod enabled {\n\
                 fn f() { at(\"CARDSYNC_CRASH_AT\"); Command::new(\"kill\").args([\"-KILL\", &id()]); }\n\
             }\n\
             fn g() { at(\"CARDSYNC_FREEZE_AT\"); }\n",
        );
        let other = SourceFile::new(
            "crates/cardsync-cli/src/main.rs",
            "// CARDSYNC_CRASH_AT, in a comment, is fine.\n\
             fn f() { if var(\"CARDSYNC_CRASH_AT\").is_ok() { libc::kill(libc::getpid(), libc::SIGKILL); } }\n\
             fn g(mut child: Child) { child.kill(); }\n\
             fn h() { Command::new(\"kill\").args([\"-STOP\", &pid]); }\n",
        );
        let problems = crash_hooks(&[home, other], CRASH_HOOKS_HOME);
        let found: Vec<&str> = problems
            .iter()
            .map(|p| p.split(": crash").next().unwrap())
            .collect();
        assert_eq!(
            found,
            [
                "crates/cardsync-job/src/hooks.rs:5: \"CARDSYNC_FREEZE_AT\"",
                "crates/cardsync-cli/src/main.rs:2: \"CARDSYNC_CRASH_AT\"",
                "crates/cardsync-cli/src/main.rs:2: kill",
                "crates/cardsync-cli/src/main.rs:2: SIGKILL",
                "crates/cardsync-cli/src/main.rs:4: \"kill\"",
                "crates/cardsync-cli/src/main.rs:4: \"-STOP\"",
            ],
            "{problems:#?}"
        );
        assert!(problems.iter().all(|p| p.contains(CRASH_HOOKS_TEST_ONLY)));
    }

    #[test]
    fn invariants_are_written_in_architecture_md() {
        let doc = std::fs::read_to_string(project_root().join("docs/ARCHITECTURE.md")).unwrap();
        // Each invariant is said in an `**Architecture Invariant:**` paragraph, however its
        // lines are wrapped.
        let paragraphs: Vec<String> = doc
            .split("\n\n")
            .filter(|p| p.trim_start().starts_with("**Architecture Invariant:**"))
            .map(|p| p.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        let layers = LAYER_RULES.iter().map(|(_, _, invariant)| *invariant);
        for invariant in [
            WIRE_FORMAT_ONCE,
            TRANSPORT_HOLDS_NO_PROTOCOL,
            STORES_HOLD_NO_PROTOCOL,
            PATHS_ONCE,
            JOB_READS_NO_CLOCK,
            NO_IMPORT_CIRCLE,
            CRASH_HOOKS_TEST_ONLY,
        ]
        .into_iter()
        .chain(layers)
        {
            assert!(
                paragraphs.iter().any(|p| p.contains(invariant)),
                "docs/ARCHITECTURE.md has no `**Architecture Invariant:**` paragraph saying \
                 {invariant:?}"
            );
        }
    }
}
