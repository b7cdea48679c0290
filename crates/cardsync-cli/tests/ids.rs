//! Card numbers in the id column, and control characters in text from outside: `validate`
//! (text and JSON), the rejects file, the changes file and `results` mask every id that looks
//! like a card number, however it is grouped, and the terminal shows escapes, never the
//! characters themselves.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

mod common;
use common::{Dir, Emulator, cardsync, instant, json_lines};

/// The card number the ids hold (a Visa test number that passes the Luhn check), and how it
/// shows masked.
const CARD_IN_ID: &str = "4532015112830366";
const MASKED: &str = "453201******0366";

/// The same card number as merchants write it in an id column.
const CARD_IDS: [&str; 4] = [
    "4532 0151 1283 0366",
    "4532-0151-1283-0366",
    "4532.0151.1283.0366",
    "4532015112830366",
];

/// Documented test cards that come back `updated_card` or `updated_expiry`, so that each row
/// has a line in the changes file.
const CHANGED_CARDS: [&str; 4] = [
    "4457010000000009",
    "4457000300000007",
    "5194560012341234",
    "5112010000000003",
];

fn run(args: &[&str]) -> Output {
    Command::new(common::BIN)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run cardsync")
}

/// A card file in `dir` with one row per id, on `cards` in turn.
fn card_file(dir: &Path, name: &str, ids: &[&str], cards: &[&str]) -> PathBuf {
    let mut csv = String::from("id,card,exp\n");
    for (i, id) in ids.iter().enumerate() {
        csv.push_str(&format!("\"{id}\",{},01/50\n", cards[i % cards.len()]));
    }
    let path = dir.join(name);
    std::fs::write(&path, csv).unwrap();
    path
}

/// Fails if `text` holds the card number of the ids, grouped in any of the ways the ids are:
/// with every space, hyphen, dot and slash taken out, it must not appear.
fn assert_no_card_in(what: &str, text: &str) {
    let squeezed: String = text
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | '.' | '/'))
        .collect();
    assert!(
        !squeezed.contains(CARD_IN_ID),
        "{what} shows the card number of an id:\n{text}"
    );
    for id in CARD_IDS {
        assert!(!text.contains(id), "{what} shows {id:?}:\n{text}");
    }
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).unwrap()
}

#[test]
fn validate_text_masks_card_numbers_in_ids() {
    let dir = Dir::new("ids-validate-text");
    let file = card_file(&dir.0, "cards.csv", &CARD_IDS, &CHANGED_CARDS);
    let output = run(&["validate", "--all", file.to_str().unwrap()]);
    // A warning is not a problem: the rows are valid.
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let text = stdout(&output);
    assert_no_card_in("validate", &text);
    assert_eq!(text.matches(MASKED).count(), 4, "{text}");
    assert_eq!(text.matches("ok; id_card_number: ").count(), 4, "{text}");
    assert!(text.contains("warnings: id_card_number 4"), "{text}");
}

