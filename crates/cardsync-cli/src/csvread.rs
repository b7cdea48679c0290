//! A CSV record reader for card files: lines without a quote are split where they are, in the
//! reader's buffer; the first record, and a record with a quote anywhere in its first line, go
//! through `csv_core`,
//! the parser under the `csv` crate, so that every record reads exactly as `csv` (with
//! `flexible(true)`) reads it.
//!
//! Card files are nearly always plain (`id,card,exp` with no quoting), and for those the
//! general parser's byte-by-byte state machine and its copy of every record are most of the
//! cost of reading. What `csv` does, this reader does too: `\n`, `\r` and `\r\n` all end a
//! record, empty lines are skipped, a UTF-8 byte order mark at the start is dropped, and a
//! quoted field may hold commas, doubled quotes and line breaks. The `tests` check that the
//! two read the same records from any input, with any buffer size.

use std::io::{self, Read};

/// Where a record's fields are: byte ranges in [`CsvReader::bytes`].
type Ranges = Vec<(usize, usize)>;

/// Reads CSV records one at a time from `R`.
pub(crate) struct CsvReader<R> {
    inner: R,
    buf: Vec<u8>,
    /// The unread data is `buf[start..end]`.
    start: usize,
    end: usize,
    eof: bool,
    /// Whether the first record has been read.
    started: bool,
    core: csv_core::Reader,
    /// The record, when `csv_core` read it: its fields back to back, and their ends.
    out: Vec<u8>,
    ends: Vec<usize>,
    /// Where the current record is: `buf[line.0..line.1]` (a plain line), or `out`.
    line: Option<(usize, usize)>,
    fields: Ranges,
}

/// Where the fields of the plain line `line` are: between its commas.
fn split_at_commas(line: &[u8], fields: &mut Ranges) {
    fields.clear();
    let mut from = 0;
    for comma in memchr::memchr_iter(b',', line) {
        fields.push((from, comma));
        from = comma + 1;
    }
    fields.push((from, line.len()));
}

impl<R: Read> CsvReader<R> {
    /// A reader with a buffer of `capacity` bytes (it grows for a longer line).
    pub(crate) fn new(inner: R, capacity: usize) -> CsvReader<R> {
        CsvReader {
            inner,
            buf: vec![0; capacity.max(4)],
            start: 0,
            end: 0,
            eof: false,
            started: false,
            core: csv_core::Reader::new(),
            out: Vec::new(),
            ends: Vec::new(),
            line: None,
            fields: Vec::new(),
        }
    }

    /// The current record's bytes: its fields are ranges of these (see [`CsvReader::field`]).
    pub(crate) fn bytes(&self) -> &[u8] {
        match self.line {
            Some((a, b)) => &self.buf[a..b],
            None => &self.out,
        }
    }

    /// Where field `i` of the current record is in [`CsvReader::bytes`], if it has one.
    pub(crate) fn field(&self, i: usize) -> Option<(usize, usize)> {
        self.fields.get(i).copied()
    }

