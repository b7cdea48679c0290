//! Checks run by the fuzz targets in `fuzz/`, kept here so each target stays three lines long.
//! Compiled only under `cfg(fuzzing)`, which cargo-fuzz sets.

use crate::{Endpoint, decode_cards_body, decode_webhook};

const STATUSES: [u16; 10] = [200, 201, 204, 400, 401, 404, 429, 500, 502, 503];

/// Fails if `text` holds a run of twelve or more digits: errors must never quote a card number.
fn assert_no_digit_runs(text: &str) {
    let mut run = 0;
    for c in text.chars() {
        run = if c.is_ascii_digit() { run + 1 } else { 0 };
        assert!(run < 12, "an error quotes a digit run: {text}");
    }
}

/// Decodes arbitrary bytes as a response of endpoint `E`. The first byte picks the status.
/// Decoding never panics, and errors never quote the body. (Successful output may hold long
/// digit runs legitimately, in ids; card numbers in it are [`crate::ReturnedCard`]s, whose
/// masking `results` checks.)
pub fn response<E: Endpoint>(data: &[u8])
where
    E::Output: std::fmt::Debug,
{
    let Some((&first, body)) = data.split_first() else {
        return;
    };
    let status = STATUSES[usize::from(first) % STATUSES.len()];
    let response = http::Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(body.to_vec())
        .expect("a valid response");
    match E::decode(&response) {
        Ok(output) => drop(format!("{output:?}")),
        Err(e) => assert_no_digit_runs(&format!("{e} {e:?}")),
    }
}

/// Decodes arbitrary bytes as a results response: as [`response`], and no returned card number
/// of twelve or more digits shows in `Debug` (unless the id repeats it).
pub fn results(data: &[u8]) {
    response::<crate::GetBatchResults>(data);
    let Some((_, body)) = data.split_first() else {
        return;
    };
    let response = http::Response::new(body.to_vec());
    if let Ok(results) = crate::GetBatchResults::decode(&response) {
        for card in &results.cards {
            let digits: String = card
                .card
                .expose()
                .chars()
                .filter(char::is_ascii_digit)
                .collect();
            if digits.len() >= 12
                && !card.id.contains(&digits)
                && !format!("{:?}", card.se_number).contains(&digits)
            {
                assert!(!format!("{card:?}").contains(&digits));
            }
        }
    }
}

/// Decodes arbitrary bytes as a webhook: never panics, never quotes the body in an error or
/// shows a card number in `Debug`.
pub fn webhook(data: &[u8]) {
    match decode_webhook(data) {
        Ok(event) => drop((event.dedup_key(), format!("{event:?}"))),
        Err(e) => assert_no_digit_runs(&format!("{e} {e:?}")),
    }
}

/// Decodes arbitrary bytes as a request body of cards, server side: never panics, never shows
/// a card number in `Debug` or in an error.
pub fn cards_body(data: &[u8]) {
    match decode_cards_body(data) {
        Ok(cards) => {
            for card in &cards {
                if let Some(c) = &card.card {
                    let digits: String = c.expose().chars().filter(char::is_ascii_digit).collect();
                    let others = format!("{:?} {:?} {:?}", card.id, card.exp, card.se_number);
                    if digits.len() >= 12 && !others.contains(&digits) {
                        assert!(!format!("{card:?}").contains(&digits));
                    }
                }
            }
        }
        Err(e) => assert_no_digit_runs(&format!("{e} {e:?}")),
    }
}

/// Decodes arbitrary bytes as one of the answers or a webhook (picked by the first byte, with
/// the spelling), and when that succeeds, encodes the value with [`crate::server`] and decodes
/// it again: the second decode must give the same value (`decode(encode(x)) == x` for every
/// `x` the client side can produce).
pub fn roundtrip(data: &[u8]) {
    use crate::server::{self, Spelling};
    let Some((&first, body)) = data.split_first() else {
        return;
    };
    let spelling = if first & 0x80 == 0 {
        Spelling::Universal
    } else {
        Spelling::Amex
    };
    let answer = |bytes: &[u8]| server::respond(http::StatusCode::OK, bytes.to_vec());
    macro_rules! check {
        ($endpoint:ty, $encode:path) => {
            if let Ok(value) = <$endpoint>::decode(&answer(body)) {
                let again = <$endpoint>::decode(&answer(&$encode(&value, spelling)));
                assert_eq!(again.as_ref(), Ok(&value));
            }
        };
    }
    match first & 0x7F {
        0 => check!(crate::CreateBatch, server::batch_created),
        1 => check!(crate::GetBatch, server::batch_info),
        2 => check!(crate::GetBatchResults, server::results),
        3 => check!(crate::GetSubscriptionResults, server::results),
        4 => check!(crate::EnrollMerchant, server::merchant_enrolled),
        5 => check!(crate::GetMerchant, server::merchant_status),
        6 => check!(crate::Subscribe, server::ack),
        _ => {
            if let Ok(event) = decode_webhook(body) {
                assert_eq!(
                    decode_webhook(&server::webhook(&event, spelling)),
                    Ok(event)
                );
            }
        }
    }
}