#[test]
fn validate_json_masks_card_numbers_in_ids() {
    let dir = Dir::new("ids-validate-json");
    let mut ids = CARD_IDS.to_vec();
    // An invalid row (a wrong check digit) with a card number in its id, too.
    ids.push("ref 4532 0151 1283 0366");
    let mut cards = CHANGED_CARDS.to_vec();
    cards.push("4457010000000008");
    let file = card_file(&dir.0, "cards.csv", &ids, &cards);
    let output = run(&["--output", "json", "validate", file.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert_no_card_in("validate --output json", &stdout(&output));
    let lines = json_lines(&output);
    assert_eq!(lines.len(), 6, "{lines:?}");
    for line in &lines[..4] {
        assert_eq!(line["ok"], true, "{line}");
        assert_eq!(line["id"], MASKED, "{line}");
        assert_eq!(
            line["warnings"],
            serde_json::json!(["id_card_number"]),
            "{line}"
        );
    }
    assert_eq!(lines[4]["ok"], false, "{}", lines[4]);
    assert_eq!(lines[4]["id"], format!("ref {MASKED}"), "{}", lines[4]);
    assert_eq!(lines[4]["errors"], serde_json::json!(["luhn"]));
    assert_eq!(lines[4]["warnings"], serde_json::json!(["id_card_number"]));
    let summary = &lines[5]["summary"];
    assert_eq!(summary["warnings"]["id_card_number"], 5, "{summary}");
    assert_eq!(summary["valid"], 4, "{summary}");
}

#[test]
fn ids_without_card_numbers_are_shown_as_given() {
    let dir = Dir::new("ids-plain");
    let ids = ["sub-000042", "2024-01-15 order 77", "1234 5678 901"];
    let file = card_file(&dir.0, "cards.csv", &ids, &CHANGED_CARDS);
    let output = run(&["--output", "json", "validate", file.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let lines = json_lines(&output);
    for (line, id) in lines.iter().zip(ids) {
        assert_eq!(line["id"], id, "{line}");
        assert!(line.get("warnings").is_none(), "{line}");
    }
    assert!(lines[3]["summary"].get("warnings").is_none());
}

#[test]
fn the_rejects_file_and_reject_lines_mask_card_numbers_in_ids() {
    let dir = Dir::new("ids-rejects");
    // Every card fails the Luhn check: every row is a reject.
    let bad = ["4457010000000008", "5112010000000004", "6011010000000004"];
    let file = card_file(&dir.0, "cards.csv", &CARD_IDS, &bad);
    let out = dir.0.join("results.csv");
    let emulator = Emulator::start(instant);
    let output = cardsync(
        &emulator,
        &[
            "sync",
            "--poll-max",
            "200ms",
            "--out",
            out.to_str().unwrap(),
            file.to_str().unwrap(),
        ],
    );
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let text = stdout(&output);
    // The terminal's reject lines.
    assert_no_card_in("sync", &text);
    assert_eq!(text.matches(MASKED).count(), 4, "{text}");
    let rejects = std::fs::read_to_string(dir.0.join("results.rejects.csv")).unwrap();
    assert_no_card_in("the rejects file", &rejects);
    let rows: Vec<&str> = rejects.lines().skip(1).collect();
    assert_eq!(rows.len(), 4, "{rejects}");
    for (i, row) in rows.iter().enumerate() {
        assert!(
            row.starts_with(&format!("{},{MASKED},", i + 1)),
            "{row}\n{rejects}"
        );
    }
    assert_eq!(emulator.counts("POST /v2/batch").requests, 0);
}

#[test]
fn the_changes_file_masks_card_numbers_in_ids() {
    let dir = Dir::new("ids-changes");
    let file = card_file(&dir.0, "cards.csv", &CARD_IDS, &CHANGED_CARDS);
    let out = dir.0.join("results.csv");
    let emulator = Emulator::start(instant);
    let output = cardsync(
        &emulator,
        &[
            "sync",
            "--poll-max",
            "200ms",
            "--out",
            out.to_str().unwrap(),
            file.to_str().unwrap(),
        ],
    );
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let text = stdout(&output);
    assert_no_card_in("sync", &text);
    assert!(text.contains("4 rows warned of (id_card_number)"), "{text}");
    assert_no_card_in(
        "sync's standard error",
        &String::from_utf8_lossy(&output.stderr),
    );

    let changes = std::fs::read_to_string(dir.0.join("results.changes.csv")).unwrap();
    assert_no_card_in("the changes file", &changes);
    let rows: Vec<&str> = changes.lines().skip(1).collect();
    assert_eq!(rows.len(), 4, "{changes}");
    for row in rows {
        assert!(row.starts_with(&format!("{MASKED},updated_")), "{row}");
    }
    let summary = std::fs::read_to_string(dir.0.join("results.summary.json")).unwrap();
    assert_no_card_in("the summary file", &summary);

    // The results file holds full card numbers by design, and the ids as given, for joining
    // the results back to the merchant's records.
    let mut results = csv::Reader::from_path(&out).unwrap();
    let mut ids: Vec<String> = results
        .records()
        .map(|r| r.unwrap().get(0).unwrap().to_owned())
        .collect();
    ids.sort();
    let mut expected: Vec<String> = CARD_IDS.iter().map(|s| s.to_string()).collect();
    expected.sort();
    assert_eq!(ids, expected);
}

#[test]
fn results_mask_card_numbers_in_the_ids_cardsync_echoes_back() {
    let dir = Dir::new("ids-results");
    let file = card_file(&dir.0, "cards.csv", &CARD_IDS, &CHANGED_CARDS);
    let out = dir.0.join("results.csv");
    let emulator = Emulator::start(instant);
    let synced = cardsync(
        &emulator,
        &[
            "sync",
            "--poll-max",
            "200ms",
            "--out",
            out.to_str().unwrap(),
            file.to_str().unwrap(),
        ],
    );
    assert_eq!(synced.status.code(), Some(0), "{synced:?}");
    let mut results = csv::Reader::from_path(&out).unwrap();
    let batch = results.records().next().unwrap().unwrap()[5].to_owned();
    for format in ["text", "json"] {
        let output = cardsync(
            &emulator,
            &["--output", format, "results", "--batch", &batch],
        );
        assert_eq!(output.status.code(), Some(0), "{output:?}");
        let text = stdout(&output);
        assert_no_card_in("results", &text);
        assert_eq!(text.matches(MASKED).count(), 4, "{text}");
    }
}

#[test]
fn control_characters_in_ids_are_escaped_on_the_terminal() {
    let dir = Dir::new("ids-escapes");
    let path = dir.0.join("cards.csv");
    std::fs::write(
        &path,
        "id,card,exp\n\
         \"\x1b[31mred\",4457010000000009,01/50\n\
         \"\x1b[2J\x1b[Hcleared\x07!\",4457010000000008,01/50\n",
    )
    .unwrap();
    let output = run(&["validate", "--all", path.to_str().unwrap()]);
    let text = stdout(&output);
    assert!(
        !text.contains('\x1b'),
        "an escape sequence reached the terminal:\n{text:?}"
    );
    assert!(!text.contains('\x07'), "{text:?}");
    assert!(text.contains("\\u{1b}[31mred"), "{text}");
    assert!(text.contains("\\u{1b}[2J\\u{1b}[Hcleared\\u{7}!"), "{text}");

    // JSON output escapes them as JSON does, and keeps the id.
    let output = run(&["--output", "json", "validate", path.to_str().unwrap()]);
    let raw = stdout(&output);
    assert!(!raw.contains('\x1b'), "{raw:?}");
    let lines = json_lines(&output);
    assert_eq!(lines[0]["id"], "\x1b[31mred");
    assert_eq!(lines[1]["id"], "\x1b[2J\x1b[Hcleared\x07!");
}