    /// Moves the unread data to the front and reads more after it. Returns whether anything
    /// was read.
    fn fill(&mut self) -> io::Result<bool> {
        if self.eof {
            return Ok(false);
        }
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            let len = self.buf.len();
            self.buf.resize(len * 2, 0);
        }
        loop {
            match self.inner.read(&mut self.buf[self.end..]) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(false);
                }
                Ok(n) => {
                    self.end += n;
                    return Ok(true);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads the next record; `false` at the end of the input.
    pub(crate) fn read(&mut self) -> io::Result<bool> {
        if !self.started {
            // The first record goes through `csv_core`, which drops a byte order mark before
            // it (and only there) when its first input holds all three bytes of one.
            // (With less after the mark, it would take the empty rest for the end.)
            while self.end - self.start < 4 && self.fill()? {}
            self.started = true;
            return self.read_quoted();
        }
        loop {
            let rest = &self.buf[self.start..self.end];
            match memchr::memchr3(b'\n', b'\r', b'"', rest) {
                Some(i) if rest[i] != b'"' => {
                    let (a, b) = (self.start, self.start + i);
                    self.start = b + 1;
                    if a == b {
                        continue; // An empty line (or the `\n` of a `\r\n`).
                    }
                    self.split(a, b);
                    return Ok(true);
                }
                Some(_) => return self.read_quoted(),
                None if self.fill()? => {}
                None if self.start == self.end => return Ok(false),
                None => {
                    // The last line, with no line break after it.
                    let (a, b) = (self.start, self.end);
                    self.start = b;
                    self.split(a, b);
                    return Ok(true);
                }
            }
        }
    }

    /// Reads up to `max` plain records (no quote in them) from what the buffer holds, all
    /// checked for UTF-8 at once, and hands each to `each` as its line and where its fields
    /// are in it. Returns how many were read: 0 when the next record is not such a one in the
    /// buffer (the first record, one with a quote or bytes that are not UTF-8, one not wholly
    /// read yet, or the end), which [`CsvReader::read`] then reads.
    pub(crate) fn read_plain(
        &mut self,
        max: usize,
        mut each: impl FnMut(&str, &[(usize, usize)]),
    ) -> usize {
        if !self.started || max == 0 {
            return 0;
        }
        let rest = &self.buf[self.start..self.end];
        // Whole lines only, and none from the first quote on.
        let mut region = match memchr::memrchr2(b'\n', b'\r', rest) {
            Some(last) => &rest[..=last],
            None => return 0,
        };
        if let Some(quote) = memchr::memchr(b'"', region) {
            match memchr::memrchr2(b'\n', b'\r', &region[..quote]) {
                Some(last) => region = &region[..=last],
                None => return 0,
            }
        }
        let text = match std::str::from_utf8(region) {
            Ok(text) => text,
            Err(e) => match memchr::memrchr2(b'\n', b'\r', &region[..e.valid_up_to()]) {
                // Valid up to there (the split is at an ASCII byte, so the prefix is too).
                Some(last) => std::str::from_utf8(&region[..=last]).unwrap_or_default(),
                None => return 0,
            },
        };
        let (mut read, mut at) = (0, 0);
        let fields = &mut self.fields;
        while read < max && at < text.len() {
            let line_end = memchr::memchr2(b'\n', b'\r', &text.as_bytes()[at..])
                .map_or(text.len(), |i| at + i);
            let line = &text[at..line_end];
            at = line_end + 1;
            if line.is_empty() {
                continue;
            }
            split_at_commas(line.as_bytes(), fields);
            each(line, fields);
            read += 1;
        }
        self.start += at.min(text.len());
        read
    }

    /// Splits the plain line `buf[a..b]` at its commas.
    fn split(&mut self, a: usize, b: usize) {
        split_at_commas(&self.buf[a..b], &mut self.fields);
        self.line = Some((a, b));
    }

    /// Reads a record with `csv_core`, from where the record starts.
    fn read_quoted(&mut self) -> io::Result<bool> {
        use csv_core::ReadRecordResult;
        self.out.clear();
        self.ends.clear();
        self.out.resize(64, 0);
        self.ends.resize(8, 0);
        let (mut nout, mut nends) = (0, 0);
        loop {
            // An empty input tells `csv_core` that the input ended: only at the end.
            if self.start == self.end && self.fill()? {
                continue;
            }
            let input = &self.buf[self.start..self.end];
            let (result, nin, o, e) =
                self.core
                    .read_record(input, &mut self.out[nout..], &mut self.ends[nends..]);
            self.start += nin;
            nout += o;
            nends += e;
            match result {
                ReadRecordResult::InputEmpty => {}
                ReadRecordResult::OutputFull => {
                    let len = self.out.len();
                    self.out.resize(len * 2, 0);
                }
                ReadRecordResult::OutputEndsFull => {
                    let len = self.ends.len();
                    self.ends.resize(len * 2, 0);
                }
                ReadRecordResult::Record => {
                    self.out.truncate(nout);
                    self.fields.clear();
                    let mut from = 0;
                    for &end in &self.ends[..nends] {
                        self.fields.push((from, end));
                        from = end;
                    }
                    self.line = None;
                    return Ok(true);
                }
                ReadRecordResult::End => return Ok(false),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that hands out at most `step` bytes a call, to cut the input anywhere.
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            let n = self.step.min(out.len()).min(self.data.len());
            out[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    /// The records `CsvReader` reads, in runs of at most `run` plain records between single
    /// reads (`run` 0: single reads only).
    fn ours(data: &[u8], capacity: usize, step: usize, run: usize) -> Vec<Vec<Vec<u8>>> {
        let mut r = CsvReader::new(Trickle { data, step }, capacity);
        let mut records = Vec::new();
        loop {
            let n = r.read_plain(run, |line, fields| {
                records.push(
                    fields
                        .iter()
                        .map(|&(a, b)| line.as_bytes()[a..b].to_vec())
                        .collect(),
                );
            });
            assert!(n <= run);
            if n > 0 {
                continue;
            }
            if !r.read().unwrap() {
                break;
            }
            let bytes = r.bytes();
            records.push(
                (0..)
                    .map_while(|i| r.field(i))
                    .map(|(a, b)| bytes[a..b].to_vec())
                    .collect(),
            );
        }
        // The end stays the end.
        assert!(!r.read().unwrap());
        assert_eq!(
            r.read_plain(run, |_, _| panic!("a record after the end")),
            0
        );
        records
    }

    fn theirs(data: &[u8]) -> Vec<Vec<Vec<u8>>> {
        let mut r = csv::ReaderBuilder::new()
            .flexible(true)
            .has_headers(false)
            .from_reader(data);
        r.byte_records()
            .map(|rec| rec.unwrap().iter().map(<[u8]>::to_vec).collect())
            .collect()
    }

    #[test]
    fn reads_as_the_csv_crate_does() {
        for data in [
            &b""[..],
            b"\n\n\r\n",
            b"id,card,exp\na,4457010000000009,01/50\n",
            b"id,card,exp\r\na,1,2\r\nb,3,4",
            b"\xEF\xBB\xBFid,card\na,b\n",
            b"a,\"b,c\",d\ne,f\n",
            b"a,\"line\nbreak\",\"x\"\"y\"\n\"\"\n,\n",
            b"a\"b,c\nd\n",
            b"\"open quote never closed\nmore,lines\n",
            b"a,b\rc,d\r\r\ne\n",
            b" , ,\n\t\n",
            b"\xFF\xFE,\xC3\xA9\n",
        ] {
            let expected = theirs(data);
            for capacity in [4, 5, 7, 64, 1 << 16] {
                for step in [1, 2, 3, 1 << 16] {
                    for run in [0, 1, 2, 256] {
                        assert_eq!(
                            ours(data, capacity, step, run),
                            expected,
                            "{:?} capacity {capacity} step {step} run {run}",
                            String::from_utf8_lossy(data)
                        );
                    }
                }
            }
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

        /// Any input built of the bytes that matter to CSV reads the same records, whatever
        /// the buffer size and however the input arrives.
        #[test]
        fn any_input_reads_as_the_csv_crate_reads_it(
            parts in proptest::collection::vec(
                proptest::sample::select(vec![
                    &b"a"[..], b"4457010000000009", b",", b"\"", b"\"\"", b"\n", b"\r", b"\r\n",
                    b" ", b"\xEF\xBB\xBF", b"\xC3\xA9", b"\xFF", b"01/50",
                ]),
                0..60,
            ),
            capacity in 4usize..80,
            step in 1usize..40,
            run in 0usize..5,
        ) {
            let data = parts.concat();
            proptest::prop_assert_eq!(ours(&data, capacity, step, run), theirs(&data));
        }
    }
}
