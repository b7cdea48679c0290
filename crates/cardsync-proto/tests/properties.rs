//! Property tests: request bodies survive encode → decode, query values survive percent-encoding,
//! and no decoder panics on any input.

use cardsync_core::{Expiry, Pan, SeNumber};
use cardsync_proto::*;
use proptest::prelude::*;

fn config() -> Config {
    Config::new(BaseUrl::sandbox()).with_merchant_key(MerchantKey::new("k").unwrap())
}

fn pan_strategy(prefix: &'static str, len: usize) -> impl Strategy<Value = Pan> {
    proptest::string::string_regex(&format!("[0-9]{{{}}}", len - 1 - prefix.len()))
        .unwrap()
        .prop_map(move |rest| {
            let body = format!("{prefix}{rest}");
            let check = cardsync_core::luhn_check_digit(&body).unwrap();
            Pan::parse(&format!("{body}{}", char::from(check))).unwrap()
        })
}

fn exp_strategy() -> impl Strategy<Value = Expiry> {
    (2000u16..=2099, 1u8..=12).prop_map(|(y, m)| Expiry::new(y, m).unwrap())
}

/// Ids of any text, including quotes, backslashes, control characters and non-ASCII.
fn id_strategy() -> impl Strategy<Value = String> {
    "\\PC{1,12}|[\"\\\\\u{0}-\u{1f}]{1,4}|[a-z0-9-]{1,20}"
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn batch_bodies_round_trip(cards in prop::collection::vec((id_strategy(), pan_strategy("4", 16), exp_strategy()), 1..40)) {
        let batch: Vec<BatchCard> = cards.iter().map(|(id, p, e)| BatchCard::new(id.clone(), p.clone(), *e)).collect();
        let request = CreateBatch::new(batch).unwrap().encode(&config()).unwrap();
        let decoded = decode_cards_body(request.body()).unwrap();
        prop_assert_eq!(decoded.len(), cards.len());
        for (d, (id, p, e)) in decoded.iter().zip(&cards) {
            prop_assert_eq!(d.id.as_deref(), Some(id.as_str()));
            let (digits, wire_exp) = (p.expose(), e.to_string());
            prop_assert_eq!(d.card.as_ref().map(|c| c.expose()), Some(digits.as_str()));
            prop_assert_eq!(d.exp.as_deref(), Some(wire_exp.as_str()));
            prop_assert_eq!(d.se_number.as_deref(), None);
        }
        // The body is valid JSON that serde_json agrees with.
        let v: serde_json::Value = serde_json::from_slice(request.body()).unwrap();
        prop_assert_eq!(v["cards"].as_array().unwrap().len(), cards.len());
    }

    #[test]
    fn subscription_bodies_round_trip(
        se in "[0-9]{10}",
        cards in prop::collection::vec((id_strategy(), pan_strategy("37", 15), exp_strategy()), 1..20),
    ) {
        let se = SeNumber::parse(&se).unwrap();
        let subs: Vec<SubscriptionCard> = cards.iter().map(|(id, p, e)| SubscriptionCard::new(se.clone(), id.clone(), p.clone(), *e)).collect();
        for request in [
            Subscribe::new(subs.clone()).unwrap().encode(&config()).unwrap(),
            Unsubscribe::new(subs.clone()).unwrap().encode(&config()).unwrap(),
        ] {
            let decoded = decode_cards_body(request.body()).unwrap();
            for (d, (id, p, _)) in decoded.iter().zip(&cards) {
                prop_assert_eq!(d.se_number.as_deref(), Some(se.as_str()));
                prop_assert_eq!(d.id.as_deref(), Some(id.as_str()));
                let digits = p.expose();
                prop_assert_eq!(d.card.as_ref().map(|c| c.expose()), Some(digits.as_str()));
            }
        }
    }

    #[test]
    fn webhook_urls_round_trip(urls in prop::collection::vec("\\PC{1,40}", 1..4)) {
        let mut set = SetWebhooks::new();
        for (t, url) in Trigger::ALL.iter().zip(&urls) {
            set = set.with(*t, url.clone());
        }
        let request = set.encode(&config()).unwrap();
        let v: serde_json::Value = serde_json::from_slice(request.body()).unwrap();
        for ((t, url), got) in Trigger::ALL.iter().zip(&urls).zip(v["webhooks"].as_array().unwrap()) {
            prop_assert_eq!(got["trigger_id"].as_u64(), Some(u64::from(t.id())));
            prop_assert_eq!(got["url"].as_str(), Some(url.as_str()));
        }
    }

    #[test]
    fn query_values_round_trip(id in "\\PC{1,30}") {
        let request = GetBatch::new(id.clone()).encode(&config()).unwrap();
        let query = request.uri().query().unwrap();
        let value = query.strip_prefix("batch_id=").unwrap();
        prop_assert!(value.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~%".contains(&b)));
        // Percent-decode and compare.
        let mut bytes = Vec::new();
        let raw = value.as_bytes();
        let mut i = 0;
        while i < raw.len() {
            if raw[i] == b'%' {
                bytes.push(u8::from_str_radix(std::str::from_utf8(&raw[i + 1..i + 3]).unwrap(), 16).unwrap());
                i += 3;
            } else {
                bytes.push(raw[i]);
                i += 1;
            }
        }
        prop_assert_eq!(String::from_utf8(bytes).unwrap(), id);
    }

    #[test]
    fn decoders_never_panic(status in prop::sample::select(vec![200u16, 400, 401, 404, 500, 503]), body in prop::collection::vec(any::<u8>(), 0..300)) {
        let r = http::Response::builder().status(status).body(body.clone()).unwrap();
        let _ = CreateBatch::decode(&r);
        let _ = GetBatch::decode(&r);
        let _ = GetBatchResults::decode(&r);
        let _ = GetSubscriptionResults::decode(&r);
        let _ = Subscribe::decode(&r);
        let _ = EnrollMerchant::decode(&r);
        let _ = GetMerchant::decode(&r);
        let _ = decode_webhook(&body);
        let _ = decode_cards_body(&body);
    }

    #[test]
    fn json_shaped_inputs_never_panic(body in r#"\{("(status|msg|message|data|cards|stats|id|card|exp|trigger_id|closed|se)":(null|1|-1|1.5|"x"|\[\]|\{\}|\[\{"card":"4"\}\]|\{"cards":\[\{\}\]\}),?){0,6}\}?"#) {
        let r = http::Response::new(body.as_bytes().to_vec());
        let _ = GetBatchResults::decode(&r);
        let _ = CreateBatch::decode(&r);
        let _ = decode_webhook(body.as_bytes());
        let _ = decode_cards_body(body.as_bytes());
    }
}
