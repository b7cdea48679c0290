//! Card numbers in a shared database: sealed with AES-256-GCM under a key the database never
//! sees, and fingerprinted with a keyed hash for duplicate checks.
//!
//! The journal key is 32 random bytes, given as 64 hexadecimal digits in `CARDSYNC_JOURNAL_KEY`
//! or in a file named by `CARDSYNC_JOURNAL_KEY_FILE`. Two keys are derived from it with HKDF
//! (SHA-256): one seals, one fingerprints; an 8-byte id names it (stored with every sealed
//! value, so that a value sealed under another key is recognised and rotation can find what it
//! has left to re-encrypt).
//!
//! A sealed value is `key id (8) ‖ nonce (12) ‖ ciphertext ‖ tag (16)`, its associated data the
//! place it belongs to (job, request, row): a value copied to another row does not open.
//! Nonces are random (96 bits), which keeps the chance of a repeat negligible far beyond the
//! number of cards a key seals before it is rotated (NIST SP 800-38D allows 2^32 messages).

use std::fmt;

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::hkdf;
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use zeroize::{Zeroize, Zeroizing};

/// The environment variable that holds the journal key (64 hexadecimal digits).
pub const KEY_ENV: &str = "CARDSYNC_JOURNAL_KEY";
/// The environment variable that names a file holding the journal key.
pub const KEY_FILE_ENV: &str = "CARDSYNC_JOURNAL_KEY_FILE";
/// The environment variable that holds the previous journal key during a rotation.
pub const OLD_KEY_ENV: &str = "CARDSYNC_JOURNAL_OLD_KEY";
/// The environment variable that names a file holding the previous journal key.
pub const OLD_KEY_FILE_ENV: &str = "CARDSYNC_JOURNAL_OLD_KEY_FILE";

/// The most bytes read from a key file (a key is 64 hexadecimal digits and a newline).
const KEY_FILE_MAX: u64 = 4096;

const ID_LEN: usize = 8;
const TAG_LEN: usize = 16;

/// Why a journal key could not be had, or a sealed value not opened.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyError {
    /// Neither `CARDSYNC_JOURNAL_KEY` nor `CARDSYNC_JOURNAL_KEY_FILE` is set.
    Missing,
    /// The key is not 64 hexadecimal digits.
    Malformed,
    /// The key file could not be read, or may not be used (readable by others, not a
    /// regular file, too long).
    File(String),
    /// The value was sealed under another key (its id is given).
    OtherKey(String),
    /// The value is damaged, or was moved from the place it was sealed for.
    Damaged,
    /// The operating system gave no random bytes.
    Random,
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyError::Missing => write!(
                f,
                "no journal key: set {KEY_ENV} to 64 hexadecimal digits (32 random bytes, e.g. \
                 from `openssl rand -hex 32`), or {KEY_FILE_ENV} to a file holding them"
            ),
            KeyError::Malformed => {
                f.write_str("the journal key must be 64 hexadecimal digits (32 bytes)")
            }
            KeyError::File(why) => write!(f, "cannot read the journal key file: {why}"),
            KeyError::OtherKey(id) => write!(
                f,
                "the journal is sealed under another key (id {id}) than this one: give that key \
                 in {KEY_ENV} (while a rotation runs, the new key there and the previous one in \
                 {OLD_KEY_ENV})"
            ),
            KeyError::Damaged => {
                f.write_str("a sealed card in the journal is damaged or out of place")
            }
            KeyError::Random => f.write_str("the operating system gave no random bytes"),
        }
    }
}

impl std::error::Error for KeyError {}

struct Len(usize);

impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

/// The journal key. `Debug` shows only its id.
///
/// ```
/// use cardsync_job_postgres::JournalKey;
///
/// let key = JournalKey::from_hex(&"ab".repeat(32))?;
/// let sealed = key.seal(b"4111111111111111", b"job 1 row 7")?;
/// assert_eq!(&*key.open(&sealed, b"job 1 row 7")?, b"4111111111111111");
/// assert!(key.open(&sealed, b"job 1 row 8").is_err());
/// assert!(!format!("{key:?}").contains("abab"));
/// # Ok::<(), cardsync_job_postgres::KeyError>(())
/// ```
pub struct JournalKey {
    sealing: LessSafeKey,
    fingerprinting: hmac::Key,
    /// The fingerprinting key's bytes: the seed of a new journal's merchant identity key.
    fingerprint_seed: Zeroizing<[u8; 32]>,
    authenticating: hmac::Key,
    id: [u8; ID_LEN],
    random: SystemRandom,
}

