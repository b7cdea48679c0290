//! The duplicate check of `sync`, with memory that does not grow with the input.
//!
//! While planning, the planner's fingerprints of every id and card are appended to 64 scratch
//! files, split by their top six bits (fingerprints are uniform keyed hashes, so the files are
//! of even size); the store answers "not seen" at once. After planning, each file is read back
//! and sorted on its own (a 64th of the records at a time), and every record whose fingerprint
//! an earlier row already had is a duplicate. `sync` then takes those rows out of the stored
//! requests before anything is sent. Same verdicts as the in-memory check, found later.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use cardsync_core::{SeenKind, SeenStore};

const PARTITIONS: usize = 64;
const RECORD: usize = 17;

/// A row whose id or card an earlier row already had.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Duplicate {
    pub(crate) row: u64,
    pub(crate) first_row: u64,
    pub(crate) card: bool,
}

struct Inner {
    dir: PathBuf,
    files: Vec<BufWriter<File>>,
    error: Option<io::Error>,
}

/// The store handed to the planner; [`SpillSeen::duplicates`] reads the verdicts.
#[derive(Clone)]
pub(crate) struct SpillSeen(Arc<Mutex<Inner>>);

impl SpillSeen {
    /// Scratch files in a new directory under `parent`, removed on drop.
    pub(crate) fn new(parent: &std::path::Path) -> io::Result<SpillSeen> {
        remove_stale(parent);
        let dir = parent.join(format!(".cardsync-dedupe-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let files = (0..PARTITIONS)
            .map(|i| {
                crate::files::create_private(&dir.join(format!("{i:02}")))
                    .map(|f| BufWriter::with_capacity(32 << 10, f))
            })
            .collect::<io::Result<Vec<_>>>()?;
        Ok(SpillSeen(Arc::new(Mutex::new(Inner {
            dir,
            files,
            error: None,
        }))))
    }

    /// Every duplicate row, in row order.
    pub(crate) fn duplicates(&self) -> io::Result<Vec<Duplicate>> {
        let mut inner = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = inner.error.take() {
            return Err(e);
        }
        for f in &mut inner.files {
            f.flush()?;
        }
        let mut found = Vec::new();
        let mut records: Vec<(u8, u64, u64)> = Vec::new();
        for i in 0..PARTITIONS {
            records.clear();
            let mut bytes = Vec::new();
            BufReader::new(File::open(inner.dir.join(format!("{i:02}")))?)
                .read_to_end(&mut bytes)?;
            for r in bytes.chunks_exact(RECORD) {
                let fp = u64::from_le_bytes(r[1..9].try_into().expect("8 bytes"));
                let row = u64::from_le_bytes(r[9..17].try_into().expect("8 bytes"));
                records.push((r[0], fp, row));
            }
            records.sort_unstable();
            // Sorted by row within a fingerprint: a run's first record is the first row.
            let mut start = 0;
            for i in 1..records.len() {
                let (first, this) = (records[start], records[i]);
                if (first.0, first.1) == (this.0, this.1) {
                    found.push(Duplicate {
                        row: this.2,
                        first_row: first.2,
                        card: this.0 == 1,
                    });
                } else {
                    start = i;
                }
            }
        }
        found.sort_unstable_by_key(|d| (d.row, d.card));
        Ok(found)
    }
}

/// Removes the scratch directories of runs that were killed while planning (their process is
/// gone), where the system says which processes exist.
fn remove_stale(parent: &std::path::Path) {
    if !std::path::Path::new("/proc/self").exists() {
        return;
    }
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(".cardsync-dedupe-"))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl SeenStore for SpillSeen {
    fn claim(&mut self, kind: SeenKind, fingerprint: u64, row: u64) -> Option<u64> {
        let mut inner = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let mut record = [0u8; RECORD];
        record[0] = u8::from(kind == SeenKind::Card);
        record[1..9].copy_from_slice(&fingerprint.to_le_bytes());
        record[9..17].copy_from_slice(&row.to_le_bytes());
        let partition = (fingerprint >> 58) as usize;
        if let Err(e) = inner.files[partition].write_all(&record) {
            inner.error.get_or_insert(e);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_rows_with_a_seen_fingerprint_are_duplicates() {
        let dir = std::env::temp_dir().join(format!("cardsync-dedupe-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let seen = SpillSeen::new(&dir).unwrap();
        let mut store = seen.clone();
        let fp = |n: u64| n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        assert_eq!(store.claim(SeenKind::Id, fp(1), 1), None);
        assert_eq!(store.claim(SeenKind::Card, fp(1), 1), None);
        store.claim(SeenKind::Id, fp(2), 2);
        store.claim(SeenKind::Card, fp(3), 2);
        store.claim(SeenKind::Id, fp(1), 3); // id of row 1
        store.claim(SeenKind::Card, fp(4), 3);
        store.claim(SeenKind::Id, fp(5), 4);
        store.claim(SeenKind::Card, fp(3), 4); // card of row 2
        store.claim(SeenKind::Id, fp(1), 5); // id of row 1 again
        store.claim(SeenKind::Card, fp(6), 5);
        let dups = seen.duplicates().unwrap();
        assert_eq!(
            dups,
            vec![
                Duplicate {
                    row: 3,
                    first_row: 1,
                    card: false
                },
                Duplicate {
                    row: 4,
                    first_row: 2,
                    card: true
                },
                Duplicate {
                    row: 5,
                    first_row: 1,
                    card: false
                },
            ]
        );
        drop((seen, store));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
