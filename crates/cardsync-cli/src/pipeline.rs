//! Reading a card file through the planner, shared by `validate`, `plan`, `submit` and `sync`:
//! rows are read and checked on a second thread, admitted in order on this one, and reported.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use cardsync_core::{
    AcceptedRow, PlanOptions, PlannedRequest, Planner, Record, RowVerdict, RowWarnings, SeNumber,
    mask_card_text,
};

use crate::error::{CliError, Exit};
use crate::input;
use crate::report::{self, Problem, Reporter};

pub(crate) fn plan_options(
    se_number: Option<&str>,
    max: Option<usize>,
) -> Result<PlanOptions, CliError> {
    let se = se_number
        .map(|s| SeNumber::parse(s).map_err(|e| CliError::Usage(format!("--se-number {s:?}: {e}"))))
        .transpose()?;
    let mut options = PlanOptions::default().with_default_se_number(se);
    if let Some(max) = max {
        options = options
            .with_max_per_request(max)
            .map_err(|e| CliError::Usage(format!("--max-per-request: {e}")))?;
    }
    Ok(options)
}

/// The async runtime of the commands that talk to CardSync: two workers are plenty for one
/// job's requests.
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(CliError::Runtime)
}

/// Which valid rows [`check_rows`] prints (invalid rows are always reported).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ShowValid {
    /// Every one.
    Every,
    /// Those with a warning (`validate` on a terminal).
    Warned,
    /// None: they are only counted.
    None,
}

/// Feeds every row of `file` to `planner` and reports it; `show` says which valid rows are
/// printed (the others are only counted). Requests are handed to `on_request` as they become ready, and
/// the partly filled ones at the end.
///
/// Rows are read and checked on a second thread, which also prepares the line of every row
/// that is good so far (when valid rows are printed); this thread runs the duplicate check,
/// plans and writes, in row order.
pub(crate) fn check_rows<W: Write>(
    file: &Path,
    planner: &mut Planner,
    reporter: &mut Reporter<W>,
    show: ShowValid,
    mut on_request: impl FnMut(&mut Reporter<W>, PlannedRequest) -> Result<(), CliError>,
) -> Result<(), CliError> {
    let mut estimate = input::estimate_rows(file);
    let checker = planner.checker();
    let format = reporter.format();
    let render = move |record: &Record<'_>, a: &AcceptedRow, out: &mut Vec<u8>| {
        if show == ShowValid::Every || !a.warnings.is_empty() {
            report::render_valid(format, out, record.id, a);
        }
    };
    let ahead = input::Ahead {
        checker: &checker,
        first_row: planner.rows() + 1,
        render: (show != ShowValid::None).then_some(&render as input::Render<'_>),
    };
    input::for_each_block(file, &ahead, |prepared| {
        // Make room for the duplicate check once the reader is under way, so that the two
        // overlap; with some margin, as the estimate comes from the first lines only.
        if let Some(rows) = estimate.take() {
            planner.reserve(rows + rows / 8);
        }
        let block = prepared.block();
        let lines = &block.lines;
        // Runs of readable records go to the planner at once; each unreadable row ends one.
        let (mut at, mut record) = (0, 0);
        let ends = block.unreadable.iter().map(Some).chain([None]);
        for end in ends {
            let stop = end.map_or(block.len, |(i, _)| *i);
            let run = &block.records[record..record + (stop - at)];
            let mut failed = None;
            let mut i = at;
            planner.admit_records(run, block.checked, |planner, _, verdict| {
                let line = lines.line(i);
                i += 1;
                if failed.is_some() {
                    return;
                }
                let reported = match verdict {
                    RowVerdict::Rejected(r) => reporter.invalid(&Problem::from(&r)),
                    // The reader rendered every row that could be accepted, when printing.
                    RowVerdict::Accepted(a) => reporter.valid(&a, line),
                    other => unreachable!("a verdict this version does not know: {other:?}"),
                };
                let polled = reported.map_err(CliError::Stdout).and_then(|()| {
                    while let Some(request) = planner.poll_request() {
                        on_request(reporter, request)?;
                    }
                    Ok(())
                });
                failed = polled.err();
            });
            if let Some(e) = failed {
                return Err(e);
            }
            record += run.len();
            at = stop;
            let Some((_, row)) = end else {
                continue;
            };
            // Keep the planner's row numbers in step with the file.
            reporter.invalid(&Problem {
                row: planner.skip_record(),
                id: &row.id,
                card: mask_card_text(&row.card),
                brand: None,
                reasons: vec![(row.code, row.message.clone())],
                warnings: RowWarnings::of_id(&row.id),
            })?;
            at += 1;
        }
        Ok(())
    })?;
    planner.finish();
    while let Some(request) = planner.poll_request() {
        on_request(reporter, request)?;
    }
    Ok(())
}

/// `validate`: every row's verdict, or (`every_row` false) only the rows with problems or
/// warnings, then the summary.
pub(crate) fn validate<W: Write>(
    file: &Path,
    options: PlanOptions,
    mut reporter: Reporter<W>,
    every_row: bool,
) -> Result<ExitCode, CliError> {
    // Routes and duplicates are checked, but no request is built: nothing is sent.
    check_rows(
        file,
        &mut Planner::new(options.with_requests(false)),
        &mut reporter,
        if every_row {
            ShowValid::Every
        } else {
            ShowValid::Warned
        },
        |_, _| Ok(()),
    )?;
    Ok(Exit::for_invalid(reporter.finish()?.invalid).into())
}

pub(crate) fn plan<W: Write>(
    file: &Path,
    options: PlanOptions,
    mut reporter: Reporter<W>,
) -> Result<ExitCode, CliError> {
    check_rows(
        file,
        &mut Planner::new(options),
        &mut reporter,
        ShowValid::None,
        |reporter, request| Ok(reporter.request(&request)?),
    )?;
    Ok(Exit::for_invalid(reporter.finish()?.invalid).into())
}