impl fmt::Debug for JournalKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JournalKey")
            .field("id", &self.id())
            .finish_non_exhaustive()
    }
}

impl JournalKey {
    /// The key from 64 hexadecimal digits (surrounding white space ignored).
    ///
    /// # Errors
    ///
    /// [`KeyError::Malformed`].
    pub fn from_hex(hex: &str) -> Result<JournalKey, KeyError> {
        let hex = hex.trim();
        if hex.len() != 64 {
            return Err(KeyError::Malformed);
        }
        let mut bytes = Zeroizing::new([0u8; 32]);
        for (i, pair) in hex.as_bytes().chunks(2).enumerate() {
            let digit = |b: u8| (b as char).to_digit(16).ok_or(KeyError::Malformed);
            bytes[i] = (digit(pair[0])? * 16 + digit(pair[1])?) as u8;
        }
        Ok(JournalKey::from_bytes(&bytes))
    }

    /// The key from `CARDSYNC_JOURNAL_KEY`, else from the file named by
    /// `CARDSYNC_JOURNAL_KEY_FILE` (see [`JournalKey::from_file`]). A variable set to the empty
    /// string counts as unset.
    ///
    /// # Errors
    ///
    /// [`KeyError::Missing`], [`KeyError::Malformed`], [`KeyError::File`].
    pub fn from_env() -> Result<JournalKey, KeyError> {
        JournalKey::from_vars(KEY_ENV, KEY_FILE_ENV)?.ok_or(KeyError::Missing)
    }

    /// The previous key during a rotation, from `CARDSYNC_JOURNAL_OLD_KEY` or the file named by
    /// `CARDSYNC_JOURNAL_OLD_KEY_FILE`, if either is set.
    ///
    /// # Errors
    ///
    /// [`KeyError::Malformed`], [`KeyError::File`].
    pub fn old_from_env() -> Result<Option<JournalKey>, KeyError> {
        JournalKey::from_vars(OLD_KEY_ENV, OLD_KEY_FILE_ENV)
    }

    fn from_vars(var: &str, file_var: &str) -> Result<Option<JournalKey>, KeyError> {
        if let Some(hex) = std::env::var(var).ok().filter(|v| !v.trim().is_empty()) {
            let hex = Zeroizing::new(hex);
            return JournalKey::from_hex(&hex).map(Some);
        }
        match std::env::var_os(file_var).filter(|v| !v.is_empty()) {
            Some(path) => JournalKey::from_file(std::path::Path::new(&path)).map(Some),
            None => Ok(None),
        }
    }

    /// The key from a file, as `ssh` takes a private key: the file must be a regular file
    /// (not a link to one, not a device) readable and writable by its owner only (no group or
    /// other permission bits), and is read up to 4 KiB.
    ///
    /// # Errors
    ///
    /// [`KeyError::File`] when the file cannot be read or may not be used,
    /// [`KeyError::Malformed`].
    pub fn from_file(path: &std::path::Path) -> Result<JournalKey, KeyError> {
        use std::io::Read;
        let shown = path.display();
        let fail = |why: String| KeyError::File(format!("{shown}: {why}"));
        let mut options = std::fs::OpenOptions::new();
        options.read(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            // Not through a symbolic link; not blocking on a FIFO.
            options.custom_flags(nix_flags::NOFOLLOW | nix_flags::NONBLOCK);
        }
        let file = options.open(path).map_err(|e| fail(e.to_string()))?;
        let meta = file.metadata().map_err(|e| fail(e.to_string()))?;
        if !meta.is_file() {
            return Err(fail("not a regular file".into()));
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = meta.permissions().mode();
            if mode & 0o077 != 0 {
                return Err(fail(format!(
                    "readable by others (mode {:o}): a key file must be readable by its owner \
                     only (chmod 600)",
                    mode & 0o777
                )));
            }
        }
        let mut text = Zeroizing::new(String::new());
        file.take(KEY_FILE_MAX + 1)
            .read_to_string(&mut text)
            .map_err(|e| fail(e.to_string()))?;
        if text.len() as u64 > KEY_FILE_MAX {
            return Err(fail(format!(
                "longer than {KEY_FILE_MAX} bytes: not a key file"
            )));
        }
        JournalKey::from_hex(&text)
    }

