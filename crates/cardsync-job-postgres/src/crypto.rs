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
    /// The key file could not be read.
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
                "a card in the journal was sealed under another key (id {id}): give that key, \
                 or rotate the journal to this one"
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
    /// `CARDSYNC_JOURNAL_KEY_FILE`.
    ///
    /// # Errors
    ///
    /// [`KeyError::Missing`], [`KeyError::Malformed`], [`KeyError::File`].
    pub fn from_env() -> Result<JournalKey, KeyError> {
        if let Ok(hex) = std::env::var(KEY_ENV) {
            let hex = Zeroizing::new(hex);
            return JournalKey::from_hex(&hex);
        }
        if let Some(path) = std::env::var_os(KEY_FILE_ENV) {
            let text = std::fs::read_to_string(&path)
                .map(Zeroizing::new)
                .map_err(|e| KeyError::File(format!("{}: {e}", path.to_string_lossy())))?;
            return JournalKey::from_hex(&text);
        }
        Err(KeyError::Missing)
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
        let mut mac = [0u8; 32];
        derive(b"fingerprint v1", &mut mac);
        let mut id = [0u8; ID_LEN];
        derive(b"key id v1", &mut id);
        let key = JournalKey {
            sealing: LessSafeKey::new(
                UnboundKey::new(&AES_256_GCM, &seal).expect("a 32-byte AES key"),
            ),
            fingerprinting: hmac::Key::new(hmac::HMAC_SHA256, &mac),
            id,
            random: SystemRandom::new(),
        };
        seal.zeroize();
        mac.zeroize();
        key
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
    fn keys_must_be_64_hex_digits() {
        for bad in ["", "ab", &"zz".repeat(32), &"ab".repeat(33)] {
            assert_eq!(JournalKey::from_hex(bad).unwrap_err(), KeyError::Malformed);
        }
        assert!(JournalKey::from_hex(&format!(" {}\n", "aB".repeat(32))).is_ok());
        assert_eq!(key("01").id().len(), 16);
        assert_ne!(key("01").id(), key("02").id());
    }
}
