//! `plan`: the planner as an iterator of events.

use super::*;

/// One output of [`plan`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PlanEvent {
    /// A row was rejected.
    Rejected(RejectedRow),
    /// A request is ready.
    Request(PlannedRequest),
}

/// Plans an iterator of records lazily: rejected rows as they are found, requests as they fill
/// up, and the partly filled requests once the input ends.
///
/// ```
/// use cardsync_core::{plan, PlanEvent, PlanOptions, RecordBuf, Route};
///
/// let rows = vec![
///     RecordBuf::new("a", "342132335566772", "01/50").with_se_number(Some("1234567890".into())),
///     RecordBuf::new("b", "4457010000000009", "01/50"),
///     RecordBuf::new("c", "3530111333300000", "01/50"), // JCB
/// ];
/// let events: Vec<PlanEvent> = plan(rows, PlanOptions::default()).collect();
/// assert!(matches!(&events[0], PlanEvent::Rejected(r) if r.reasons[0].code() == "unsupported_brand"));
/// assert!(matches!(&events[1], PlanEvent::Request(r) if r.route == Route::Batch));
/// assert!(matches!(&events[2], PlanEvent::Request(r) if r.route.se_number().is_some()));
/// ```
pub fn plan<I>(records: I, options: PlanOptions) -> Plan<I::IntoIter>
where
    I: IntoIterator,
    I::Item: AsRecord,
{
    Plan {
        records: records.into_iter(),
        planner: Planner::new(options),
        finished: false,
    }
}

/// The iterator returned by [`plan`].
pub struct Plan<I> {
    records: I,
    planner: Planner,
    finished: bool,
}

impl<I> fmt::Debug for Plan<I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Plan")
            .field("planner", &self.planner)
            .finish_non_exhaustive()
    }
}

impl<I> Plan<I> {
    /// The planner inside, to read its row count or options.
    pub fn planner(&self) -> &Planner {
        &self.planner
    }
}

impl<I> Iterator for Plan<I>
where
    I: Iterator,
    I::Item: AsRecord,
{
    type Item = PlanEvent;

    fn next(&mut self) -> Option<PlanEvent> {
        loop {
            if let Some(request) = self.planner.poll_request() {
                return Some(PlanEvent::Request(request));
            }
            if self.finished {
                return None;
            }
            match self.records.next() {
                Some(item) => {
                    if let RowVerdict::Rejected(r) = self.planner.handle_record(item.as_record()) {
                        return Some(PlanEvent::Rejected(r));
                    }
                }
                None => {
                    self.finished = true;
                    self.planner.finish();
                }
            }
        }
    }
}