    fn from_bytes(bytes: &[u8; 32]) -> JournalKey {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, b"cardsync journal").extract(bytes);
        let derive = |info: &'static [u8], out: &mut [u8]| {
            prk.expand(&[info], Len(out.len()))
                .and_then(|okm| okm.fill(out))
                .expect("HKDF output of a valid length");
        };
        let mut seal = [0u8; 32];
        derive(b"aead v1", &mut seal);
        let mut mac = Zeroizing::new([0u8; 32]);
        derive(b"fingerprint v1", &mut mac[..]);
        let mut auth = [0u8; 32];
        derive(b"row authentication v1", &mut auth);
        let mut id = [0u8; ID_LEN];
        derive(b"key id v1", &mut id);
        let key = JournalKey {
            sealing: LessSafeKey::new(
                UnboundKey::new(&AES_256_GCM, &seal).expect("a 32-byte AES key"),
            ),
            fingerprinting: hmac::Key::new(hmac::HMAC_SHA256, &mac[..]),
            fingerprint_seed: mac,
            authenticating: hmac::Key::new(hmac::HMAC_SHA256, &auth),
            id,
            random: SystemRandom::new(),
        };
        seal.zeroize();
        auth.zeroize();
        key
    }

    /// The bytes a new journal's merchant identity key starts from (this key's fingerprinting
    /// key, so that journals made before the identity key existed keep their merchants).
    pub(crate) fn identity_seed(&self) -> &[u8; 32] {
        &self.fingerprint_seed
    }

    /// Authenticates `fields` (each length-prefixed, so that no two lists of fields give the
    /// same input): an HMAC-SHA256 under a key derived from this one, which the database never
    /// sees. A row that carries it was written by a holder of the key.
    pub(crate) fn authenticate(&self, fields: &[&[u8]]) -> Vec<u8> {
        let mut context = hmac::Context::with_key(&self.authenticating);
        for field in fields {
            context.update(&(field.len() as u64).to_be_bytes());
            context.update(field);
        }
        context.sign().as_ref().to_vec()
    }

    /// Whether `tag` authenticates `fields` (compared in constant time).
    pub(crate) fn verify(&self, fields: &[&[u8]], tag: &[u8]) -> bool {
        let mut data = Vec::new();
        for field in fields {
            data.extend_from_slice(&(field.len() as u64).to_be_bytes());
            data.extend_from_slice(field);
        }
        hmac::verify(&self.authenticating, &data, tag).is_ok()
    }

    /// The key's id, 16 hexadecimal digits: what the journal records, never the key.
    pub fn id(&self) -> String {
        hex(&self.id)
    }

    /// Seals `plain` for the place `aad` names.
    ///
    /// # Errors
    ///
    /// [`KeyError::Random`] when no nonce could be had.
    pub fn seal(&self, plain: &[u8], aad: &[u8]) -> Result<Vec<u8>, KeyError> {
        let mut nonce = [0u8; NONCE_LEN];
        self.random.fill(&mut nonce).map_err(|_| KeyError::Random)?;
        let mut out = Vec::with_capacity(ID_LEN + NONCE_LEN + plain.len() + TAG_LEN);
        out.extend_from_slice(&self.id);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plain);
        let (head, body) = out.split_at_mut(ID_LEN + NONCE_LEN);
        let tag = self
            .sealing
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), body)
            .map_err(|_| KeyError::Damaged)?;
        let _ = head;
        out.extend_from_slice(tag.as_ref());
        Ok(out)
    }

    /// Opens a value sealed for the place `aad` names.
    ///
    /// # Errors
    ///
    /// [`KeyError::OtherKey`] when another key sealed it, [`KeyError::Damaged`] when it does not
    /// open.
    pub fn open(&self, sealed: &[u8], aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, KeyError> {
        if sealed.len() < ID_LEN + NONCE_LEN + TAG_LEN {
            return Err(KeyError::Damaged);
        }
        let (id, rest) = sealed.split_at(ID_LEN);
        if id != self.id {
            return Err(KeyError::OtherKey(hex(id)));
        }
        let (nonce, body) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| KeyError::Damaged)?;
        let mut buf = Zeroizing::new(body.to_vec());
        let len = self
            .sealing
            .open_in_place(nonce, Aad::from(aad), &mut buf)
            .map_err(|_| KeyError::Damaged)?
            .len();
        buf.truncate(len);
        Ok(buf)
    }

    /// Whether this key sealed `sealed` (by its id).
    pub fn sealed_by(&self, sealed: &[u8]) -> bool {
        sealed.get(..ID_LEN) == Some(&self.id[..])
    }

    /// A keyed fingerprint of `data` (HMAC-SHA256): equal data give equal fingerprints under
    /// one key, and nothing about the data can be learned from it without the key.
    pub fn fingerprint(&self, data: &[u8]) -> [u8; 32] {
        let tag = hmac::sign(&self.fingerprinting, data);
        let mut out = [0u8; 32];
        out.copy_from_slice(tag.as_ref());
        out
    }
}

