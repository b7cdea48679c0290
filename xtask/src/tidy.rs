//! Tidy checks: the architecture invariants of `docs/ARCHITECTURE.md`, and house rules that a
//! compiler does not check.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::project_root;

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

    #[test]
    fn invariants_are_written_in_architecture_md() {
        let doc = std::fs::read_to_string(project_root().join("docs/ARCHITECTURE.md")).unwrap();
        for invariant in [WIRE_FORMAT_ONCE, TRANSPORT_HOLDS_NO_PROTOCOL] {
            assert!(
                doc.contains(invariant),
                "docs/ARCHITECTURE.md lacks {invariant:?}"
            );
        }
        for (_, _, invariant) in LAYER_RULES {
            assert!(
                doc.contains(invariant),
                "docs/ARCHITECTURE.md lacks {invariant:?}"
            );
        }
    }
}