/// The hand-written reader of results bodies against the serde path, on any input: whenever
/// the fast path answers, serde reads the same value (and when it declines, serde decides,
/// errors included).
pub fn results_fast(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(fast) = crate::scan::results(text) {
        let slow = serde_json::from_str::<crate::model::Envelope<crate::model::BatchData>>(text);
        assert_eq!(slow.ok(), Some(fast));
    }
}

/// Reads arbitrary bytes as the issuer-side request bodies, server side (the first byte picks
/// the feed or the PATCH): never panics, and an error never quotes a digit run. What is read
/// is encoded again by the client side and read back the same.
pub fn issuer_requests(data: &[u8]) {
    use crate::issuer::feed::{UpdateCards, decode_update_cards_body};
    use crate::issuer::platform::{IdempotencyKey, UpdateCard, decode_card_edits};
    use crate::issuer::{IssuerConfig, IssuerEndpoint};
    let Some((&first, body)) = data.split_first() else {
        return;
    };
    let config = IssuerConfig::new(crate::BaseUrl::parse("http://127.0.0.1:1").expect("a URL"));
    if first % 2 == 0 {
        match decode_update_cards_body(body) {
            Ok(cards) => {
                let first = &cards[0];
                let same: Vec<_> = cards
                    .iter()
                    .filter(|c| {
                        c.account_id == first.account_id && c.customer_id == first.customer_id
                    })
                    .map(|c| c.card.clone())
                    .collect();
                if let Ok(update) =
                    UpdateCards::new(&first.customer_id, &first.account_id, same.clone())
                    && let Ok(request) = update.encode(&config)
                {
                    let again = decode_update_cards_body(request.body()).expect("reads back");
                    let again: Vec<_> = again.into_iter().map(|c| c.card).collect();
                    assert_eq!(again, same);
                }
            }
            Err(e) => assert_no_digit_runs(&format!("{e} {e:?}")),
        }
    } else {
        match decode_card_edits(body) {
            Ok(edits) => {
                let key = IdempotencyKey::new("k").expect("a key");
                let request = UpdateCard::new("c", edits.clone(), key)
                    .expect("valid edits")
                    .encode(&config)
                    .expect("encodes");
                assert_eq!(
                    decode_card_edits(request.body()).expect("reads back"),
                    edits
                );
            }
            Err(e) => assert_no_digit_runs(&format!("{e} {e:?}")),
        }
    }
}

/// Reads arbitrary bytes as the issuer-side answers (the first byte picks the status): never
/// panics; an answer that reads is written by the server side and reads back the same.
pub fn issuer_answers(data: &[u8]) {
    use crate::issuer::IssuerEndpoint;
    use crate::issuer::feed::UpdateCards;
    use crate::issuer::platform::{UpdateCard, card_body};
    let Some((&first, body)) = data.split_first() else {
        return;
    };
    let status = STATUSES[usize::from(first) % STATUSES.len()];
    let response = http::Response::builder()
        .status(status)
        .body(body.to_vec())
        .expect("a valid response");
    match UpdateCard::decode(&response) {
        Ok(card) => {
            let again = http::Response::new(card_body(&card));
            assert_eq!(UpdateCard::decode(&again).expect("reads back"), card);
        }
        Err(e) => assert_no_digit_runs(&format!("{e} {e:?}")),
    }
    if let Err(e) = UpdateCards::decode(&response) {
        assert_no_digit_runs(&format!("{e} {e:?}"));
    }
}