/// The `open(2)` flags the key file is opened with, from the `libc` crate.
#[cfg(unix)]
mod nix_flags {
    pub(super) const NOFOLLOW: i32 = libc::O_NOFOLLOW;
    pub(super) const NONBLOCK: i32 = libc::O_NONBLOCK;
}

/// Lower-case hexadecimal.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: &str) -> JournalKey {
        JournalKey::from_hex(&byte.repeat(32)).unwrap()
    }

    #[test]
    fn sealed_values_open_only_in_their_place_and_under_their_key() {
        let (a, b) = (key("01"), key("02"));
        let sealed = a.seal(b"5500000000000004", b"1/2/3").unwrap();
        assert_eq!(sealed.len(), 8 + 12 + 16 + 16);
        assert!(!sealed.windows(16).any(|w| w == b"5500000000000004"));
        assert_eq!(&*a.open(&sealed, b"1/2/3").unwrap(), b"5500000000000004");
        assert_eq!(a.open(&sealed, b"1/2/4").unwrap_err(), KeyError::Damaged);
        assert_eq!(
            b.open(&sealed, b"1/2/3").unwrap_err(),
            KeyError::OtherKey(a.id())
        );
        assert!(a.sealed_by(&sealed) && !b.sealed_by(&sealed));
        let mut flipped = sealed.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert_eq!(a.open(&flipped, b"1/2/3").unwrap_err(), KeyError::Damaged);
        assert_eq!(
            a.open(&sealed[..20], b"1/2/3").unwrap_err(),
            KeyError::Damaged
        );
        // A new nonce each time.
        assert_ne!(a.seal(b"x", b"").unwrap(), a.seal(b"x", b"").unwrap());
    }

    #[test]
    fn fingerprints_are_keyed() {
        let (a, b) = (key("01"), key("02"));
        assert_eq!(a.fingerprint(b"4111"), a.fingerprint(b"4111"));
        assert_ne!(a.fingerprint(b"4111"), a.fingerprint(b"4112"));
        assert_ne!(a.fingerprint(b"4111"), b.fingerprint(b"4111"));
    }

    #[test]
    fn rows_are_authenticated_under_the_key() {
        let (a, b) = (key("01"), key("02"));
        let tag = a.authenticate(&[b"job", b"1", b"planned"]);
        assert!(a.verify(&[b"job", b"1", b"planned"], &tag));
        assert!(!a.verify(&[b"job", b"1", b"sent"], &tag));
        assert!(!b.verify(&[b"job", b"1", b"planned"], &tag));
        // Fields are length-prefixed: moving a byte from one to the next changes the tag.
        assert!(!a.verify(&[b"jo", b"b1", b"planned"], &tag));
    }

    #[cfg(unix)]
    #[test]
    fn key_files_are_read_as_ssh_reads_them() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("cardsync-keyfile-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("key");
        std::fs::write(&path, format!("{}\n", "ab".repeat(32))).unwrap();
        let mode = |m| std::fs::set_permissions(&path, std::fs::Permissions::from_mode(m)).unwrap();
        mode(0o600);
        assert!(JournalKey::from_file(&path).is_ok());
        for open in [0o640, 0o604, 0o644] {
            mode(open);
            let e = JournalKey::from_file(&path).unwrap_err();
            assert!(e.to_string().contains("readable by others"), "{e}");
        }
        mode(0o600);
        let link = dir.join("link");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        assert!(matches!(
            JournalKey::from_file(&link),
            Err(KeyError::File(_))
        ));
        assert!(matches!(
            JournalKey::from_file(&dir),
            Err(KeyError::File(_))
        ));
        let zero = JournalKey::from_file(std::path::Path::new("/dev/zero")).unwrap_err();
        assert!(matches!(zero, KeyError::File(_)), "{zero}");
        let long = dir.join("long");
        std::fs::write(&long, "a".repeat(10_000)).unwrap();
        std::fs::set_permissions(&long, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(
            JournalKey::from_file(&long),
            Err(KeyError::File(_))
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn keys_must_be_64_hex_digits() {
        for bad in ["", "ab", &"zz".repeat(32), &"ab".repeat(33)] {
            assert_eq!(JournalKey::from_hex(bad).unwrap_err(), KeyError::Malformed);
        }
        assert!(JournalKey::from_hex(&format!(" {}\n", "aB".repeat(32))).is_ok());
        assert_eq!(key("01").id().len(), 16);
        assert_ne!(key("01").id(), key("02").id());
    }
}
