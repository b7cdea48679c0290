//! End-to-end tests of the `cardsync` binary: verdicts, formats, exit codes, and that no full
//! card number is ever printed.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use cardsync_core::SANDBOX_TEST_CARDS;
use serde_json::Value;

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

fn cardsync(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cardsync"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run cardsync")
}

fn cardsync_stdin(args: &[&str], input: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_cardsync"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run cardsync");
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

fn json_lines(out: &Output) -> Vec<Value> {
    String::from_utf8(out.stdout.clone())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect()
}

/// A temporary file that is removed when dropped.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str, contents: &[u8]) -> TempFile {
        let dir = std::env::temp_dir().join(format!("cardsync-cli-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, contents).unwrap();
        TempFile(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Fails if `text` holds any run of twelve or more digits: a card number would be one.
fn assert_no_full_numbers(text: &[u8]) {
    let text = String::from_utf8_lossy(text);
    let mut run = 0;
    for c in text.chars() {
        run = if c.is_ascii_digit() { run + 1 } else { 0 };
        assert!(run < 12, "a run of 12+ digits was printed:\n{text}");
    }
}

#[test]
fn documented_test_cards_are_all_valid_with_their_brands() {
    let file = examples().join("cards.csv");
    let out = cardsync(&["--output", "json", "validate", file.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = json_lines(&out);
    assert_eq!(lines.len(), SANDBOX_TEST_CARDS.len() + 1);
    for (line, tc) in lines.iter().zip(SANDBOX_TEST_CARDS) {
        assert_eq!(line["ok"], true, "{line}");
        assert_eq!(line["brand"], tc.brand.as_str(), "{line}");
        let masked = cardsync_core::Pan::parse(tc.card).unwrap().masked();
        assert_eq!(line["card"], masked.as_str());
        let route = if tc.brand == cardsync_core::Brand::AmericanExpress {
            "subscription"
        } else {
            "batch"
        };
        assert_eq!(line["route"], route);
    }
    let summary = &lines.last().unwrap()["summary"];
    assert_eq!(summary["valid"], 19);
    assert_eq!(summary["invalid"], 0);
    assert_eq!(summary["subscription"], 3);
    assert_no_full_numbers(&out.stdout);
}

#[test]
fn every_broken_row_gets_its_verdict() {
    let file = examples().join("cards-with-problems.csv");
    let out = cardsync(&["--output", "json", "validate", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let lines = json_lines(&out);
    let expected: &[(&str, &[&str])] = &[
        ("ok-visa", &[]),
        ("ok-amex", &[]),
        ("bad-luhn", &["luhn"]),
        ("bad-length", &["length"]),
        ("bad-chars", &["non_digit"]),
        ("bad-month", &["exp_month"]),
        ("bad-exp", &["exp_format"]),
        ("", &["missing_id"]),
        ("ok-visa", &["duplicate_id"]),
        ("dup-card", &["duplicate_card"]),
        ("jcb", &["unsupported_brand"]),
        ("amex-no-se", &["amex_needs_se_number"]),
        ("amex-bad-se", &["se_number_format"]),
        ("short-row", &["missing_exp"]),
    ];
    assert_eq!(lines.len(), expected.len() + 1);
    for (i, (line, (id, errors))) in lines.iter().zip(expected).enumerate() {
        assert_eq!(line["row"], i as u64 + 1, "{line}");
        assert_eq!(line["id"], *id, "{line}");
        assert_eq!(line["ok"], errors.is_empty(), "{line}");
        if !errors.is_empty() {
            let got: Vec<&str> = line["errors"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e.as_str().unwrap())
                .collect();
            assert_eq!(got, *errors, "{line}");
            assert_eq!(line["messages"].as_array().unwrap().len(), errors.len());
        }
    }
    let summary = &lines.last().unwrap()["summary"];
    assert_eq!(
        (summary["rows"].as_u64(), summary["invalid"].as_u64()),
        (Some(14), Some(12))
    );
    assert_no_full_numbers(&out.stdout);

    let text = cardsync(&["validate", file.to_str().unwrap()]);
    assert_eq!(text.status.code(), Some(1));
    let text_out = String::from_utf8(text.stdout).unwrap();
    assert!(
        text_out.contains("luhn: card number fails the Luhn check"),
        "{text_out}"
    );
    assert!(text_out.contains("14 rows: 2 valid"), "{text_out}");
    assert_no_full_numbers(text_out.as_bytes());
}

#[test]
fn a_row_with_several_problems_lists_them_all() {
    let file = TempFile::new("several.csv", b"id,card,exp\n,4457010000000008,00/50\n");
    let out = cardsync(&["--output", "json", "validate", file.path()]);
    let lines = json_lines(&out);
    assert_eq!(
        lines[0]["errors"],
        serde_json::json!(["missing_id", "luhn", "exp_month"])
    );
}

#[test]
fn json_lines_input_matches_csv() {
    let jsonl = TempFile::new(
        "cards.jsonl",
        concat!(
            "{\"id\":\"a\",\"card\":\"4457010000000009\",\"exp\":\"01/50\"}\n",
            "\n",
            "not json at all\n",
            "[1,2]\n",
            "{\"ID\":7,\"Card\":\"342132335566772\",\"exp\":\"01/50\",\"se_number\":1234567890}\n",
            "{\"id\":\"c\",\"card\":{\"nested\":true},\"exp\":\"01/50\"}\r\n",
            "{\"id\":\"d\",\"card\":\"4457010000000008\",\"exp\":\"01/50\"}",
        )
        .as_bytes(),
    );
    let out = cardsync(&["--output", "json", "validate", jsonl.path()]);
    assert_eq!(out.status.code(), Some(1));
    let lines = json_lines(&out);
    let verdicts: Vec<(u64, bool, String)> = lines[..6]
        .iter()
        .map(|l| {
            let first_error = l["errors"][0].as_str().unwrap_or("").to_owned();
            (
                l["row"].as_u64().unwrap(),
                l["ok"].as_bool().unwrap(),
                first_error,
            )
        })
        .collect();
    assert_eq!(
        verdicts,
        [
            (1, true, String::new()),
            (2, false, "malformed_json".into()),
            (3, false, "malformed_row".into()),
            (4, true, String::new()),
            (5, false, "malformed_row".into()),
            (6, false, "luhn".into()),
        ]
    );
    assert_eq!(lines[3]["id"], "7");
    assert_eq!(lines[3]["route"], "subscription");
}

#[test]
fn bytes_that_are_not_utf8_are_reported_and_numbering_goes_on() {
    for (name, csv) in [
        (
            "latin1.csv",
            &b"id,card,exp\nb\xe9,4457010000000009,01/50\nok,5112010000000003,02/50\n"[..],
        ),
        // The quoted id ends inside a character that the card field completes: together
        // they are UTF-8, apart neither is.
        (
            "split.csv",
            b"id,card,exp\n\"\xc3\",\xa94457010000000009,01/50\nok,5112010000000003,02/50\n",
        ),
    ] {
        let file = TempFile::new(name, csv);
        let out = cardsync(&["--output", "json", "validate", file.path()]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(!text.contains("4457010000000009"), "{name}: {text}");
        let lines = json_lines(&out);
        assert_eq!(
            lines[0]["errors"],
            serde_json::json!(["invalid_utf8"]),
            "{name}"
        );
        assert_eq!(lines[0]["card"], "445701******0009", "{name}");
        assert_eq!(
            (lines[1]["row"].as_u64(), lines[1]["ok"].as_bool()),
            (Some(2), Some(true)),
            "{name}"
        );
    }
}

#[test]
fn quoted_fields_line_breaks_and_other_columns_read_as_csv_reads_them() {
    // A quoted id with a comma and a doubled quote, a quoted field over two lines, CRLF and
    // bare CR line ends, an empty line, and bytes that are not UTF-8 in a column that is not
    // read (which do not make the row unreadable).
    let file = TempFile::new(
        "quoted.csv",
        b"id,note,card,exp\r\n\"a,\"\"1\"\"\",x,4457010000000009,01/50\r\n\r\nb,\"two\nlines\",5112010000000003,\"02/50\"\rc,\xff,6011010000000003,03/50\n",
    );
    let out = cardsync(&["--output", "json", "validate", file.path()]);
    let lines = json_lines(&out);
    let rows: Vec<_> = lines
        .iter()
        .filter(|l| l.get("row").is_some())
        .map(|l| {
            (
                l["row"].as_u64().unwrap(),
                l["id"].as_str().unwrap().to_owned(),
                l["ok"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            (1, "a,\"1\"".to_owned(), true),
            (2, "b".to_owned(), true),
            (3, "c".to_owned(), true),
        ]
    );
    assert_eq!(lines[1]["exp"], "02/50");
}

#[test]
fn header_with_bom_and_extra_columns_and_any_case() {
    let file = TempFile::new(
        "bom.csv",
        "\u{feff}Exp,Notes,CARD,Id\n01/50,hello,4457010000000009,x\n".as_bytes(),
    );
    let out = cardsync(&["--output", "json", "validate", file.path()]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(json_lines(&out)[0]["id"], "x");
}

#[test]
fn spaces_around_header_names_and_fields_are_ignored() {
    let file = TempFile::new(
        "spaces.csv",
        b" id , card\t,exp \r\n a , 4457010000000009 , 01/50 \r\n",
    );
    let out = cardsync(&["--output", "json", "validate", file.path()]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let line = &json_lines(&out)[0];
    assert_eq!((&line["id"], &line["exp"]), (&"a".into(), &"01/50".into()));
}

#[test]
fn card_numbers_in_the_id_column_are_masked() {
    let file = TempFile::new("swapped.csv", b"id,card,exp\n4457010000000009,a1,01/50\n");
    for format in ["json", "text"] {
        let out = cardsync(&["--output", format, "validate", file.path()]);
        assert_eq!(out.status.code(), Some(1));
        assert_no_full_numbers(&out.stdout);
        assert!(String::from_utf8_lossy(&out.stdout).contains("445701******0009"));
    }
}

#[test]
fn usage_and_io_errors_exit_2() {
    let missing_column = TempFile::new("nocard.csv", b"id,number,exp\na,4457010000000009,01/50\n");
    let empty = TempFile::new("empty.csv", b"");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["validate", "/nonexistent/cards.csv"], "No such file"),
        (vec!["validate", missing_column.path()], "no `card` column"),
        (vec!["validate", empty.path()], "empty"),
        (
            vec!["plan", "x.csv", "--max-per-request", "0"],
            "1 to 10000",
        ),
        (
            vec!["plan", "x.csv", "--max-per-request", "10001"],
            "1 to 10000",
        ),
        (
            vec!["validate", "x.csv", "--se-number", "SE-1"],
            "1 to 15 digits",
        ),
        (vec!["frobnicate"], "unrecognized subcommand"),
        (
            vec!["--output", "xml", "validate", "x.csv"],
            "invalid value",
        ),
        // --output for --out: said where the results file goes.
        (
            vec!["--output", "results.csv", "validate", "x.csv"],
            "the results file is --out results.csv",
        ),
    ];
    for (args, message) in cases {
        let out = cardsync(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(message), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
}

#[test]
fn standard_input() {
    let out = cardsync_stdin(
        &["--output", "json", "validate", "-"],
        b"id,card,exp\na,6011010000000003,03/50\n",
    );
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(json_lines(&out)[0]["brand"], "discover");
}

#[test]
fn plan_splits_by_route_and_size() {
    let file = examples().join("cards.csv");
    let out = cardsync(&[
        "--output",
        "json",
        "plan",
        file.to_str().unwrap(),
        "--max-per-request",
        "5",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = json_lines(&out);
    let requests: Vec<(u64, &str, u64, Option<&str>)> = lines
        .iter()
        .filter(|l| l.get("request").is_some())
        .map(|l| {
            (
                l["request"].as_u64().unwrap(),
                l["path"].as_str().unwrap(),
                l["cards"].as_u64().unwrap(),
                l["se_number"].as_str(),
            )
        })
        .collect();
    assert_eq!(
        requests,
        [
            (1, "/v2/batch", 5, None),
            (2, "/v2/batch", 5, None),
            (3, "/v2/batch", 5, None),
            (4, "/v2/batch", 1, None),
            (5, "/v2/subscribe", 3, Some("1234567890")),
        ]
    );
    assert_eq!(lines[0]["brands"], serde_json::json!({"visa": 5}));
    let summary = &lines.last().unwrap()["summary"];
    assert_eq!(
        summary["requests"],
        serde_json::json!({"batch": 4, "subscription": 1})
    );
    assert_no_full_numbers(&out.stdout);
}

#[test]
fn plan_uses_the_default_se_number_and_reports_rejections() {
    let file = TempFile::new(
        "amex.csv",
        b"id,card,exp,se_number\na,342132335566772,01/50,\nb,376655111122997,01/50,9999999999\nc,4457010000000008,01/50,\n",
    );
    let out = cardsync(&["plan", file.path(), "--se-number", "1234567890"]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("POST /v2/subscribe"), "{text}");
    assert!(text.contains("for SE 1234567890"), "{text}");
    assert!(text.contains("for SE 9999999999"), "{text}");
    assert!(text.contains("luhn"), "{text}");
    assert_no_full_numbers(text.as_bytes());
}

/// A raw HTTP/1.1 exchange over loopback, bounded in time.
fn http_get(addr: &str, path: &str, key: Option<&str>) -> String {
    http_get_at(addr, addr, path, key)
}

/// A raw HTTP/1.1 exchange over loopback with `host` in the `Host` header, bounded in time.
fn http_get_at(addr: &str, host: &str, path: &str, key: Option<&str>) -> String {
    use std::io::{Read, Write as _};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    let auth = key
        .map(|k| format!("Authorization: {k}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\n{auth}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

#[test]
fn sandbox_prints_where_it_listens_and_stops_on_ctrl_c() {
    use std::io::BufRead;
    let mut child = Command::new(env!("CARGO_BIN_EXE_cardsync"))
        .args([
            "--output",
            "json",
            "sandbox",
            "--addr",
            "127.0.0.1:0",
            "--complete-after",
            "0",
            "--merchant-key",
            "mk",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx
        .recv_timeout(std::time::Duration::from_secs(20))
        .expect("the sandbox printed its address");
    let info: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(info["master_key"], "sandbox_master_key");
    assert_eq!(info["issuer_token"], "sandbox_issuer_token");
    assert_eq!(
        (info["merchant_key"].as_str(), info["merchant_id"].as_str()),
        (Some("mk"), Some("sandbox_merchant"))
    );
    let base = info["base_url"].as_str().unwrap();
    let addr = base.strip_prefix("http://").unwrap();
    assert!(addr.starts_with("127.0.0.1:"));

    let clock = http_get(addr, "/_sandbox/clock", None);
    assert!(clock.starts_with("HTTP/1.1 200"), "{clock}");
    let denied = http_get(addr, "/v2/batch?batch_id=x", Some("wrong"));
    assert!(denied.starts_with("HTTP/1.1 401"), "{denied}");
    let unknown = http_get(addr, "/v2/batch?batch_id=x", Some("mk"));
    assert!(unknown.starts_with("HTTP/1.1 404"), "{unknown}");
    // Addressed to another name (a DNS-rebound page), the API answers nothing.
    let port = addr.rsplit(':').next().unwrap();
    let rebound = http_get_at(
        addr,
        &format!("rebound.example:{port}"),
        "/v2/batch?batch_id=x",
        Some("mk"),
    );
    assert!(rebound.starts_with("HTTP/1.1 403"), "{rebound}");
    let local = http_get_at(addr, &format!("localhost:{port}"), "/_sandbox/clock", None);
    assert!(local.starts_with("HTTP/1.1 200"), "{local}");
    assert_eq!(info["control_token"].as_str().map(str::len), Some(32));

    // Ctrl-C stops it cleanly.
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break exit;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("the sandbox did not stop on SIGINT");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert_eq!(exit.code(), Some(0));
}

/// The soft and hard limits on open files of process `pid`, from `/proc/PID/limits`.
#[cfg(target_os = "linux")]
fn open_file_limits(pid: u32) -> (u64, u64) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let numbers: Vec<u64> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    (numbers[0], numbers[1])
}

/// Started with a soft limit of 256 open files, the command raises it toward the hard limit
/// (up to 65,536), so that its servers do not run out of descriptors.
#[cfg(target_os = "linux")]
#[test]
fn the_command_raises_its_open_file_limit() {
    use std::io::BufRead;
    let mut child = Command::new("sh")
        .arg("-c")
        .arg("ulimit -S -n 256 && exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_cardsync"))
        .args(["--output", "json", "sandbox", "--addr", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let started = rx.recv_timeout(std::time::Duration::from_secs(20));
    let (soft, hard) = open_file_limits(child.id());
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        started.is_ok_and(|l| l.contains("base_url")),
        "the sandbox started"
    );
    assert_eq!(
        soft,
        hard.min(65_536),
        "soft limit raised toward the hard {hard}"
    );
}

#[test]
fn sandbox_refuses_bad_options() {
    for args in [
        vec!["sandbox", "--complete-after", "soon"],
        vec!["sandbox", "--merchant-key", "sandbox_master_key"],
        vec!["sandbox", "--addr", "not-an-address"],
        vec!["sandbox", "--allow-host", "http://sandbox.test/"],
        vec!["sandbox", "--webhook-host", "hooks.test:9000"],
        vec!["sandbox", "--issuer-token", ""],
    ] {
        let out = cardsync(&args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// On an address other machines reach, the sandbox needs the names it is reached at and keys
/// of the user's own; it says so and exits 2 before it listens (so these tests bind nothing
/// but loopback).
#[test]
fn sandbox_on_an_open_address_needs_allowed_hosts_and_keys_of_its_own() {
    let own_keys = [
        "--master-key",
        "own_master",
        "--merchant-key",
        "own_merchant",
        "--issuer-token",
        "own_issuer",
    ];
    let cases: [(&str, Vec<&str>, &[&str]); 4] = [
        ("0.0.0.0:0", own_keys.to_vec(), &["--allow-host"]),
        ("[::]:0", own_keys.to_vec(), &["--allow-host"]),
        (
            "0.0.0.0:0",
            vec!["--allow-host", "sandbox.test"],
            &["--master-key", "--merchant-key", "--issuer-token"],
        ),
        (
            "0.0.0.0:0",
            vec![
                "--allow-host",
                "sandbox.test",
                "--master-key",
                "a",
                "--merchant-key",
                "b",
            ],
            &["--issuer-token"],
        ),
    ];
    for (addr, extra, named) in cases {
        let mut args = vec!["sandbox", "--addr", addr];
        args.extend(&extra);
        let out = cardsync(&args);
        let said = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {said}");
        assert!(said.contains("other machines"), "{args:?}: {said}");
        for flag in named {
            assert!(said.contains(flag), "{args:?} should name {flag}: {said}");
        }
        assert!(out.stdout.is_empty(), "{args:?}: it never started");
    }
}

/// A card number with a good check digit: `prefix`, then `n`, padded to 16 digits.
fn luhn_card(prefix: &str, n: u64) -> String {
    let body = format!("{prefix}{n:0width$}", width = 15 - prefix.len());
    let check = cardsync_core::luhn_check_digit(&body).unwrap();
    format!("{body}{}", char::from(check))
}

/// Files longer than one block of rows: row numbers, duplicates across blocks, unreadable rows
/// between blocks and the text and JSON outputs all agree with a row-by-row reading.
#[test]
fn long_files_keep_rows_in_order_across_blocks() {
    let mut csv = b"id,card,exp\n".to_vec();
    let mut expected = Vec::new(); // (row, ok, first error)
    for i in 1..=1500u64 {
        let (line, verdict): (Vec<u8>, (bool, &str)) = match i {
            // Bytes that are not UTF-8.
            300 | 777 => (
                b"bad\xff,4457010000000009,01/50".to_vec(),
                (false, "invalid_utf8"),
            ),
            // The id of row 10 again, in another block.
            1200 => (
                format!("r10,{},01/50", luhn_card("4", i)).into_bytes(),
                (false, "duplicate_id"),
            ),
            // The card of row 20 again.
            1300 => (
                format!("r{i},{},01/50", luhn_card("51", 20)).into_bytes(),
                (false, "duplicate_card"),
            ),
            // A bad check digit.
            900 => (
                format!("r{i},4457010000000008,01/50").into_bytes(),
                (false, "luhn"),
            ),
            _ => (
                format!(
                    "r{i},{},01/50",
                    luhn_card(if i == 20 { "51" } else { "4" }, i)
                )
                .into_bytes(),
                (true, ""),
            ),
        };
        csv.extend_from_slice(&line);
        csv.push(b'\n');
        expected.push((i, verdict));
    }
    let file = TempFile::new("long.csv", &csv);

    let out = cardsync(&["--output", "json", "validate", file.path()]);
    assert_eq!(out.status.code(), Some(1));
    let lines = json_lines(&out);
    assert_eq!(lines.len(), expected.len() + 1);
    for (line, (row, (ok, error))) in lines.iter().zip(&expected) {
        assert_eq!(line["row"], *row, "{line}");
        assert_eq!(line["ok"], *ok, "{line}");
        if !ok {
            assert_eq!(line["errors"][0], *error, "{line}");
        }
    }
    let summary = &lines.last().unwrap()["summary"];
    assert_eq!(
        (summary["valid"].as_u64(), summary["invalid"].as_u64()),
        (Some(1495), Some(5))
    );
    assert_no_full_numbers(&out.stdout);

    // The table has the same rows, in the same order.
    let text = cardsync(&["validate", file.path()]);
    let text = String::from_utf8(text.stdout).unwrap();
    let rows: Vec<u64> = text
        .lines()
        .skip(1)
        .take_while(|l| !l.is_empty())
        .map(|l| l.split_whitespace().next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(rows, (1..=1500).collect::<Vec<_>>());
    assert_no_full_numbers(text.as_bytes());

    // From standard input too.
    let piped = cardsync_stdin(&["--output", "json", "validate", "-"], &csv);
    assert_eq!(piped.stdout, out.stdout);
}

/// A reader that goes away early (`cardsync validate big.csv | head`) ends the run at once,
/// quietly, as for other Unix tools (the reading thread stops too).
#[test]
fn closed_output_ends_the_run() {
    let mut csv = b"id,card,exp\n".to_vec();
    for i in 0..50_000u64 {
        csv.extend_from_slice(format!("r{i},{},01/50\n", luhn_card("4", i)).as_bytes());
    }
    let file = TempFile::new("closed.csv", &csv);
    let mut child = Command::new(env!("CARGO_BIN_EXE_cardsync"))
        .args(["--output", "json", "validate", file.path()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 64];
    std::io::Read::read_exact(&mut stdout, &mut first).unwrap();
    drop(stdout);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "cardsync did not stop"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0));
}

/// Runs `cardsync` with its standard output on a terminal (a pseudo-terminal from `script`).
#[cfg(target_os = "linux")]
fn cardsync_on_terminal(args: &str) -> String {
    let command = format!("{} {args}", env!("CARGO_BIN_EXE_cardsync"));
    let out = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .expect("script (util-linux) runs a command on a pseudo-terminal");
    String::from_utf8_lossy(&out.stdout).replace('\r', "")
}

#[cfg(target_os = "linux")]
#[test]
fn validate_on_a_terminal_shows_the_problem_rows_and_the_summary() {
    let dir = std::env::temp_dir().join(format!("cardsync-tty-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("cards.csv");
    let mut csv = String::from("id,card,exp\n");
    for i in 0..200 {
        // Every 50th card has a wrong check digit.
        let card = if i % 50 == 7 {
            "4457010000000008"
        } else {
            "4457010000000009"
        };
        csv.push_str(&format!("id-{i},{card},01/50\n"));
    }
    std::fs::write(&file, csv).unwrap();
    let path = file.display().to_string();
    let screen = cardsync_on_terminal(&format!("validate {path}"));
    let table_rows: Vec<&str> = screen
        .lines()
        .filter(|l| l.trim_start().starts_with(|c: char| c.is_ascii_digit()) && l.contains("id-"))
        .collect();
    // Rows 8, 58, 108, 158 fail the check digit; everything after the first is a duplicate card.
    assert!(table_rows.iter().all(|l| !l.ends_with(" ok")), "{screen}");
    assert!(screen.contains("luhn"), "{screen}");
    assert!(screen.contains("200 rows: 1 valid"), "{screen}");
    assert_eq!(table_rows.len(), 199, "{screen}");
    // --all shows the valid row too; piped, every row is shown as before.
    let all = cardsync_on_terminal(&format!("validate --all {path}"));
    assert!(
        all.lines()
            .any(|l| l.contains("id-0 ") && l.ends_with(" ok")),
        "{all}"
    );
    let piped = cardsync(&["validate", &path]);
    let piped = String::from_utf8_lossy(&piped.stdout);
    assert!(
        piped
            .lines()
            .any(|l| l.contains("id-0 ") && l.ends_with(" ok"))
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A header without the needed columns is explained by what the file is instead: another
/// delimiter, UTF-16, gzip, JSON, not text, or other column names (listed); a column given
/// twice is refused rather than resolved to the first.
#[test]
fn input_format_errors_say_what_the_file_is() {
    let utf16: Vec<u8> = [0xff, 0xfe]
        .into_iter()
        .chain(
            "id,card,exp\r\na,4457010000000009,01/50\r\n"
                .encode_utf16()
                .flat_map(u16::to_le_bytes),
        )
        .collect();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "semicolons.csv",
            b"id;card;exp\na;4457010000000009;01/50\n".to_vec(),
            "separated by semicolons",
        ),
        (
            "tabs.csv",
            b"id\tcard\texp\na\t4457010000000009\t01/50\n".to_vec(),
            "separated by tabs",
        ),
        ("utf16.csv", utf16, "UTF-16"),
        (
            "cards.csv.gz",
            vec![
                0x1f, 0x8b, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03, b'\n',
            ],
            "gzip",
        ),
        (
            "cards.json",
            br#"[{"id":"a","card":"4457010000000009","exp":"01/50"}]"#.to_vec(),
            "looks like JSON",
        ),
        (
            "binary.csv",
            vec![0x7f, b'E', b'L', b'F', 0x02, 0x01, 0x01, 0x00, b'\n'],
            "not text",
        ),
        (
            "names.csv",
            b"CustomerRef,Number,Expiry\na,4457010000000009,01/50\n".to_vec(),
            "the columns found are \"CustomerRef\", \"Number\", \"Expiry\"",
        ),
        (
            "twice.csv",
            b"id,card,exp,card\na,4457010000000009,01/50,4111111111111111\n".to_vec(),
            "two `card` columns (the 2nd and the 4th)",
        ),
    ];
    for (name, bytes, message) in cases {
        let file = TempFile::new(name, &bytes);
        let out = cardsync(&["validate", file.path()]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}: {stderr}");
        assert!(stderr.contains(message), "{name}: {stderr}");
        assert!(!stderr.contains("4457010000000009"), "{name}: {stderr}");
    }
}

/// `--columns` reads a card file whose columns have other names (CSV and JSON Lines alike).
#[test]
fn columns_of_other_names_are_read_with_columns() {
    let csv = TempFile::new(
        "named.csv",
        b"CustomerRef,Number,Expiry\nc1,4457010000000009,01/50\nc2,4100200300011001,05/50\n",
    );
    let jsonl = TempFile::new(
        "named.jsonl",
        br#"{"CustomerRef":"c1","Number":"4457010000000009","Expiry":"01/50"}
"#,
    );
    let mapping = "id=CustomerRef,card=Number,exp=Expiry";
    for (file, rows) in [(&csv, 2), (&jsonl, 1)] {
        let out = cardsync(&[
            "--output",
            "json",
            "--columns",
            mapping,
            "validate",
            file.path(),
        ]);
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        let lines = json_lines(&out);
        assert_eq!(
            lines.iter().filter(|l| l["ok"] == true).count(),
            rows,
            "{lines:?}"
        );
    }
    // Without it, the error says how.
    let out = cardsync(&["validate", csv.path()]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("--columns"));
    // A field that is not one, or one column for two fields, is refused.
    for bad in ["name=Foo", "id=Number,card=Number", "card"] {
        let out = cardsync(&["--columns", bad, "validate", csv.path()]);
        assert_eq!(out.status.code(), Some(2), "{bad}: {out:?}");
    }
}
